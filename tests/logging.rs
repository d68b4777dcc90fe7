//! The real binary's logs: without a terminal on stderr (a pipe, a file, a
//! log collector) they carry no ANSI colour codes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A routes.toml for the Everything service on an upstream nobody serves.
fn routes(dir: &Path) -> std::path::PathBuf {
    let proto = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto");
    let path = dir.join("routes.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[proto]
files = ["testing/v1/everything.proto"]
include = ['{}']

[upstreams.everything]
endpoints = ["http://127.0.0.1:9"]

[[routes]]
service = "testing.v1.EverythingService"
upstream = "everything"
auth = "none"
"#,
            proto.display()
        ),
    )
    .expect("write routes.toml");
    path
}

#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = routes(dir.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_protogate"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start protogate");
    let stderr = child.stderr.take().expect("stderr");
    // Lines arrive on a thread, so the wait for the start-up line is bounded.
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    while let Ok(line) = received.recv_timeout(Duration::from_secs(30)) {
        let listening = line.contains("protogate listening");
        seen.push(line);
        if listening {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen.iter().any(|l| l.contains("protogate listening")),
        "no start-up line: {seen:?}"
    );
    assert!(
        seen.iter().any(|l| l.contains("INFO")),
        "the level is still written: {seen:?}"
    );
    assert!(
        seen.iter().all(|l| !l.contains('\u{1b}')),
        "ANSI escape codes in a piped log: {seen:?}"
    );
}
