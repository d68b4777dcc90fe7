//! The real binary's logs: without a terminal on stderr (a pipe, a file, a
//! log collector) they carry no ANSI colour codes; the access log line
//! carries every field an operator needs, as JSON with `--log-format json`.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A routes.toml for the Everything service on the upstream at `endpoint`,
/// after the tables in `head`.
fn routes(dir: &Path, endpoint: &str, head: &str) -> std::path::PathBuf {
    let path = dir.join("routes.toml");
    std::fs::write(
        &path,
        format!(
            r#"{head}
[proto]
files = ["testing/v1/everything.proto"]
include = ['{proto}']

[upstreams.echo]
endpoints = ["http://{endpoint}"]

[[routes]]
service = "testing.v1.EverythingService"
upstream = "echo"
auth = "none"
"#,
            proto = support::PROTO_DIR,
        ),
    )
    .expect("write routes.toml");
    path
}

#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    // An upstream nobody serves: only start-up lines are read.
    let config = routes(dir.path(), "127.0.0.1:9", "");
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

/// sha256("test"): the API key the caller sends.
const KEY_SHA256: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

/// A client's W3C traceparent.
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

#[tokio::test]
async fn the_json_access_log_names_route_consumer_trace_and_timings_but_never_the_key() {
    use tokio::io::AsyncBufReadExt;

    let echo = support::spawn_scripted(support::pool(), support::Reply::Echo).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("routes.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[proto]
files = ["testing/v1/everything.proto"]
include = ['{proto}']

[upstreams.echo]
endpoints = ["http://{addr}"]
connections = 1

[auth.api_keys]
source = {{ header = "x-api-key" }}
keys = [{{ consumer = "partner-a", sha256 = "{KEY_SHA256}" }}]

[[routes]]
service = "testing.v1.EverythingService"
upstream = "echo"
auth = "api_key"
"#,
            proto = support::PROTO_DIR,
            addr = echo.addr,
        ),
    )
    .expect("write routes.toml");
    let mut child = serve_with_json_logs(&config, &[]);
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    // Every line is JSON; waits are bounded by the child's own output.
    let mut next_json = async || -> serde_json::Value {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("a log line within 30 s")
            .expect("read stderr")
            .expect("protogate still running");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    };
    let listen = loop {
        let line = next_json().await;
        if line["fields"]["message"] == "protogate listening" {
            break line["fields"]["listen"]
                .as_str()
                .expect("listen")
                .to_string();
        }
    };

    let response = reqwest::Client::new()
        .get(format!("http://{listen}/v1/echo?stringValue=hi"))
        .header("x-api-key", "test")
        .header(
            "traceparent",
            format!("00-{CLIENT_TRACE}-00f067aa0ba902b7-01"),
        )
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .expect("id")
        .to_string();
    let access = loop {
        let line = next_json().await;
        if line["target"] == "protogate::access" {
            break line;
        }
    };
    let fields = &access["fields"];
    assert_eq!(fields["request_id"], request_id.as_str());
    assert_eq!(fields["trace_id"], CLIENT_TRACE);
    assert_eq!(fields["method"], "GET");
    assert_eq!(fields["route"], "/v1/echo");
    assert_eq!(fields["path"], "/v1/echo");
    assert_eq!(fields["status"], 200);
    assert_eq!(fields["response_bytes"], r#"{"stringValue":"hi"}"#.len());
    assert_eq!(fields["upstream"], "echo");
    assert_eq!(fields["endpoint"], echo.addr.to_string());
    assert_eq!(fields["retries"], 0);
    assert_eq!(fields["consumer"], "partner-a");
    let micros = |name: &str| {
        fields[name]
            .as_u64()
            .unwrap_or_else(|| panic!("{name}: {access}"))
    };
    assert!(micros("upstream_us") > 0);
    assert!(micros("total_us") >= micros("upstream_us"));
    micros("gateway_us");
    assert!(
        !access.to_string().contains("\"test\""),
        "the API key is never logged: {access}"
    );

    // The upstream's traceparent continues the client's trace, with the
    // gateway's span (the one logged) as its parent.
    let calls = echo.calls();
    let sent = calls[0].headers["traceparent"].to_str().expect("ascii");
    assert_eq!(
        sent,
        format!(
            "00-{CLIENT_TRACE}-{}-01",
            fields["span_id"].as_str().expect("span_id")
        )
    );
    assert_ne!(fields["span_id"], "00f067aa0ba902b7");
    child.kill().await.expect("kill");
}

/// Reads JSON log lines until both listeners have said where they are;
/// returns (public, admin) addresses. Reading stops there.
async fn listening_addresses(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>,
) -> (String, String) {
    let (mut public, mut admin) = (None, None);
    while public.is_none() || admin.is_none() {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("a log line within 30 s")
            .expect("read stderr")
            .expect("protogate still running");
        let line: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        let listen = line["fields"]["listen"].as_str().map(str::to_string);
        match line["fields"]["message"].as_str() {
            Some("protogate listening") => public = listen,
            Some("admin listener up") => admin = listen,
            _ => {}
        }
    }
    (public.unwrap_or_default(), admin.unwrap_or_default())
}

#[tokio::test]
async fn a_log_reader_that_stops_costs_dropped_lines_not_stalled_requests() {
    let echo = support::spawn_scripted(support::pool(), support::Reply::Echo).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let head = "[server]\naccess_log = true\n\n[admin]\nlisten = \"127.0.0.1:0\"\n";
    let config = routes(dir.path(), &echo.addr.to_string(), head);
    let mut child = serve_with_json_logs(&config, &["--log-buffer-lines", "16"]);
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr));
    let (public, admin) = listening_addresses(&mut lines).await;

    // Nobody reads stderr from here on: the pipe (64 KiB), the writer's
    // buffer (64 KiB) and the 16-line queue fill after some hundreds of
    // access log lines. Every request must still be answered.
    let client = reqwest::Client::new();
    for i in 0..2000 {
        let response = tokio::time::timeout(
            Duration::from_secs(10),
            client
                .get(format!("http://{public}/v1/echo?stringValue=n{i}"))
                .send(),
        )
        .await
        .unwrap_or_else(|_| panic!("request {i} was held up by its log line"))
        .expect("send");
        assert_eq!(response.status(), 200, "request {i}");
    }
    let metrics = client
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics text");
    let dropped: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("protogate_log_lines_dropped_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no dropped-lines counter in:\n{metrics}"));
    // 2000 lines of ~400 bytes are 800 KB: far more than the pipe, the
    // buffer and the queue hold together.
    assert!(dropped > 1000, "only {dropped} lines dropped");
    drop(lines);
}

/// `protogate serve` on `config` (plus `extra` arguments), listening on
/// 127.0.0.1:0, its JSON logs at `info` on a piped stderr.
fn serve_with_json_logs(config: &Path, extra: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_protogate"))
        .args(["serve", "--log-format", "json", "--listen", "127.0.0.1:0"])
        .args(extra)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start protogate")
}
