//! `notify:` through the real binary: a complete run POSTs its status JSON to a local HTTP
//! server and runs its command with the `FIDSHARD_*` variables; a command that exits 3 and a
//! webhook nobody answers are warnings that leave the exit code 0; an interrupted run (SIGINT)
//! fires `interrupted`, and `on:` filters the ends.
use crate::support::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// 8 samples in 2 shards, 2 steps: a run of a few seconds.
const JOB: &str = "num_samples: 8\nsteps: 2\nshard_size: 4\nbatch_size: 2\ndevices: {cpu: 1}\n";

/// One POST received: its headers (names lower-case) and body.
struct Request {
    line: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// An HTTP server on 127.0.0.1 that answers every request `200 OK` and sends it down the
/// channel; its URL.
fn server() -> (String, mpsc::Receiver<Request>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let mut headers = BTreeMap::new();
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                let (k, v) = h.split_once(':').unwrap();
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
            let len: usize = headers
                .get("content-length")
                .map_or(0, |v| v.parse().unwrap());
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                .unwrap();
            let _ = tx.send(Request {
                line: line.trim_end().to_string(),
                headers,
                body,
            });
        }
    });
    (url, rx)
}

/// The `FIDSHARD_*` variables a command hook wrote with `env`.
fn env_file(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| l.starts_with("FIDSHARD_"))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn hook(dir: &Path, file: &str) -> String {
    format!("env > '{}'", dir.join(file).display())
}

#[test]
fn a_complete_run_posts_its_status_and_runs_its_command() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, requests) = server();
    let notify = format!(
        "notify:\n  command: \"{}\"\n  webhook: {url}\n",
        hook(tmp.path(), "env.txt")
    );
    let cfg = job_with(tmp.path(), JOBS[0], &format!("{JOB}{notify}"));
    let o = fidshard(&["run", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stderr(&o).contains("notify"), "{}", stderr(&o));

    let out = tmp.path().join("out").canonicalize().unwrap();
    let env = env_file(&tmp.path().join("env.txt"));
    assert_eq!(env["FIDSHARD_STATE"], "complete", "{env:?}");
    assert_eq!(Path::new(&env["FIDSHARD_OUT"]).canonicalize().unwrap(), out);
    assert_eq!(
        Path::new(&env["FIDSHARD_NPZ"]).canonicalize().unwrap(),
        out.join("samples.npz")
    );
    let summary = &env["FIDSHARD_SUMMARY"];
    assert!(summary.contains("complete, 8 of 8 samples"), "{summary}");
    assert!(
        !env.contains_key("FIDSHARD_FID"),
        "no evaluate:, no metrics: {env:?}"
    );

    let r = requests
        .recv_timeout(Duration::from_secs(30))
        .expect("the webhook got no POST");
    assert_eq!(r.line, "POST /hook HTTP/1.1");
    assert_eq!(r.headers["content-type"], "application/json");
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["state"], "complete", "{v}");
    assert_eq!(v["samples_done"], 8, "{v}");
    assert_eq!(v["note"].as_str(), Some(summary.as_str()), "{v}");
    assert!(
        v["npz"]["path"].as_str().unwrap().ends_with("samples.npz"),
        "{v}"
    );
    assert!(requests.try_recv().is_err(), "fired more than once");
}

#[test]
fn failing_hooks_are_warnings_and_leave_the_exit_code() {
    let tmp = tempfile::tempdir().unwrap();
    // A port with nobody listening.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let notify = format!(
        "notify:\n  command: \"echo to-the-log; exit 3\"\n  webhook: http://127.0.0.1:{port}/x\n"
    );
    let cfg = job_with(tmp.path(), JOBS[0], &format!("{JOB}{notify}"));
    let o = fidshard(&["run", cfg.to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains("notify.command: exited with status 3; the run's exit code is unchanged"),
        "{err}"
    );
    assert!(
        err.contains(&format!("notify.webhook: http://127.0.0.1:{port}/x")),
        "{err}"
    );
    let log = std::fs::read_to_string(tmp.path().join("out/logs/notify.log")).unwrap();
    assert!(log.contains("to-the-log"), "{log}");
}

#[test]
fn an_interrupted_run_fires_interrupted_and_on_filters_the_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let notify = format!(
        "notify:\n  command: \"{}\"\n  on: [interrupted]\n",
        hook(tmp.path(), "env.txt")
    );
    let cfg = job_with(tmp.path(), JOBS[0], &format!("{JOB}{notify}"));
    let out = tmp.path().join("out");
    let child = fidshard_cmd(&["run", cfg.to_str().unwrap()])
        .env("FAILPOINTS", "worker-slow=return(400)")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Stop it once a worker samples.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !read_json(&out.join("status.json")).is_some_and(|s| {
        s["workers"]
            .as_array()
            .is_some_and(|w| w.iter().any(|w| w["state"] == "busy"))
    }) {
        assert!(Instant::now() < deadline, "no worker started sampling");
        std::thread::sleep(Duration::from_millis(20));
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(75), "{}", stderr(&o));
    let env = env_file(&tmp.path().join("env.txt"));
    assert_eq!(env["FIDSHARD_STATE"], "interrupted", "{env:?}");
    assert!(!env.contains_key("FIDSHARD_NPZ"), "{env:?}");
    assert!(
        env["FIDSHARD_SUMMARY"].contains(": interrupted, "),
        "{env:?}"
    );

    // The resumed run completes, which `on: [interrupted]` does not fire.
    std::fs::remove_file(tmp.path().join("env.txt")).unwrap();
    let o = fidshard(&["run", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!tmp.path().join("env.txt").exists());
}
