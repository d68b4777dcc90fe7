//! `Idempotency-Key` on a POST binding that opts in, through the real
//! gateway in front of a scripted upstream that counts its calls: a retry
//! replays the first answer (the upstream is called once), another request
//! under the same key is a 422, a retry while the first is in flight a 409,
//! keys are per consumer, expire after their TTL (paused clock), are
//! released by a failure, bounded in memory, and shared through Redis.

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Reply, Scripted, bookstore_toml, client, pool, spawn_gateway, spawn_scripted};

const CREATE: &str = "/v1/shelves/1/books";

fn book() -> Reply {
    Reply::Json(json!({"name": "shelves/1/books/7", "id": "7", "title": "Dune"}))
}

/// The Bookstore route with `idempotency` on the route (applies to its
/// POST and PATCH bindings) and `extra` appended.
fn keyed_toml(upstream: &Scripted, rule: &str, extra: &str) -> String {
    bookstore_toml(upstream.addr, &format!("idempotency = {rule}\n{extra}"))
}

async fn create(base: &str, key: Option<&str>, body: Value) -> reqwest::Response {
    let mut request = client().post(format!("{base}{CREATE}")).json(&body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    request.send().await.expect("gateway answers")
}

async fn reason(response: reqwest::Response) -> String {
    let body: Value = response.json().await.expect("JSON error body");
    body["details"][0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn a_retry_replays_the_first_answer_and_the_upstream_is_called_once() {
    let upstream = spawn_scripted(pool(), book()).await;
    let gateway = spawn_gateway(&keyed_toml(&upstream, "{ ttl = \"1h\" }", "")).await;
    let first = create(&gateway.base, Some("\"k-1\""), json!({"title": "Dune"})).await;
    assert_eq!(first.status(), 200);
    assert!(first.headers().get("idempotency-replayed").is_none());
    let first_type = first.headers()["content-type"].clone();
    let first_body = first.bytes().await.expect("body");

    let retry = create(&gateway.base, Some("\"k-1\""), json!({"title": "Dune"})).await;
    assert_eq!(retry.status(), 200);
    assert_eq!(retry.headers()["idempotency-replayed"], "true");
    assert_eq!(retry.headers()["content-type"], first_type);
    assert!(
        retry.headers().contains_key("x-request-id"),
        "the retry's own id"
    );
    assert_eq!(retry.bytes().await.expect("body"), first_body);
    assert_eq!(upstream.call_count(), 1, "the upstream ran the write once");

    let unkeyed = create(&gateway.base, None, json!({"title": "Dune"})).await;
    assert_eq!(unkeyed.status(), 200, "the key is optional unless required");
    assert_eq!(upstream.call_count(), 2);
}

#[tokio::test]
async fn the_same_key_with_a_different_body_is_422_and_reaches_no_upstream() {
    let upstream = spawn_scripted(pool(), book()).await;
    let gateway = spawn_gateway(&keyed_toml(&upstream, "{}", "")).await;
    let first = create(&gateway.base, Some("\"k-2\""), json!({"title": "Dune"})).await;
    assert_eq!(first.status(), 200);
    let other = create(&gateway.base, Some("\"k-2\""), json!({"title": "Emma"})).await;
    assert_eq!(other.status(), 422);
    assert_eq!(reason(other).await, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(upstream.call_count(), 1);
}

#[tokio::test]
async fn a_retry_while_the_first_is_in_flight_is_409_then_replays_once_it_finished() {
    let arrived = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let held = Reply::Hold {
        arrived: arrived.clone(),
        release: release.clone(),
        reply: Box::new(book()),
    };
    let upstream = spawn_scripted(pool(), held).await;
    let gateway = spawn_gateway(&keyed_toml(&upstream, "{}", "")).await;
    let base = gateway.base.clone();
    let first =
        tokio::spawn(async move { create(&base, Some("\"k-3\""), json!({"title": "Dune"})).await });
    arrived.notified().await;
    let concurrent = create(&gateway.base, Some("\"k-3\""), json!({"title": "Dune"})).await;
    assert_eq!(concurrent.status(), 409);
    assert_eq!(reason(concurrent).await, "IDEMPOTENCY_KEY_IN_FLIGHT");
    release.add_permits(1);
    let first = first.await.expect("first request");
    assert_eq!(first.status(), 200);
    let after = create(&gateway.base, Some("\"k-3\""), json!({"title": "Dune"})).await;
    assert_eq!(after.headers()["idempotency-replayed"], "true");
    assert_eq!(upstream.call_count(), 1);
}

#[tokio::test]
async fn a_missing_key_on_a_route_that_requires_one_and_a_malformed_key_are_400() {
    let upstream = spawn_scripted(pool(), book()).await;
    let gateway = spawn_gateway(&keyed_toml(&upstream, "{ required = true }", "")).await;
    let missing = create(&gateway.base, None, json!({})).await;
    assert_eq!(missing.status(), 400);
    assert_eq!(reason(missing).await, "IDEMPOTENCY_KEY_MISSING");
    // A token, not a Structured Field String.
    let bare = create(&gateway.base, Some("k-4"), json!({})).await;
    assert_eq!(bare.status(), 400);
    assert_eq!(reason(bare).await, "IDEMPOTENCY_KEY_MALFORMED");
    assert_eq!(upstream.call_count(), 0);
}

#[tokio::test]
async fn the_same_key_from_two_consumers_is_two_requests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("keys.toml");
    std::fs::write(
        &keys,
        keys_file(&[("alice", "pk_alice"), ("bob", "pk_bob")]),
    )
    .expect("keys");
    let upstream = spawn_scripted(pool(), book()).await;
    let extra = format!(
        "\n[routes.methods.CreateBook]\nauth = \"api_key\"\n\n[auth.api_keys]\nkeys_file = \"{}\"\n",
        keys.display()
    );
    let gateway = spawn_gateway(&keyed_toml(&upstream, "{}", &extra)).await;
    let send = |api_key: &'static str| {
        client()
            .post(format!("{}{CREATE}", gateway.base))
            .header("x-api-key", api_key)
            .header("idempotency-key", "\"shared\"")
            .json(&json!({"title": "Dune"}))
            .send()
    };
    assert_eq!(send("pk_alice").await.expect("alice").status(), 200);
    let bob = send("pk_bob").await.expect("bob");
    assert_eq!(bob.status(), 200);
    assert!(
        bob.headers().get("idempotency-replayed").is_none(),
        "not alice's answer"
    );
    assert_eq!(upstream.call_count(), 2);
    let alice_again = send("pk_alice").await.expect("alice");
    assert_eq!(alice_again.headers()["idempotency-replayed"], "true");
    // A replay still needs the caller's credential.
    let anonymous = create(&gateway.base, Some("\"shared\""), json!({"title": "Dune"})).await;
    assert_eq!(anonymous.status(), 401);
    assert_eq!(upstream.call_count(), 2);
}

/// A keys file with these `(consumer, key)` pairs, stored as SHA-256 hex.
fn keys_file(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(consumer, key)| {
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
            let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
            format!("[[keys]]\nconsumer = \"{consumer}\"\nsha256 = \"{hex}\"\n")
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_stored_answer_expires_after_its_ttl() {
    let upstream = spawn_scripted(pool(), book()).await;
    let gateway = spawn_gateway(&keyed_toml(&upstream, "{ ttl = \"10m\" }", "")).await;
    create(&gateway.base, Some("\"k-5\""), json!({"title": "Dune"})).await;
    tokio::time::advance(Duration::from_secs(9 * 60)).await;
    let within = create(&gateway.base, Some("\"k-5\""), json!({"title": "Dune"})).await;
    assert_eq!(within.headers()["idempotency-replayed"], "true");
    tokio::time::advance(Duration::from_secs(61)).await;
    let after = create(&gateway.base, Some("\"k-5\""), json!({"title": "Dune"})).await;
    assert!(after.headers().get("idempotency-replayed").is_none());
    assert_eq!(upstream.call_count(), 2, "the expired key ran again");
}

#[tokio::test]
async fn an_unavailable_upstream_releases_the_key_and_a_business_refusal_is_stored() {
    let upstream = spawn_scripted(
        pool(),
        Reply::Status {
            code: 14,
            message: "try later".into(),
            details: None,
        },
    )
    .await;
    let gateway = spawn_gateway(&keyed_toml(&upstream, "{}", "")).await;
    let failed = create(&gateway.base, Some("\"k-6\""), json!({"title": "Dune"})).await;
    assert_eq!(failed.status(), 503);
    upstream.set_reply(book());
    let retried = create(&gateway.base, Some("\"k-6\""), json!({"title": "Dune"})).await;
    assert_eq!(retried.status(), 200, "the failure did not hold the key");
    assert!(retried.headers().get("idempotency-replayed").is_none());

    upstream.set_reply(Reply::Status {
        code: 6,
        message: "that book exists".into(),
        details: None,
    });
    let refused = create(&gateway.base, Some("\"k-7\""), json!({"title": "Dune"})).await;
    assert_eq!(refused.status(), 409);
    let refused_body = refused.bytes().await.expect("body");
    upstream.set_reply(book());
    let replayed = create(&gateway.base, Some("\"k-7\""), json!({"title": "Dune"})).await;
    assert_eq!(replayed.status(), 409, "the service's own answer replays");
    assert_eq!(replayed.headers()["idempotency-replayed"], "true");
    assert_eq!(replayed.bytes().await.expect("body"), refused_body);
    assert_eq!(upstream.call_count(), 3);
}

#[tokio::test]
async fn the_memory_store_keeps_at_most_max_entries_and_no_answer_over_max_answer_bytes() {
    let upstream = spawn_scripted(pool(), book()).await;
    let extra = "\n[idempotency]\nmax_entries = 2\nmax_answer_bytes = 2000\n";
    let gateway = spawn_gateway(&keyed_toml(&upstream, "{}", extra)).await;
    for key in ["\"a\"", "\"b\"", "\"c\""] {
        create(&gateway.base, Some(key), json!({"title": "Dune"})).await;
    }
    let store = gateway
        .gateway
        .snapshot()
        .idempotency
        .clone()
        .expect("store");
    assert_eq!(store.memory_entries(), 2);
    let oldest = create(&gateway.base, Some("\"a\""), json!({"title": "Dune"})).await;
    assert!(
        oldest.headers().get("idempotency-replayed").is_none(),
        "evicted"
    );
    let newest = create(&gateway.base, Some("\"c\""), json!({"title": "Dune"})).await;
    assert_eq!(newest.headers()["idempotency-replayed"], "true");
    assert_eq!(upstream.call_count(), 4);

    upstream.set_reply(Reply::Json(json!({"title": "x".repeat(4000)})));
    create(&gateway.base, Some("\"big\""), json!({"title": "Dune"})).await;
    let big_again = create(&gateway.base, Some("\"big\""), json!({"title": "Dune"})).await;
    assert!(
        big_again.headers().get("idempotency-replayed").is_none(),
        "not stored"
    );
    assert_eq!(upstream.call_count(), 6);
    assert_eq!(
        store
            .counters()
            .too_large
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

// === Redis ===

/// A real redis-server on a Unix socket in a temporary directory (no TCP
/// port), stopped by PID when dropped.
struct RedisServer {
    child: tokio::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    async fn start() -> RedisServer {
        use tokio::io::AsyncBufReadExt;
        let program =
            support::installed_program("redis-server", &["/usr/bin/redis-server"], "redis-server");
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("redis.sock");
        let mut child = tokio::process::Command::new(program)
            .args(["--port", "0", "--unixsocket"])
            .arg(&socket)
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(dir.path())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        loop {
            let line = lines.next_line().await.expect("redis-server output");
            let line = line.expect("redis-server exited before it was ready");
            if line
                .to_ascii_lowercase()
                .contains("ready to accept connections")
            {
                break;
            }
        }
        // Keep draining its log so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        RedisServer {
            url: format!("redis+unix://{}", socket.display()),
            child,
            _dir: dir,
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

#[tokio::test]
async fn two_gateways_share_keys_through_redis() {
    let redis = RedisServer::start().await;
    let upstream = spawn_scripted(pool(), book()).await;
    let extra = format!("\n[idempotency]\nredis = \"{}\"\n", redis.url);
    let toml = keyed_toml(&upstream, "{}", &extra);
    let (one, two) = (spawn_gateway(&toml).await, spawn_gateway(&toml).await);
    let first = create(&one.base, Some("\"r-1\""), json!({"title": "Dune"})).await;
    assert_eq!(first.status(), 200);
    let first_body = first.bytes().await.expect("body");
    let elsewhere = create(&two.base, Some("\"r-1\""), json!({"title": "Dune"})).await;
    assert_eq!(elsewhere.headers()["idempotency-replayed"], "true");
    assert_eq!(elsewhere.bytes().await.expect("body"), first_body);
    let reused = create(&two.base, Some("\"r-1\""), json!({"title": "Emma"})).await;
    assert_eq!(reused.status(), 422);
    assert_eq!(upstream.call_count(), 1);
    let store = one.gateway.snapshot().idempotency.clone().expect("store");
    assert_eq!(store.memory_entries(), 0, "the keys live in Redis");
}

#[tokio::test]
async fn with_redis_down_each_gateway_falls_back_to_its_memory_store() {
    let redis = RedisServer::start().await;
    let url = redis.url.clone();
    drop(redis);
    let upstream = spawn_scripted(pool(), book()).await;
    let extra = format!("\n[idempotency]\nredis = \"{url}\"\n");
    let gateway = spawn_gateway(&keyed_toml(&upstream, "{}", &extra)).await;
    let first = create(&gateway.base, Some("\"d-1\""), json!({"title": "Dune"})).await;
    assert_eq!(first.status(), 200, "no 5xx for a Redis outage");
    let retry = create(&gateway.base, Some("\"d-1\""), json!({"title": "Dune"})).await;
    assert_eq!(retry.headers()["idempotency-replayed"], "true");
    assert_eq!(upstream.call_count(), 1);
    let store = gateway
        .gateway
        .snapshot()
        .idempotency
        .clone()
        .expect("store");
    assert!(
        store
            .counters()
            .redis_failures
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2
    );
}
