//! JWKS providers against a real issuer on a socket whose key set, speed
//! and availability the tests change mid-run: keys are fetched at start-up
//! and in the background, rotation needs no restart, a removed key stops
//! verifying, the last good keys outlive an outage (and a config reload
//! during one), a slow or oversize JWKS is refused, and a flood of unknown
//! `kid`s costs the issuer exactly one fetch while every caller is answered
//! within the fetch timeout.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "api";

/// The flood test measures latency on a small box: it runs alone (write),
/// the other tests of this file beside each other (read).
static FLOOD: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

fn claims(sub: &str) -> Value {
    let now = unix_now();
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 300})
}

/// The scripted Echo upstream and a gateway whose `POST /v1/echo` needs a
/// token from provider `idp`, which reads keys from `jwks_url` with the
/// extra provider lines `extra` (durations, caps).
async fn setup(jwks_url: &str, extra: &str) -> (Scripted, TestGateway) {
    let tables = format!(
        r#"
[auth.providers.idp]
issuer = "{ISSUER}"
audiences = ["{AUDIENCE}"]
algorithms = ["ES256", "RS256"]
jwks_url = "{jwks_url}"
claims_to_metadata = {{ sub = "x-user-id" }}
{extra}
"#
    );
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&auth_toml(scripted.addr, "auth = \"idp\"", &tables)).await;
    (scripted, gateway)
}

/// `POST /v1/echo` with `Authorization: Bearer <token>`.
async fn echo_with(gateway: &TestGateway, token: &str) -> reqwest::Response {
    client()
        .post(format!("{}/v1/echo", gateway.base))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(r#"{"stringValue":"hi"}"#)
        .send()
        .await
        .expect("send")
}

/// Sends `token` until the gateway answers `status`, failing after `within`.
/// Only for tokens with a known kid (an unknown one would cause refetches).
async fn await_status(gateway: &TestGateway, token: &str, status: u16, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let got = echo_with(gateway, token).await.status().as_u16();
        if got == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still {got} instead of {status} after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the issuer has received at least `count` requests.
async fn await_requests(server: &JwksServer, count: usize, within: Duration) {
    let deadline = Instant::now() + within;
    while server.requests() < count {
        assert!(
            Instant::now() < deadline,
            "the issuer saw {} requests, not {count}, in {within:?}",
            server.requests()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A token naming `kid`, with a signature no key could verify: enough to
/// reach the key lookup.
fn token_naming(kid: &str) -> String {
    raw_token(
        &json!({"alg": "ES256", "typ": "JWT", "kid": kid}).to_string(),
        &claims("mallory").to_string(),
        &[7u8; 64],
    )
}

fn random_kid() -> String {
    let bits: u128 = rand::random();
    format!("{bits:032x}")
}

#[tokio::test]
async fn jwks_keys_fetched_at_start_up_verify_rs256_and_es256_tokens_without_further_fetches() {
    let _beside_others = FLOOD.read().await;
    let rsa = TestKey::rsa(jsonwebtoken::Algorithm::RS256, "r1");
    let ec = TestKey::ec("e1");
    let server = JwksServer::start(jwks_of(&[&rsa, &ec])).await;
    let (scripted, gateway) = setup(&server.url, "").await;
    await_status(
        &gateway,
        &ec.sign(&claims("ec-user")),
        200,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(server.requests(), 1);
    let response = echo_with(&gateway, &rsa.sign(&claims("rsa-user"))).await;
    assert_eq!(response.status(), 200);
    let calls = scripted.calls();
    let last = calls.last().expect("called");
    assert_eq!(last.headers["x-user-id"], "rsa-user");
    for _ in 0..5 {
        assert_eq!(
            echo_with(&gateway, &ec.sign(&claims("ec-user")))
                .await
                .status(),
            200
        );
    }
    assert_eq!(server.requests(), 1, "known kids never cause a fetch");
}

#[tokio::test]
async fn an_unknown_kid_is_refused_after_one_refetch_and_refetches_again_only_after_the_cooldown() {
    let _beside_others = FLOOD.read().await;
    let key = TestKey::ec("a");
    let server = JwksServer::start(jwks_of(&[&key])).await;
    let (scripted, gateway) = setup(&server.url, "jwks_cooldown = \"1500ms\"").await;
    await_status(
        &gateway,
        &key.sign(&claims("alice")),
        200,
        Duration::from_secs(5),
    )
    .await;
    let admitted = scripted.call_count();
    // The start-up fetch counts against the cool-down.
    tokio::time::sleep(Duration::from_millis(1600)).await;

    let before = server.requests();
    let description = assert_unauthorized(
        echo_with(&gateway, &token_naming("nope")).await,
        "CREDENTIALS_INVALID",
    )
    .await;
    assert!(description.contains("unknown key id"), "{description}");
    assert_eq!(server.requests(), before + 1);
    let refetched = Instant::now();
    // Ten more unknown kids at once, on one client so they all land well
    // inside the cool-down even on a busy box.
    let http = client();
    let burst = (0..10).map(|_| {
        http.post(format!("{}/v1/echo", gateway.base))
            .header("content-type", "application/json")
            .header(
                "authorization",
                format!("Bearer {}", token_naming(&random_kid())),
            )
            .body("{}")
            .send()
    });
    let answers = futures_util::future::join_all(burst).await;
    assert!(
        refetched.elapsed() < Duration::from_millis(1500),
        "the burst outlasted the cool-down ({:?}); the box is too busy for this test",
        refetched.elapsed()
    );
    for answer in answers {
        assert_unauthorized(answer.expect("send"), "CREDENTIALS_INVALID").await;
    }
    assert_eq!(server.requests(), before + 1, "within the cool-down");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_unauthorized(
        echo_with(&gateway, &token_naming("nope")).await,
        "CREDENTIALS_INVALID",
    )
    .await;
    assert_eq!(server.requests(), before + 2, "after the cool-down");
    assert_eq!(scripted.call_count(), admitted);
}

#[tokio::test]
async fn a_key_rotated_into_the_jwks_is_accepted_without_a_restart() {
    let _beside_others = FLOOD.read().await;
    let old = TestKey::ec("2024");
    let new = TestKey::ec("2025");
    let server = JwksServer::start(jwks_of(&[&old])).await;
    let (scripted, gateway) = setup(&server.url, "jwks_cooldown = \"300ms\"").await;
    await_status(
        &gateway,
        &old.sign(&claims("alice")),
        200,
        Duration::from_secs(5),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(350)).await;
    let token = new.sign(&claims("bob"));
    assert_unauthorized(echo_with(&gateway, &token).await, "CREDENTIALS_INVALID").await;

    server.set_body(jwks_of(&[&old, &new]));
    tokio::time::sleep(Duration::from_millis(350)).await;
    let before = server.requests();
    let response = echo_with(&gateway, &token).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        server.requests(),
        before + 1,
        "one refetch found the new key"
    );
    let calls = scripted.calls();
    assert_eq!(calls.last().expect("called").headers["x-user-id"], "bob");
    assert_eq!(
        echo_with(&gateway, &old.sign(&claims("alice")))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn a_key_removed_from_the_jwks_is_refused_after_the_next_refresh() {
    let _beside_others = FLOOD.read().await;
    let old = TestKey::ec("old");
    let new = TestKey::ec("new");
    let server = JwksServer::start(jwks_of(&[&old, &new])).await;
    let (scripted, gateway) = setup(&server.url, "jwks_refresh = \"300ms\"").await;
    let old_token = old.sign(&claims("alice"));
    await_status(&gateway, &old_token, 200, Duration::from_secs(5)).await;

    server.set_body(jwks_of(&[&new]));
    let before = server.requests();
    await_status(&gateway, &old_token, 401, Duration::from_secs(5)).await;
    assert!(server.requests() > before, "a refresh happened");
    let admitted = scripted.call_count();
    assert_unauthorized(echo_with(&gateway, &old_token).await, "CREDENTIALS_INVALID").await;
    assert_eq!(
        echo_with(&gateway, &new.sign(&claims("bob")))
            .await
            .status(),
        200
    );
    assert_eq!(scripted.call_count(), admitted + 1);
}

#[tokio::test]
async fn a_jwks_down_at_start_up_answers_503_until_its_keys_arrive_then_200() {
    let _beside_others = FLOOD.read().await;
    let key = TestKey::ec("a");
    let server = JwksServer::start(jwks_of(&[&key])).await;
    server.set_mode(JwksMode::Down);
    let (scripted, gateway) = setup(&server.url, "jwks_refresh = \"1s\"").await;
    await_requests(&server, 1, Duration::from_secs(5)).await;
    let token = key.sign(&claims("alice"));
    assert_keys_unavailable(echo_with(&gateway, &token).await).await;
    // An unknown kid cannot make the gateway fetch outside its schedule.
    let seen = server.requests();
    assert_keys_unavailable(echo_with(&gateway, &token_naming("other")).await).await;
    assert!(server.requests() <= seen + 1);
    // No credential at all is still the caller's fault.
    let bare = client()
        .post(format!("{}/v1/echo", gateway.base))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("send");
    assert_unauthorized(bare, "CREDENTIALS_MISSING").await;
    assert_eq!(scripted.call_count(), 0);

    server.set_mode(JwksMode::Up);
    await_status(&gateway, &token, 200, Duration::from_secs(5)).await;
    assert_eq!(scripted.call_count(), 1);
}

#[tokio::test]
async fn the_last_good_keys_are_kept_while_the_issuer_is_down_or_serves_garbage() {
    let _beside_others = FLOOD.read().await;
    let key = TestKey::ec("a");
    let server = JwksServer::start(jwks_of(&[&key])).await;
    let (_scripted, gateway) = setup(&server.url, "jwks_refresh = \"200ms\"").await;
    let token = key.sign(&claims("alice"));
    await_status(&gateway, &token, 200, Duration::from_secs(5)).await;

    server.set_mode(JwksMode::Down);
    let seen = server.requests();
    await_requests(&server, seen + 2, Duration::from_secs(5)).await;
    assert_eq!(echo_with(&gateway, &token).await.status(), 200);

    server.set_mode(JwksMode::Up);
    for garbage in [
        "not json",
        r#"{"keys": []}"#,
        r#"{"keys": [{"kty": "EC"}]}"#,
    ] {
        server.set_body(garbage.to_string());
        let seen = server.requests();
        await_requests(&server, seen + 2, Duration::from_secs(5)).await;
        assert_eq!(echo_with(&gateway, &token).await.status(), 200, "{garbage}");
    }
}

#[tokio::test]
async fn a_jwks_fetch_slower_than_jwks_timeout_is_abandoned_and_known_kids_never_wait_for_it() {
    let _beside_others = FLOOD.read().await;
    let key = TestKey::ec("a");
    let server = JwksServer::start(jwks_of(&[&key])).await;
    let (_scripted, gateway) = setup(
        &server.url,
        "jwks_timeout = \"1500ms\"\njwks_cooldown = \"100ms\"",
    )
    .await;
    let token = key.sign(&claims("alice"));
    await_status(&gateway, &token, 200, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(150)).await;

    server.set_mode(JwksMode::Delay(Duration::from_secs(10)));
    let before = server.requests();
    let unknown = {
        let request = client()
            .post(format!("{}/v1/echo", gateway.base))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {}", token_naming("new")))
            .body("{}");
        tokio::spawn(async move {
            let started = Instant::now();
            let response = request.send().await.expect("send");
            (started.elapsed(), response)
        })
    };
    await_requests(&server, before + 1, Duration::from_secs(1)).await;
    // While that refetch hangs, a known kid is verified at once.
    let started = Instant::now();
    assert_eq!(echo_with(&gateway, &token).await.status(), 200);
    let known = started.elapsed();
    assert!(known < Duration::from_secs(1), "{known:?}");

    let (waited, response) = unknown.await.expect("task");
    assert_unauthorized(response, "CREDENTIALS_INVALID").await;
    assert!(
        waited >= Duration::from_millis(1400),
        "{waited:?}: the fetch was not waited for"
    );
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    assert_eq!(server.requests(), before + 1);
}

#[tokio::test]
async fn a_jwks_over_jwks_max_bytes_is_refused_and_a_small_one_accepted() {
    let _beside_others = FLOOD.read().await;
    let key = TestKey::ec("a");
    let document = jwks_of(&[&key]);
    assert!(document.len() < 1024);
    let padded = format!("{document}{}", " ".repeat(8192));
    let server = JwksServer::start(padded).await;
    let (scripted, gateway) = setup(
        &server.url,
        "jwks_max_bytes = 2048\njwks_refresh = \"500ms\"",
    )
    .await;
    await_requests(&server, 2, Duration::from_secs(5)).await;
    let token = key.sign(&claims("alice"));
    assert_keys_unavailable(echo_with(&gateway, &token).await).await;
    assert_eq!(scripted.call_count(), 0);

    server.set_body(document);
    await_status(&gateway, &token, 200, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_max_age_shorter_than_jwks_refresh_brings_the_next_refresh_forward() {
    let _beside_others = FLOOD.read().await;
    let old = TestKey::ec("old");
    let new = TestKey::ec("new");
    let server = JwksServer::start(jwks_of(&[&old, &new])).await;
    server.set_cache_control(Some("public, max-age=1"));
    let (_scripted, gateway) = setup(
        &server.url,
        "jwks_refresh = \"5m\"\njwks_cooldown = \"200ms\"",
    )
    .await;
    let old_token = old.sign(&claims("alice"));
    await_status(&gateway, &old_token, 200, Duration::from_secs(5)).await;
    server.set_body(jwks_of(&[&new]));
    await_status(&gateway, &old_token, 401, Duration::from_secs(4)).await;
}

#[tokio::test]
async fn a_max_age_longer_than_jwks_refresh_keeps_the_refresh_interval_when_the_cooldown_is_longer()
{
    let _beside_others = FLOOD.read().await;
    // jwks_refresh (500ms) < jwks_cooldown (default 30s) < max-age (60s).
    let old = TestKey::ec("old");
    let new = TestKey::ec("new");
    let server = JwksServer::start(jwks_of(&[&old, &new])).await;
    server.set_cache_control(Some("max-age=60"));
    let (_scripted, gateway) = setup(&server.url, "jwks_refresh = \"500ms\"").await;
    let old_token = old.sign(&claims("alice"));
    await_status(&gateway, &old_token, 200, Duration::from_secs(5)).await;
    server.set_body(jwks_of(&[&new]));
    await_status(&gateway, &old_token, 401, Duration::from_secs(5)).await;
    assert!(server.requests() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_1000_random_kids_costs_the_issuer_one_fetch_and_every_caller_is_answered_within_the_timeout()
 {
    let _alone = FLOOD.write().await;
    let key = TestKey::ec("a");
    let server = JwksServer::start(jwks_of(&[&key])).await;
    let (scripted, gateway) =
        setup(&server.url, "jwks_timeout = \"2s\"\njwks_cooldown = \"1s\"").await;
    await_status(
        &gateway,
        &key.sign(&claims("alice")),
        200,
        Duration::from_secs(5),
    )
    .await;
    let admitted = scripted.call_count();
    // Let the start-up fetch's cool-down pass, then make the issuer slow.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    server.set_mode(JwksMode::Delay(Duration::from_secs(10)));
    let before = server.requests();

    // Raw sockets, so the measurement is the gateway's and not a client's.
    let requests: Vec<Vec<u8>> = (0..1000)
        .map(|_| {
            format!(
                "POST /v1/echo HTTP/1.1\r\nhost: gateway.test\r\ncontent-type: application/json\r\n\
                 content-length: 2\r\nconnection: close\r\nauthorization: Bearer {}\r\n\r\n{{}}",
                token_naming(&random_kid())
            )
            .into_bytes()
        })
        .collect();
    let addr = gateway.addr;
    let started = Instant::now();
    let calls: Vec<_> = requests
        .into_iter()
        .map(|request| {
            tokio::spawn(async move {
                let sent = Instant::now();
                let mut socket = TcpStream::connect(addr).await.expect("connect");
                socket.write_all(&request).await.expect("write");
                let mut answer = Vec::new();
                socket.read_to_end(&mut answer).await.expect("read");
                (
                    sent.elapsed(),
                    String::from_utf8(answer).expect("utf-8 answer"),
                )
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    let mut answers = Vec::with_capacity(calls.len());
    for call in calls {
        let (waited, answer) = call.await.expect("task");
        slowest = slowest.max(waited);
        answers.push(answer);
    }
    let all = started.elapsed();
    eprintln!("1000 callers answered in {all:?}; the slowest waited {slowest:?}");
    for answer in &answers {
        let (head, body) = answer.split_once("\r\n\r\n").expect("a whole answer");
        assert!(head.starts_with("HTTP/1.1 401 "), "{head}");
        let challenge = head
            .lines()
            .find_map(|l| l.strip_prefix("www-authenticate: "))
            .expect("a challenge");
        assert_eq!(parse_bearer_challenge(challenge)["error"], "invalid_token");
        let body: Value = serde_json::from_str(body).expect("JSON body");
        assert_eq!(body["details"][0]["reason"], "CREDENTIALS_INVALID");
    }
    // Every caller waited on the one fetch, bounded by jwks_timeout (2s):
    // none waited out a second fetch, let alone the issuer's 10 s. What is
    // over 2s is a debug build answering 1000 callers on a small box.
    assert!(
        slowest < Duration::from_secs(3),
        "a caller waited {slowest:?}"
    );
    // Nothing else trickles out afterwards either.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.requests(), before + 1, "exactly one outbound fetch");
    assert_eq!(scripted.call_count(), admitted);
}

#[tokio::test]
async fn a_config_reload_while_the_issuer_is_down_keeps_the_last_good_keys() {
    let _beside_others = FLOOD.read().await;
    let key = TestKey::ec("a");
    let server = JwksServer::start(jwks_of(&[&key])).await;
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let tables = format!(
        "\n[auth.providers.idp]\nissuer = \"{ISSUER}\"\naudiences = [\"{AUDIENCE}\"]\n\
         algorithms = [\"ES256\"]\njwks_url = \"{}\"\n",
        server.url
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("routes.toml");
    let routes = auth_toml(scripted.addr, "auth = \"idp\"", &tables).replace("{proto}", PROTO_DIR);
    std::fs::write(&path, routes).expect("write routes");
    let (gateway, handle) = spawn_gateway_from(&path).await;
    let token = key.sign(&claims("alice"));
    await_status(&gateway, &token, 200, Duration::from_secs(5)).await;

    server.set_mode(JwksMode::Down);
    handle.replace(compile_snapshot(&path).await);
    for _ in 0..5 {
        assert_eq!(echo_with(&gateway, &token).await.status(), 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(server.requests() >= 2, "the new snapshot fetched too");
}
