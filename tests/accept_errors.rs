//! The real binary under a low file-descriptor limit: when `accept` fails
//! with EMFILE the listener backs off briefly and warns at most once per
//! interval (not once per retry), and it serves again as soon as
//! descriptors are free.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The open-file limit the gateway runs under: a few dozen connections.
const FD_LIMIT: u32 = 64;

fn routes(dir: &Path) -> std::path::PathBuf {
    let proto = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto");
    let path = dir.join("routes.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[server]
access_log = false
first_request_timeout = "600s"

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

/// The gateway, stopped by PID when dropped.
struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (30 s at most) for a stderr line containing `text`.
fn line_with(lines: &mpsc::Receiver<String>, text: &str, seen: &mut Vec<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Ok(line) = lines.recv_timeout(left) else {
            break;
        };
        seen.push(line.clone());
        if line.contains(text) {
            return line;
        }
    }
    panic!("no log line with {text:?}: {seen:#?}");
}

/// One HTTP/1 request; the status line.
fn status_line(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
        .write_all(b"GET /unrouted HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.lines().next().unwrap_or_default().to_owned()
}

#[test]
fn accepting_goes_on_after_emfile_with_one_warning_per_interval() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = routes(dir.path());
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n {FD_LIMIT} && exec \"$0\" serve --listen 127.0.0.1:0 --config \"$1\""
        ))
        .arg(env!("CARGO_BIN_EXE_protogate"))
        .arg(&config)
        .env("RUST_LOG", "warn,protogate::cli=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start protogate");
    let stderr = child.stderr.take().expect("stderr");
    let _gateway = Gateway(child);
    let (send, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if send.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    let listening = line_with(&lines, "protogate listening", &mut seen);
    let addr: SocketAddr = listening
        .split("listen=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {listening:?}"));

    // More connections than descriptors: the kernel queues them, the
    // gateway's accept fails with EMFILE.
    let held: Vec<TcpStream> = (0..FD_LIMIT * 2)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    line_with(&lines, "accept failed", &mut seen);
    // While the limit is hit (about 30 retries at the back-off), count the warnings.
    let window = Instant::now() + Duration::from_millis(1500);
    let mut warnings = 1;
    while let Some(left) = window.checked_duration_since(Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(line) => {
                if line.contains("accept failed") {
                    warnings += 1;
                }
                seen.push(line);
            }
            Err(_) => break,
        }
    }
    assert!(
        warnings <= 2,
        "{warnings} accept warnings in 1.5 s: {seen:#?}"
    );

    // Descriptors come back; the listener is still accepting.
    drop(held);
    assert_eq!(status_line(addr), "HTTP/1.1 404 Not Found", "{seen:#?}");
}
