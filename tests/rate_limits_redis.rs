//! Cluster-wide rate limits against a real `redis-server` (Debian's, on a
//! unix socket in a temp dir, so no TCP port is picked) and real
//! `protogate` processes: two gateways share one limit, and a Redis that
//! dies mid-test leaves every request answered by each replica's own
//! limiter, counted in the fallback metric and logged.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use support::*;

/// A `redis-server` on a unix socket, stopped by its PID when dropped.
struct RedisServer {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    fn start() -> RedisServer {
        let program = installed_program("redis-server", &["/usr/bin/redis-server"], "redis-server");
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("redis.sock");
        let mut child = Command::new(program)
            .args([
                "--port",
                "0",
                "--save",
                "",
                "--appendonly",
                "no",
                "--unixsocket",
            ])
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let lines = lines_of(child.stdout.take().expect("stdout"));
        wait_for_line(&lines, "ready to accept connections");
        RedisServer {
            child,
            socket,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("redis+unix://{}", self.socket.display())
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `protogate serve` process on 127.0.0.1:0, with its admin listener.
struct GatewayProcess {
    child: Child,
    base: String,
    admin: String,
    stderr: Receiver<String>,
    _dir: tempfile::TempDir,
}

impl GatewayProcess {
    fn start(toml: &str) -> GatewayProcess {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("routes.toml");
        std::fs::write(&path, toml.replace("{proto}", PROTO_DIR)).expect("write routes.toml");
        let mut child = Command::new(env!("CARGO_BIN_EXE_protogate"))
            .args(["serve", "--config"])
            .arg(&path)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info,protogate::access=off")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn protogate serve");
        let stderr = lines_of(child.stderr.take().expect("stderr"));
        let (mut admin, mut base) = (None, None);
        while admin.is_none() || base.is_none() {
            let line = wait_for_line(&stderr, "listen").pop().expect("a line");
            let addr = listen_address(&line).map(|a| format!("http://{a}"));
            if line.contains("admin listener up") {
                admin = addr;
            } else if line.contains("protogate listening") {
                base = addr;
            }
        }
        GatewayProcess {
            child,
            base: base.expect("the public listener's address"),
            admin: admin.expect("the admin listener's address"),
            stderr,
            _dir: dir,
        }
    }

    async fn fallbacks(&self) -> f64 {
        let text = client()
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
            .expect("scrape")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .find(|l| l.starts_with("protogate_rate_limit_redis_fallbacks_total "))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no fallback counter in:\n{text}"))
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `listen=ADDR` of a log line.
fn listen_address(line: &str) -> Option<String> {
    let rest = &line[line.find("listen=")? + "listen=".len()..];
    Some(rest.split_whitespace().next()?.to_string())
}

/// A reader's lines on a channel, read on a thread as they are written.
fn lines_of(reader: impl std::io::Read + Send + 'static) -> Receiver<String> {
    use std::io::BufRead;
    let (send, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(reader).lines() {
            let Ok(line) = line else { return };
            if send.send(line).is_err() {
                return;
            }
        }
    });
    lines
}

/// Every line up to the first containing `needle`; panics after 30 s.
fn wait_for_line(lines: &Receiver<String>, needle: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                let found = line.contains(needle);
                seen.push(line);
                if found {
                    return seen;
                }
            }
            Err(e) => panic!(
                "no line with {needle:?} ({e}); so far:\n{}",
                seen.join("\n")
            ),
        }
    }
}

/// The Everything service on `upstream` behind a `limit` counted in the
/// Redis at `redis`.
fn cluster_toml(upstream: std::net::SocketAddr, redis: &str, limit: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
access_log = false

[admin]
listen = "127.0.0.1:0"

[rate_limits]
redis = "{redis}"
redis_timeout = "1s"

[proto]
files = ["testing/v1/everything.proto"]
include = ["{{proto}}"]

[upstreams.echo]
endpoints = ["http://{upstream}"]

[[routes]]
service = "testing.v1.EverythingService"
upstream = "echo"
auth = "none"
rate_limits = [{limit}]
"#
    )
}

async fn echo_status(http: &reqwest::Client, base: &str, tenant: &str) -> u16 {
    let response = http
        .get(format!("{base}/v1/echo"))
        .header("x-tenant", tenant)
        .send()
        .await
        .expect("request");
    response.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_one_limit_within_ten_percent() {
    const RATE: f64 = 10.0;
    const BURST: f64 = 5.0;
    const RUN: Duration = Duration::from_secs(5);
    let redis = RedisServer::start();
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let limit = format!(
        r#"{{ name = "shared", key = "route", rate = {RATE}, per = "1s", burst = {BURST} }}"#
    );
    let toml = cluster_toml(scripted.addr, &redis.url(), &limit);
    let gateways = [GatewayProcess::start(&toml), GatewayProcess::start(&toml)];
    // One client (and its connections) per caller: building a client per
    // request would measure TLS root loading, not the gateways.
    let started = Instant::now();
    let mut clients = Vec::new();
    // Eight callers per gateway offer far more than the limit.
    for gateway in &gateways {
        for _ in 0..8 {
            let base = gateway.base.clone();
            let http = client();
            clients.push(tokio::spawn(async move {
                let mut calls = Vec::new();
                while started.elapsed() < RUN {
                    let sent = started.elapsed().as_secs_f64();
                    let status = echo_status(&http, &base, "any").await;
                    calls.push((sent, started.elapsed().as_secs_f64(), status));
                }
                calls
            }));
        }
    }
    let mut calls = Vec::new();
    for client in clients {
        calls.extend(client.await.expect("caller"));
    }
    let count = |wanted: u16| calls.iter().filter(|(.., s)| *s == wanted).count() as u32;
    let (accepted, refused) = (count(200), count(429));
    assert_eq!(accepted + refused, calls.len() as u32, "only 200s and 429s");
    // Each decision fell between its request's send and its answer: the
    // window of decisions runs from about the first calls' midpoint to the
    // last calls' (latency on a loaded machine is not the limiter's).
    let first = calls
        .iter()
        .map(|(s, r, _)| (s + r) / 2.0)
        .fold(f64::MAX, f64::min);
    let last = calls
        .iter()
        .map(|(s, r, _)| (s + r) / 2.0)
        .fold(0.0, f64::max);
    let elapsed = last - first;
    let allowed = BURST + RATE * elapsed;
    let ratio = f64::from(accepted) / allowed;
    assert!(
        refused > accepted,
        "the callers offered more than the limit: {accepted} accepted, {refused} refused"
    );
    assert!(
        (0.9..=1.1).contains(&ratio),
        "accepted {accepted} in {elapsed:.2}s across two gateways; one shared limit allows {allowed:.0} (ratio {ratio:.3})"
    );
    for gateway in &gateways {
        assert_eq!(
            gateway.fallbacks().await,
            0.0,
            "every decision came from Redis"
        );
    }
}

// Multi-threaded: the gateway's start is waited for by blocking this thread,
// and the scripted upstream must answer the gateway's first dial meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_redis_leaves_every_request_answered_by_the_local_limiter() {
    let mut redis = RedisServer::start();
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let limit = r#"{ name = "per-tenant", key = "header:x-tenant", rate = 2, per = "1h" }"#;
    let gateway = GatewayProcess::start(&cluster_toml(scripted.addr, &redis.url(), limit));
    let base = &gateway.base;
    let http = client();
    let mut before = Vec::new();
    for _ in 0..3 {
        before.push(echo_status(&http, base, "a").await);
    }
    assert_eq!(before, [200, 200, 429], "Redis counts");
    redis.kill();
    // Redis refused tenant a for the next half hour: the replica remembers
    // and refuses without asking, and without falling back.
    assert_eq!(echo_status(&http, base, "a").await, 429);
    assert_eq!(gateway.fallbacks().await, 0.0);
    let mut after = Vec::new();
    for _ in 0..5 {
        after.push(echo_status(&http, base, "b").await);
    }
    assert_eq!(
        after,
        [200, 200, 429, 429, 429],
        "the replica's own buckets decide, with the same rate; never a 5xx"
    );
    assert_eq!(gateway.fallbacks().await, 5.0);
    wait_for_line(&gateway.stderr, "Redis unavailable");
}
