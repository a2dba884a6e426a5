//! `fidshard-worker serve` before any model is loaded: how the end of its input, a line that
//! does not parse and a first message other than `init` end the process, each with its exit code
//! every time.
use std::io::Write;
use std::process::{Command, Stdio};

/// Runs `fidshard-worker serve` on `stdin` (then end of input): exit code, stdout, stderr.
fn serve(stdin: &[u8]) -> (Option<i32>, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fidshard-worker"))
        .args(["serve", "--id", "0", "--device", "cpu"])
        .env_remove("FIDSHARD_PARENT_PID")
        .env_remove("FIDSHARD_LOG_FORMAT")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("fidshard-worker starts");
    let mut input = child.stdin.take().expect("stdin is piped");
    input.write_all(stdin).expect("stdin takes the lines");
    drop(input);
    let out = child.wait_with_output().expect("fidshard-worker ends");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn end_of_input_before_init_exits_0_and_says_nothing_on_stdout() {
    let (code, out, err) = serve(b"");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "");
    assert!(!err.contains("error"), "{err}");
}

#[test]
fn a_line_that_does_not_parse_is_a_fatal_protocol_message_and_exit_2() {
    let (code, out, err) = serve(b"{\"type\": \"no_such_message\"}\n");
    assert_eq!(code, Some(2), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    let msg: serde_json::Value = serde_json::from_str(lines[0]).expect("stdout is JSON lines");
    assert_eq!(msg["type"], "fatal", "{out}");
    assert_eq!(msg["kind"], "protocol", "{out}");
    let text = msg["message"].as_str().unwrap_or_default();
    assert!(text.contains("same version"), "{text}");
    // Said once, on the protocol: no `fidshard: error:` line on top.
    assert!(!err.contains("fidshard: error"), "{err}");
}

#[test]
fn a_first_message_other_than_init_is_an_error_exit_1() {
    let (code, out, err) = serve(b"{\"type\": \"shutdown\"}\n");
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(out, "");
    assert!(
        err.contains("worker 0: the first message was not `init`"),
        "{err}"
    );
}
