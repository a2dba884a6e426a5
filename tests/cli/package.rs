//! The pip wheel and the tarball (scripts/package.sh) as a new user gets them: the wheel
//! installed into a fresh venv that has torch, and `fidshard run` of the digits demo from a
//! folder outside the checkout, without LD_LIBRARY_PATH, the worker finding that venv's torch
//! through its RUNPATH. Skipped, with a message, when the packaging tools cannot come from PyPI.
use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The torch venv the build used (`.venv`, a link into the per-user cache).
fn torch_site_packages() -> PathBuf {
    let venv = std::fs::canonicalize(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv"))
        .expect("the torch venv (.venv) exists");
    let out = Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import torch, os; print(os.path.dirname(os.path.dirname(torch.__file__)))",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn run(cmd: &mut Command) -> std::process::Output {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

#[test]
fn the_wheel_installs_into_a_torch_venv_and_runs_the_demo_from_anywhere() {
    let bins = Path::new(env!("CARGO_BIN_EXE_fidshard")).parent().unwrap();
    let site = torch_site_packages();
    // Beside the torch venv, so that its files can be hard-linked into the new one (the paths
    // the worker then maps are the new venv's).
    let tmp = tempfile::tempdir_in(site.ancestors().nth(4).unwrap()).unwrap();
    let pkg = tmp.path().join("pkg");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/package.sh");
    let o = Command::new(&script).arg(bins).arg(&pkg).output().unwrap();
    if o.status.code() == Some(3) {
        eprintln!(
            "SKIPPED: the packaging tools could not be installed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        return;
    }
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let made: Vec<PathBuf> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(PathBuf::from)
        .collect();
    let wheel = made
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "whl"));
    let wheel = wheel.expect("a wheel");
    let name = wheel.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("fidshard-") && name.contains("-py3-none-manylinux_2_"),
        "{name}"
    );
    let tarball = made
        .iter()
        .find(|p| p.to_string_lossy().ends_with(".tar.gz"));
    let listing = run(Command::new("tar")
        .arg("-tzf")
        .arg(tarball.expect("a tarball")));
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.contains("./bin/fidshard-worker"), "{listing}");

    // A fresh venv with the cached torch (and its CUDA libraries) hard-linked in.
    let venv = tmp.path().join("venv");
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv));
    let purelib = run(Command::new(venv.join("bin/python")).args([
        "-c",
        "import sysconfig; print(sysconfig.get_paths()['purelib'])",
    ]));
    let purelib = PathBuf::from(String::from_utf8_lossy(&purelib.stdout).trim());
    for dir in ["torch", "nvidia"] {
        if site.join(dir).is_dir() {
            run(Command::new("cp")
                .arg("-al")
                .arg(site.join(dir))
                .arg(&purelib));
        }
    }
    run(Command::new(venv.join("bin/python"))
        .args(["-m", "pip", "install", "-q", "--no-deps", "--no-index"])
        .arg(wheel));

    // Outside the checkout, no LD_LIBRARY_PATH, no FIDSHARD_WORKER: the installed pair alone.
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(
        work.join("demo.yaml"),
        format!(
            "model:\n  config: {}\n  checkpoint: {}\nvae: {}\nnum_classes: 10\nnum_samples: 20\n\
             labels: balanced\ncfg_scale: 4.0\nsampler: ddpm\nsteps: \"10\"\nbatch_size: 10\n\
             shard_size: 10\ndevices: {{cpu: 1}}\nout_dir: out\n",
            fixture("demo-digits/dit/config.json").display(),
            fixture("demo-digits/dit/model.pt").display(),
            fixture("demo-digits/vae").display(),
        ),
    )
    .unwrap();
    let fidshard = venv.join("bin/fidshard");
    let clean = |cmd: &mut Command| {
        cmd.current_dir(&work)
            .env_remove("LD_LIBRARY_PATH")
            .env_remove("FIDSHARD_WORKER")
            .env("FIDSHARD_LOG", "warn");
    };
    let mut doctor = Command::new(&fidshard);
    doctor.args(["doctor", "--json"]);
    clean(&mut doctor);
    let probe: serde_json::Value =
        serde_json::from_slice(&doctor.output().unwrap().stdout).unwrap();
    let libs = probe["worker_probe"]["torch_libraries"].to_string();
    assert!(
        libs.contains(
            &purelib
                .join("torch/lib/libtorch_cpu.so")
                .display()
                .to_string()
        ),
        "the worker did not load the venv's torch: {probe}"
    );
    let mut cmd = Command::new(&fidshard);
    cmd.args(["run", "demo.yaml"]);
    clean(&mut cmd);
    let o = cmd.output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(work.join("out/samples.npz").is_file());
}
