//! The two binaries: `fidshard` (coordinator, CLI) never links libtorch; `fidshard-worker` does,
//! and the coordinator finds it next to itself or at $FIDSHARD_WORKER. Commands that need no
//! tensors (plan, status) work without the worker binary at all.
use crate::support::*;
use std::path::Path;
use std::process::Command;

fn needed_libraries(bin: &Path) -> Vec<String> {
    let out = Command::new("readelf")
        .arg("-d")
        .arg(bin)
        .output()
        .expect("readelf (binutils) must be installed to inspect the binaries");
    assert!(out.status.success(), "readelf -d {}", bin.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next().map(str::to_string))
        .collect()
}

#[test]
fn coordinator_links_no_libtorch() {
    let libs = needed_libraries(Path::new(env!("CARGO_BIN_EXE_fidshard")));
    assert!(!libs.is_empty(), "readelf found no NEEDED entries");
    let torch: Vec<_> = libs
        .iter()
        .filter(|l| l.starts_with("libtorch") || l.starts_with("libc10"))
        .collect();
    assert!(torch.is_empty(), "fidshard links {torch:?}");
}

#[test]
fn worker_links_libtorch() {
    let libs = needed_libraries(&worker_bin());
    assert!(
        libs.iter().any(|l| l == "libtorch_cpu.so"),
        "fidshard-worker should link libtorch_cpu.so: {libs:?}"
    );
}

fn with_worker(args: &[&str], worker: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fidshard"))
        .args(args)
        .env("FIDSHARD_LOG", "warn")
        .env("FIDSHARD_WORKER", worker)
        .output()
        .unwrap()
}

fn assert_one_line_error(o: &std::process::Output, code: i32, needles: &[&str]) {
    assert_eq!(o.status.code(), Some(code), "{}", stderr(o));
    let line = one_error_line(o);
    for n in needles {
        assert!(line.contains(n), "`{n}` not in: {line}");
    }
}

#[test]
fn missing_worker_binary_is_an_input_error() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = job_yaml(tmp.path(), JOBS[0], "golden/dit/model.pt", "");
    let missing = tmp.path().join("no-such-worker");
    let o = with_worker(
        &["validate", cfg.to_str().unwrap()],
        missing.to_str().unwrap(),
    );
    assert_one_line_error(&o, 2, &["FIDSHARD_WORKER", "no-such-worker"]);
    // `sample` and `run` go through the worker as well and fail the same way, before writing.
    let out = tmp.path().join("png");
    let o = with_worker(
        &[
            "sample",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        missing.to_str().unwrap(),
    );
    assert_one_line_error(&o, 2, &["FIDSHARD_WORKER"]);
    assert!(!out.exists());
}

#[test]
fn broken_worker_binary_is_an_input_error() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = job_yaml(tmp.path(), JOBS[0], "golden/dit/model.pt", "");
    // Not executable at all.
    let junk = tmp.path().join("junk-worker");
    std::fs::write(&junk, b"not a program").unwrap();
    let o = with_worker(&["validate", cfg.to_str().unwrap()], junk.to_str().unwrap());
    assert_one_line_error(&o, 2, &["junk-worker", "cannot start the worker binary"]);
    // Starts, then dies of a signal (like a missing libtorch symbol or a crash at load).
    let crash = tmp.path().join("crash-worker");
    std::fs::write(&crash, b"#!/bin/sh\nkill -SEGV $$\n").unwrap();
    std::fs::set_permissions(&crash, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let o = with_worker(
        &["validate", cfg.to_str().unwrap()],
        crash.to_str().unwrap(),
    );
    assert_one_line_error(&o, 2, &["crash-worker", "failed"]);
}

#[test]
fn plan_and_status_need_no_worker() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = job_yaml(
        tmp.path(),
        JOBS[0],
        "golden/dit/model.pt",
        "devices: {cpu: 1}\n",
    );
    let nowhere = tmp.path().join("no-worker");
    let o = with_worker(&["plan", cfg.to_str().unwrap()], nowhere.to_str().unwrap());
    assert!(o.status.success(), "{}", stderr(&o));
    let o = with_worker(
        &["status", cfg.to_str().unwrap()],
        nowhere.to_str().unwrap(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn worker_found_next_to_fidshard_by_default() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = job_yaml(tmp.path(), JOBS[0], "golden/dit/model.pt", "");
    let o = Command::new(env!("CARGO_BIN_EXE_fidshard"))
        .args(["validate", cfg.to_str().unwrap()])
        .env_remove("FIDSHARD_WORKER")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

fn runpath(bin: &Path) -> String {
    let out = Command::new("readelf").arg("-d").arg(bin).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains("(RUNPATH)") || l.contains("(RPATH)"))
        .and_then(|l| l.split('[').nth(1)?.split(']').next().map(str::to_string))
        .unwrap_or_default()
}

/// The CUDA build of torch (the pip wheel): `libtorch_cuda.so` must be a needed library of the
/// worker, or libtorch never registers CUDA and a GPU node samples on the CPU. The library
/// loads without a driver, so this is checked here, without a GPU.
#[test]
fn worker_links_the_cuda_library_when_torch_has_it() {
    let rp = runpath(&worker_bin());
    assert!(!rp.is_empty(), "fidshard-worker has no RUNPATH");
    let has_cuda = rp
        .split(':')
        .any(|d| Path::new(d).join("libtorch_cuda.so").is_file());
    let libs = needed_libraries(&worker_bin());
    if has_cuda {
        assert!(
            libs.iter().any(|l| l == "libtorch_cuda.so"),
            "torch at {rp} has libtorch_cuda.so but fidshard-worker does not link it: {libs:?}"
        );
        // And it loads: the probe reports it mapped.
        let out = Command::new(worker_bin())
            .arg("task")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(br#"{"task":"probe"}"#)?;
                c.wait_with_output()
            })
            .unwrap();
        assert!(out.status.success());
        let probe: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(probe["cuda_library_loaded"], true, "{probe}");
    } else {
        eprintln!("torch at {rp} is a CPU build: no libtorch_cuda.so to link");
    }
}

/// `make install` copies both binaries; they must not depend on the checkout (the RUNPATH is
/// the real torch folder, not `.venv` inside the checkout), so an installed copy runs after the
/// checkout is moved or deleted.
#[test]
fn installed_binaries_run_without_the_checkout() {
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let rp = runpath(&worker_bin());
    assert!(
        !rp.contains(&checkout.display().to_string()),
        "RUNPATH {rp} points into the checkout {}",
        checkout.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("prefix/bin");
    std::fs::create_dir_all(&bin).unwrap();
    for name in ["fidshard", "fidshard-worker"] {
        std::fs::copy(worker_bin().with_file_name(name), bin.join(name)).unwrap();
    }
    let cfg = job_yaml(tmp.path(), JOBS[0], "golden/dit/model.pt", "");
    let o = Command::new(bin.join("fidshard"))
        .args(["validate", cfg.to_str().unwrap()])
        .env_remove("FIDSHARD_WORKER")
        .env_remove("LD_LIBRARY_PATH")
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn doctor_json_reports_torch_2_11_and_no_gpu_here() {
    let o = fidshard(&["doctor", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let probe = &v["worker_probe"];
    assert!(
        probe["torch_version"]
            .as_str()
            .unwrap()
            .starts_with("2.11.0"),
        "{v}"
    );
    assert_eq!(v["gpus"].as_array().unwrap().len(), 0, "{v}");
    assert!(v["disk_free_bytes"].as_u64().unwrap() > 0);
    let problems = v["problems"].to_string();
    assert!(problems.contains("devices: {cpu: N}"), "{problems}");
    // Text form, and exit 2 when the worker cannot start.
    let o = with_worker(&["doctor"], "/nonexistent/fidshard-worker");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("problem: the worker binary cannot start"));
}

#[test]
fn devices_auto_without_a_gpu_refuses_instead_of_falling_back_to_the_cpu() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = job_yaml(
        tmp.path(),
        JOBS[0],
        "golden/dit/model.pt",
        "devices: auto\nout_dir: out\n",
    );
    for cmd in ["run", "validate"] {
        let o = fidshard(&[cmd, cfg.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains("no usable GPU") && err.contains("{cpu: N}"),
            "{err}"
        );
    }
    assert!(!tmp.path().join("out").exists(), "nothing written");
    // An empty CUDA_VISIBLE_DEVICES is named as the cause when there is a driver; here the
    // driver is missing, which the message says.
    let o = Command::new(env!("CARGO_BIN_EXE_fidshard"))
        .args(["run", cfg.to_str().unwrap()])
        .env("CUDA_VISIBLE_DEVICES", "")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    // `plan` still shows the shards on a machine without GPUs (a login node).
    let o = fidshard(&["plan", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("shard"));
}
