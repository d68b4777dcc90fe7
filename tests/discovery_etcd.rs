//! etcd discovery against a real etcd (Debian's `etcd-server`, which
//! .ci/run installs) started on loopback ports with a temporary data
//! directory: the watch sees registered instances, follows removals and
//! additions within a second, keeps the last set while etcd is down or
//! sends more than its bounds, and re-syncs when it is back; through the
//! gateway, an instance leaves and another joins under load without a
//! failed request.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use protogate::upstream::Discovery;
use protogate::upstream::discovery::Endpoints;
use protogate::upstream::discovery::etcd::EtcdConfig;
use serde_json::json;
use tokio::process::{Child, Command};
use tokio::sync::watch;

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use support::{
    StreamsPerConnection, bookstore_toml, client, endpoint_calls, endpoint_texts,
    spawn_counting_bookstore, spawn_gateway, wait_for_endpoints,
};

const PREFIX: &str = "/services/bookstore/";
/// Bound on any one wait for an event.
const PATIENCE: Duration = Duration::from_secs(20);

/// An etcd server on loopback, killed (by its PID) when dropped.
struct Etcd {
    child: Child,
    /// Its member name, unique to this test: proof that the etcd answering
    /// on `client_port` is this one.
    name: String,
    client_port: u16,
    peer_port: u16,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Etcd {
    /// Starts etcd on random loopback ports below the ephemeral range (so
    /// no socket bound to port 0 holds them), trying others when a port is
    /// taken, and waits until it answers.
    async fn start() -> Etcd {
        for _ in 0..10 {
            let client_port = rand::random_range(20_000..32_000);
            let peer_port = rand::random_range(20_000..32_000);
            if client_port == peer_port {
                continue;
            }
            let dir = tempfile::tempdir().expect("tempdir");
            let name = format!("test-{:016x}", rand::random::<u64>());
            let child = spawn(dir.path(), &name, client_port, peer_port);
            let mut etcd = Etcd {
                child,
                name,
                client_port,
                peer_port,
                dir,
                http: reqwest::Client::new(),
            };
            if etcd.wait_ready().await {
                return etcd;
            }
        }
        panic!("etcd could not bind loopback ports after 10 tries");
    }

    /// Kills etcd (SIGKILL, by PID) and starts it again on the same ports
    /// and data, as a crash and restart would.
    async fn restart(&mut self) {
        self.kill().await;
        self.child = spawn(
            self.dir.path(),
            &self.name,
            self.client_port,
            self.peer_port,
        );
        assert!(
            self.wait_ready().await,
            "etcd did not come back:\n{}",
            self.log()
        );
    }

    async fn kill(&mut self) {
        self.child.kill().await.expect("kill etcd");
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Whether this etcd answers; false if a port was taken (it exited, or
    /// another test's etcd answers there).
    async fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = self.log();
                assert!(
                    log.contains("address already in use"),
                    "etcd exited ({status}):\n{log}"
                );
                return false;
            }
            if let Some(ours) = self.answering_member_is_ours().await {
                if !ours {
                    self.kill().await;
                }
                return ours;
            }
            assert!(Instant::now() < deadline, "etcd not ready:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the etcd on `client_port` is this one; `None` while nothing
    /// answers there yet.
    async fn answering_member_is_ours(&self) -> Option<bool> {
        let members = self
            .http
            .post(format!("{}/v3/cluster/member/list", self.url()))
            .body("{}")
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success())?
            .text()
            .await
            .ok()?;
        Some(members.contains(&format!("\"name\":\"{}\"", self.name)))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// One etcd v3 JSON gateway call; panics unless it succeeds.
    async fn call(&self, path: &str, body: serde_json::Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.url()))
            .body(body.to_string())
            .send()
            .await
            .expect("etcd call");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "{path}: {status} {text}");
    }

    async fn put(&self, key: &str, value: &str) {
        self.call("/v3/kv/put", put_op(key, value)).await;
    }

    /// Deletes `delete` and puts `key` = `value` in one revision.
    async fn replace(&self, delete: &str, key: &str, value: &str) {
        let ops = json!({ "success": [
            { "request_delete_range": { "key": BASE64.encode(delete) } },
            { "request_put": put_op(key, value) },
        ]});
        self.call("/v3/kv/txn", ops).await;
    }

    /// etcd's count of range reads served so far (from its metrics).
    async fn range_reads(&self) -> u64 {
        let metrics = self
            .http
            .get(format!("{}/metrics", self.url()))
            .send()
            .await
            .expect("etcd metrics")
            .text()
            .await
            .expect("etcd metrics body");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix("etcd_mvcc_range_total "))
            .and_then(|n| n.trim().parse::<f64>().ok())
            .expect("etcd_mvcc_range_total in etcd's metrics") as u64
    }

    /// Waits until etcd has served `more` range reads beyond those so far:
    /// the watcher's re-reads, as nothing else reads here meanwhile.
    async fn wait_for_range_reads(&self, more: u64) {
        let target = self.range_reads().await + more;
        for _ in 0..1_000 {
            if self.range_reads().await >= target {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("etcd did not serve {more} more range reads");
    }

    fn discovery(&self, max_endpoints: usize) -> Discovery {
        self.discovery_bounded(max_endpoints, 4 << 20)
    }

    fn discovery_bounded(&self, max_endpoints: usize, max_response_bytes: usize) -> Discovery {
        Discovery::Etcd(EtcdConfig {
            endpoints: vec![self.url()],
            prefix: PREFIX.into(),
            scheme: "http".into(),
            max_endpoints,
            max_value_bytes: 512,
            max_response_bytes,
            timeout: Duration::from_secs(5),
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_millis(500),
        })
    }
}

fn put_op(key: &str, value: &str) -> serde_json::Value {
    json!({ "key": BASE64.encode(key), "value": BASE64.encode(value) })
}

fn spawn(dir: &Path, name: &str, client_port: u16, peer_port: u16) -> Child {
    let etcd = support::installed_program("etcd", &["/usr/bin/etcd"], "etcd-server");
    let log = std::fs::File::create(dir.join("etcd.log")).expect("log file");
    let client = format!("http://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    Command::new(etcd)
        .args(["--name", name])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--listen-client-urls", &client])
        .args(["--advertise-client-urls", &client])
        .args(["--listen-peer-urls", &peer])
        .args(["--initial-advertise-peer-urls", &peer])
        .args(["--initial-cluster", &format!("{name}={peer}")])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn etcd")
}

/// Waits until the receiver holds `expected` (as authority texts).
async fn wait_for(rx: &mut watch::Receiver<Option<Endpoints>>, expected: &[&str]) {
    wait_for_endpoints(rx, expected, PATIENCE).await;
}

/// Every set the receiver is seen to hold, in order, from a task of its own.
fn record(mut rx: watch::Receiver<Option<Endpoints>>) -> Arc<Mutex<Vec<Vec<String>>>> {
    let seen = Arc::new(Mutex::new(vec![endpoint_texts(&rx.borrow_and_update())]));
    let log = seen.clone();
    tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let set = endpoint_texts(&rx.borrow_and_update());
            log.lock().expect("lock").push(set);
        }
    });
    seen
}

async fn register_three(etcd: &Etcd) {
    etcd.put(&format!("{PREFIX}a"), "127.0.0.2:50051").await;
    etcd.put(&format!("{PREFIX}b"), "http://127.0.0.3:50051")
        .await;
    etcd.put(&format!("{PREFIX}c"), "127.0.0.4:50051").await;
    // Outside the prefix: not an endpoint.
    etcd.put("/services/bookstore2/x", "127.0.0.9:50051").await;
}

const THREE: [&str; 3] = ["127.0.0.2:50051", "127.0.0.3:50051", "127.0.0.4:50051"];
const AFTER_SWAP: [&str; 3] = ["127.0.0.2:50051", "127.0.0.4:50051", "127.0.0.5:50051"];

#[tokio::test]
async fn the_watch_sees_registered_instances_and_a_removal_and_an_addition_within_a_second() {
    let etcd = Etcd::start().await;
    register_three(&etcd).await;
    let mut rx = etcd.discovery(256).watch("bookstore");
    wait_for(&mut rx, &THREE).await;

    let written = Instant::now();
    etcd.replace(
        &format!("{PREFIX}b"),
        &format!("{PREFIX}d"),
        "127.0.0.5:50051",
    )
    .await;
    wait_for(&mut rx, &AFTER_SWAP).await;
    assert!(
        written.elapsed() < Duration::from_secs(1),
        "the change took {:?} to reach the receiver",
        written.elapsed()
    );
}

#[tokio::test]
async fn a_lost_watch_keeps_the_last_set_and_resyncs_when_etcd_is_back() {
    let mut etcd = Etcd::start().await;
    register_three(&etcd).await;
    let mut rx = etcd.discovery(256).watch("bookstore");
    wait_for(&mut rx, &THREE).await;
    let seen = record(rx.clone());

    etcd.kill().await;
    etcd.restart().await;
    etcd.replace(
        &format!("{PREFIX}b"),
        &format!("{PREFIX}d"),
        "127.0.0.5:50051",
    )
    .await;
    wait_for(&mut rx, &AFTER_SWAP).await;

    // While etcd was down and while the watch was re-made, the receiver
    // held the last set: nothing empty or partial came in between.
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen, [THREE.to_vec(), AFTER_SWAP.to_vec()]);
}

#[tokio::test]
async fn keys_beyond_max_endpoints_and_values_that_are_not_addresses_are_ignored() {
    let etcd = Etcd::start().await;
    register_three(&etcd).await;
    etcd.put(&format!("{PREFIX}d"), "127.0.0.5:50051").await;
    let mut rx = etcd.discovery(3).watch("bookstore");
    // The first three keys by name; `d` is beyond max_endpoints.
    wait_for(&mut rx, &THREE).await;

    // A value of another scheme takes its key out; the watch goes on.
    etcd.put(&format!("{PREFIX}a"), "https://127.0.0.2:50051")
        .await;
    wait_for(&mut rx, &["127.0.0.3:50051", "127.0.0.4:50051"]).await;
    etcd.put(&format!("{PREFIX}e"), "127.0.0.6:50051").await;
    wait_for(
        &mut rx,
        &["127.0.0.3:50051", "127.0.0.4:50051", "127.0.0.6:50051"],
    )
    .await;
    etcd.put(&format!("{PREFIX}f"), "127.0.0.7:50051").await;
    etcd.put(&format!("{PREFIX}c"), "127.0.0.8:50051").await;
    wait_for(
        &mut rx,
        &["127.0.0.3:50051", "127.0.0.6:50051", "127.0.0.8:50051"],
    )
    .await;
}

#[tokio::test]
async fn answers_above_max_response_bytes_are_refused_and_the_last_set_kept_until_they_are_gone() {
    let etcd = Etcd::start().await;
    register_three(&etcd).await;
    let mut rx = etcd.discovery_bounded(256, 16 << 10).watch("bookstore");
    wait_for(&mut rx, &THREE).await;
    rx.mark_unchanged();

    // 64 KiB under the prefix: the watch message carrying it is over the
    // 16 KiB bound, and so is every re-read while it is there.
    etcd.put(&format!("{PREFIX}huge"), &"x".repeat(64 << 10))
        .await;
    etcd.wait_for_range_reads(2).await;
    // A change meanwhile is not seen: no answer that includes it is read.
    etcd.replace(
        &format!("{PREFIX}b"),
        &format!("{PREFIX}d"),
        "127.0.0.5:50051",
    )
    .await;
    etcd.wait_for_range_reads(2).await;
    assert!(
        !rx.has_changed().expect("discovery running"),
        "{:?}",
        endpoint_texts(&rx.borrow())
    );

    // Once the oversize value is gone, a re-read sees the change.
    let huge = BASE64.encode(format!("{PREFIX}huge"));
    etcd.call("/v3/kv/deleterange", json!({ "key": huge }))
        .await;
    wait_for(&mut rx, &AFTER_SWAP).await;
}

#[tokio::test]
async fn an_etcd_endpoint_that_refuses_is_passed_over_for_the_next() {
    let etcd = Etcd::start().await;
    register_three(&etcd).await;
    // An address that refuses connections: a socket bound there that never
    // listens, held for the whole test.
    let refusing =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    refusing
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    let refusing_addr = refusing
        .local_addr()
        .expect("addr")
        .as_socket()
        .expect("an IP address");
    let Discovery::Etcd(mut config) = etcd.discovery(256) else {
        unreachable!("etcd discovery");
    };
    config
        .endpoints
        .insert(0, format!("http://{refusing_addr}"));
    let mut rx = Discovery::Etcd(config).watch("bookstore");
    wait_for(&mut rx, &THREE).await;
}

#[tokio::test]
async fn a_tls_upstream_takes_https_values_and_passes_over_http_ones() {
    let etcd = Etcd::start().await;
    etcd.put(&format!("{PREFIX}a"), "https://127.0.0.2:50051")
        .await;
    etcd.put(&format!("{PREFIX}b"), "127.0.0.3:50051").await;
    etcd.put(&format!("{PREFIX}c"), "http://127.0.0.4:50051")
        .await;
    // routes.toml as an operator writes it: the upstream's scheme comes from
    // its tls table, and a value written as a URL must name that scheme.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("routes.toml");
    let toml = bookstore_toml("127.0.0.1:1".parse().expect("addr"), "").replace(
        "endpoints = [\"http://127.0.0.1:1\"]",
        &format!(
            "etcd = {{ endpoints = [\"{}\"], prefix = \"{PREFIX}\" }}\ntls = {{}}",
            etcd.url()
        ),
    );
    std::fs::write(&path, toml.replace("{proto}", support::PROTO_DIR)).expect("write");
    let loaded = protogate::config::load(&path).unwrap_or_else(|(source, errors)| {
        panic!("routes.toml does not parse:\n{}", source.render(&errors))
    });
    let compiled = protogate::snapshot::compile_for_serving(&loaded).unwrap_or_else(|errors| {
        panic!(
            "routes.toml does not compile:\n{}",
            loaded.source.render(&errors)
        )
    });
    let upstream = &compiled.upstreams[0];
    assert!(
        upstream.pool.tls.is_some(),
        "the tls table makes the upstream TLS"
    );
    let mut rx = upstream.pool.discovery.watch("bookstore");
    wait_for(&mut rx, &["127.0.0.2:50051", "127.0.0.3:50051"]).await;
}

/// A tonic Bookstore and the calls it served.
struct Bookstore {
    addr: SocketAddr,
    streams: StreamsPerConnection,
}

impl Bookstore {
    async fn start() -> Bookstore {
        let (addr, _, streams) = spawn_counting_bookstore(None).await;
        Bookstore { addr, streams }
    }

    fn calls(&self) -> usize {
        self.streams.lock().expect("lock").values().sum()
    }
}

/// Loops GETs from 8 clients until `stop` (at most 400 each), counting
/// every answer in `done` and every failure in `failed`.
fn spawn_load(
    base: &str,
    stop: Arc<AtomicBool>,
    done: watch::Sender<usize>,
    failed: Arc<Mutex<Vec<String>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let done = Arc::new(done);
    (0..8)
        .map(|_| {
            let (url, stop, done, failed) = (
                format!("{base}/v1/shelves"),
                stop.clone(),
                done.clone(),
                failed.clone(),
            );
            tokio::spawn(async move {
                let http = client();
                for _ in 0..400 {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    match http.get(&url).send().await {
                        Ok(r) if r.status() == 200 => {}
                        Ok(r) => failed
                            .lock()
                            .expect("lock")
                            .push(format!("status {}", r.status())),
                        Err(e) => failed.lock().expect("lock").push(e.to_string()),
                    }
                    done.send_modify(|n| *n += 1);
                }
            })
        })
        .collect()
}

#[tokio::test]
async fn under_load_an_instance_leaves_and_another_joins_without_a_failed_request() {
    let etcd = Etcd::start().await;
    let stores = [
        Bookstore::start().await,
        Bookstore::start().await,
        Bookstore::start().await,
        Bookstore::start().await,
    ];
    for (key, store) in ["a", "b", "c"].iter().zip(&stores) {
        etcd.put(&format!("{PREFIX}{key}"), &store.addr.to_string())
            .await;
    }
    let toml = bookstore_toml(stores[0].addr, "").replace(
        &format!("endpoints = [\"http://{}\"]", stores[0].addr),
        &format!(
            "etcd = {{ endpoints = [\"{}\"], prefix = \"{PREFIX}\" }}",
            etcd.url()
        ),
    );
    let gateway = spawn_gateway(&toml).await;
    let registered: Vec<String> = stores[..3].iter().map(|s| s.addr.to_string()).collect();
    let mut expected = registered.clone();
    expected.sort();
    // The pool starts with etcd's first answer if it comes within twice the
    // connect timeout; on a slow machine it may come later: each try waits
    // on a real request.
    for tries in 0.. {
        if endpoint_calls(&gateway, "bookstore")
            .keys()
            .eq(expected.iter())
        {
            break;
        }
        assert!(tries < 200, "the gateway never had etcd's three instances");
        let _ = client()
            .get(format!("{}/v1/shelves", gateway.base))
            .send()
            .await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(Mutex::new(Vec::new()));
    let (done, mut progress) = watch::channel(0);
    let clients = spawn_load(&gateway.base, stop.clone(), done, failed.clone());
    // (A watch::Ref held across an await would block the clients' sends.)
    let warmed = tokio::time::timeout(PATIENCE, progress.wait_for(|n| *n >= 100))
        .await
        .is_ok_and(|waited| waited.is_ok());
    assert!(warmed, "100 requests took longer than {PATIENCE:?}");

    // b leaves (it keeps running, as an instance draining would) and d joins.
    etcd.replace(
        &format!("{PREFIX}b"),
        &format!("{PREFIX}d"),
        &stores[3].addr.to_string(),
    )
    .await;
    let served_by_b = AtomicUsize::new(0);
    let moved = tokio::time::timeout(
        PATIENCE,
        progress.wait_for(|_| {
            let endpoints = endpoint_calls(&gateway, "bookstore");
            served_by_b.store(stores[1].calls(), Ordering::SeqCst);
            !endpoints.contains_key(&registered[1]) && stores[3].calls() >= 50
        }),
    )
    .await
    .is_ok_and(|waited| waited.is_ok());
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.expect("client task");
    }
    assert!(
        moved,
        "b still an endpoint, or d took fewer than 50 calls, after {PATIENCE:?}"
    );

    let failed = failed.lock().expect("lock").clone();
    assert!(
        failed.is_empty(),
        "{} failed requests: {failed:?}",
        failed.len()
    );
    // Once dropped, b gets no new call; at most one call per client was
    // already on its way there (and finished: b drained it).
    let after_drop = stores[1].calls() - served_by_b.load(Ordering::SeqCst);
    assert!(
        after_drop <= 8,
        "b got {after_drop} calls after the gateway dropped it"
    );
    for store in [&stores[0], &stores[2], &stores[3]] {
        assert!(store.calls() > 0, "{} got no calls", store.addr);
    }
}
