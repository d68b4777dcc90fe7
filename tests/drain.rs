//! Graceful drain of the real binary on SIGTERM: readiness fails first,
//! the listener keeps accepting for `[server] drain_delay`, then refuses
//! new connections, the calls in flight finish, and the process exits
//! within the grace period.

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::AsyncBufReadExt as _;
use tokio::sync::mpsc;

use support::*;

/// How long the upstream takes to answer each call.
const UPSTREAM_DELAY: Duration = Duration::from_secs(3);
const DRAIN_DELAY: Duration = Duration::from_secs(1);
const GRACE: Duration = Duration::from_secs(6);
const IN_FLIGHT: usize = 50;

fn routes(upstream: SocketAddr) -> String {
    format!(
        r#"
[server]
access_log = false
drain_delay = "{drain}ms"
shutdown_grace = "{grace}ms"

[admin]
listen = "127.0.0.1:0"

[proto]
files = ["testing/v1/everything.proto"]
include = ["{proto}"]

[upstreams.echo]
endpoints = ["http://{upstream}"]
timeout = "20s"
max_concurrent_calls = 200

[[routes]]
service = "testing.v1.EverythingService"
upstream = "echo"
auth = "none"
"#,
        drain = DRAIN_DELAY.as_millis(),
        grace = GRACE.as_millis(),
        proto = PROTO_DIR,
    )
}

/// The gateway process; killed (by its PID) if the test fails before it exits.
struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Log lines (JSON) from the gateway's stderr, and what was seen so far.
struct Log {
    lines: mpsc::UnboundedReceiver<serde_json::Value>,
    seen: Vec<serde_json::Value>,
}

impl Log {
    /// The next line whose message is `message`; panics after 30 s.
    async fn until(&mut self, message: &str) -> serde_json::Value {
        let wait = async {
            while let Some(line) = self.lines.recv().await {
                self.seen.push(line.clone());
                if line["fields"]["message"] == message {
                    return Some(line);
                }
            }
            None
        };
        match tokio::time::timeout(Duration::from_secs(30), wait).await {
            Ok(Some(line)) => line,
            _ => panic!("no log line {message:?}; seen: {:#?}", self.seen),
        }
    }
}

fn listen_of(line: &serde_json::Value) -> SocketAddr {
    line["fields"]["listen"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line}"))
}

fn start(config: &std::path::Path) -> (Gateway, Log) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_protogate"))
        .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"])
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start protogate");
    let stderr = child.stderr.take().expect("stderr");
    let stderr = tokio::process::ChildStderr::from_std(stderr).expect("async stderr");
    let (send, lines) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut reader = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            let parsed = serde_json::from_str(&line).unwrap_or(serde_json::Value::String(line));
            if send.send(parsed).is_err() {
                return;
            }
        }
    });
    let log = Log {
        lines,
        seen: Vec::new(),
    };
    (Gateway(child), log)
}

/// A GET as one stream of the HTTP/2 connection `h2`: status and body.
async fn h2_get(
    h2: h2::client::SendRequest<bytes::Bytes>,
    url: &str,
) -> Result<(u16, String), h2::Error> {
    let request = http::Request::get(url).body(()).expect("request");
    let (response, _) = h2.ready().await?.send_request(request, true)?;
    let (head, mut body) = response.await?.into_parts();
    let mut text = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        text.extend_from_slice(&chunk);
    }
    Ok((
        head.status.as_u16(),
        String::from_utf8_lossy(&text).into_owned(),
    ))
}

async fn readiness(admin: SocketAddr) -> u16 {
    client()
        .get(format!("http://{admin}/readyz"))
        .send()
        .await
        .expect("admin answers")
        .status()
        .as_u16()
}

async fn calls_in_flight(admin: SocketAddr) -> u64 {
    let upstreams: serde_json::Value = client()
        .get(format!("http://{admin}/upstreams"))
        .send()
        .await
        .expect("admin answers")
        .json()
        .await
        .expect("json");
    upstreams["upstreams"][0]["calls_in_flight"]
        .as_u64()
        .expect("calls_in_flight")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_fails_readiness_then_refuses_connections_and_finishes_calls_in_flight() {
    let scripted =
        spawn_scripted(pool(), Reply::Delay(UPSTREAM_DELAY, Box::new(Reply::Echo))).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("routes.toml");
    std::fs::write(&config, routes(scripted.addr)).expect("write routes.toml");
    let (mut gateway, mut log) = start(&config);
    let listen = listen_of(&log.until("protogate listening").await);
    let admin = listen_of(&log.until("admin listener up").await);
    assert_eq!(readiness(admin).await, 200);

    // Half over HTTP/1 (a connection each), half as streams of one HTTP/2
    // connection, which must get GOAWAY rather than a reset.
    let (h2, h2_connection) = h2::client::handshake(
        tokio::net::TcpStream::connect(listen)
            .await
            .expect("connect h2"),
    )
    .await
    .expect("h2 handshake");
    let h2_connection = tokio::spawn(h2_connection);
    let requests: Vec<_> = (0..IN_FLIGHT)
        .map(|i| {
            let url = format!("http://{listen}/v1/echo?stringValue=call{i}");
            let h2 = h2.clone();
            tokio::spawn(async move {
                if i % 2 == 0 {
                    let response = client().get(url).send().await.map_err(|e| e.to_string())?;
                    let status = response.status().as_u16();
                    Ok((status, response.text().await.map_err(|e| e.to_string())?))
                } else {
                    h2_get(h2, &url).await.map_err(|e| e.to_string())
                }
            })
        })
        .collect();
    // Every call has reached the upstream (each try is an admin round trip).
    let mut tries = 0;
    while calls_in_flight(admin).await < IN_FLIGHT as u64 {
        tries += 1;
        assert!(
            tries < 5_000,
            "the {IN_FLIGHT} calls never were in flight together"
        );
    }

    let signalled = Instant::now();
    let pid = gateway.0.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    // Readiness fails first (each try is an admin round trip).
    let mut tries = 0;
    while readiness(admin).await != 503 {
        tries += 1;
        assert!(tries < 5_000, "readiness never failed after SIGTERM");
    }
    let not_ready = signalled.elapsed();

    // After the delay the listener is closed: connecting is refused.
    log.until("shutting down; draining connections").await;
    let stopped_accepting = signalled.elapsed();
    assert!(
        stopped_accepting >= DRAIN_DELAY,
        "the listener accepted for the drain delay ({stopped_accepting:?})"
    );
    assert!(
        not_ready < stopped_accepting,
        "readiness failed ({not_ready:?}) before the listener closed ({stopped_accepting:?})"
    );
    let refused = tokio::net::TcpStream::connect(listen).await;
    assert_eq!(
        refused.map(|_| ()).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionRefused)
    );

    for (i, request) in requests.into_iter().enumerate() {
        let (status, body) = request
            .await
            .expect("task")
            .unwrap_or_else(|e| panic!("call {i} failed during the drain: {e}"));
        assert_eq!(status, 200, "call {i}: {body}");
        assert_eq!(body, format!(r#"{{"stringValue":"call{i}"}}"#));
    }

    // The HTTP/2 connection ended cleanly, by the server's GOAWAY: a new
    // stream on it is refused as going away, not as a broken connection.
    let ended = h2_connection.await.expect("h2 task");
    assert!(ended.is_ok(), "the HTTP/2 connection ended with {ended:?}");
    let refused = h2
        .ready()
        .await
        .map(|_| ())
        .expect_err("no new stream after GOAWAY");
    assert!(refused.is_go_away(), "{refused:?}");

    let waited = tokio::task::spawn_blocking(move || {
        let status = gateway.0.wait().expect("wait");
        (status, signalled.elapsed())
    });
    let (status, exited) = waited.await.expect("wait task");
    assert!(status.success(), "{status}");
    assert!(
        exited <= DRAIN_DELAY + GRACE + Duration::from_secs(1),
        "exited {exited:?} after SIGTERM"
    );
    assert_eq!(scripted.call_count(), IN_FLIGHT);
}
