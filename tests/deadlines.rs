//! Deadlines over real sockets: the upstream is given what is left of the
//! request's one budget, routes and methods cap it, and running out answers
//! 504 on time and cancels the upstream call.
//!
//! Every test that measures time runs on tokio's paused clock: time moves
//! only when every task waits on a timer, so a loaded machine cannot make a
//! budget look spent, and the margins are exact.

mod support;

use std::time::Duration;

use http::HeaderValue;
use protogate::upstream::deadline::decode;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The `grpc-timeout` the upstream saw on its `index`th call.
fn upstream_timeout(scripted: &Scripted, index: usize) -> Duration {
    let calls = scripted.calls();
    let value = calls[index]
        .headers
        .get("grpc-timeout")
        .expect("the upstream is always given a grpc-timeout");
    decode(value).expect("the gateway sends a well-formed grpc-timeout")
}

async fn post_echo(gateway: &TestGateway, path: &str, timeout: Option<&str>) -> reqwest::Response {
    let mut request = client()
        .post(format!("{}{path}", gateway.base))
        .header("content-type", "application/json")
        .body("{}");
    if let Some(timeout) = timeout {
        request = request.header("grpc-timeout", timeout);
    }
    request.send().await.expect("send")
}

#[tokio::test(start_paused = true)]
async fn upstream_gets_the_client_timeout_minus_the_time_spent() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, "")).await;
    let response = post_echo(&gateway, "/v1/echo", Some("800m")).await;
    assert_eq!(response.status(), 200);
    let seen = upstream_timeout(&scripted, 0);
    assert!(seen <= Duration::from_millis(800), "{seen:?}");
    assert!(seen > Duration::from_millis(700), "{seen:?}");
}

#[tokio::test(start_paused = true)]
async fn time_spent_reading_a_slow_body_is_deducted_from_the_upstream_timeout() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, "")).await;
    let mut socket = TcpStream::connect(gateway.addr).await.expect("connect");
    socket.set_nodelay(true).expect("nodelay");
    let body = br#"{"stringValue":"slow"}"#;
    let head = format!(
        "POST /v1/echo HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n\
         grpc-timeout: 1S\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).await.expect("head");
    socket.write_all(&body[..5]).await.expect("first bytes");
    tokio::time::sleep(Duration::from_millis(300)).await;
    socket.write_all(&body[5..]).await.expect("rest");
    let mut answer = String::new();
    socket.read_to_string(&mut answer).await.expect("answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = upstream_timeout(&scripted, 0);
    assert!(seen <= Duration::from_millis(700), "{seen:?}");
    assert!(seen > Duration::from_millis(600), "{seen:?}");
}

#[tokio::test(start_paused = true)]
async fn route_timeout_caps_a_larger_client_timeout() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, "timeout = \"2s\"")).await;
    let response = post_echo(&gateway, "/v1/echo", Some("1H")).await;
    assert_eq!(response.status(), 200);
    let seen = upstream_timeout(&scripted, 0);
    assert!(seen <= Duration::from_secs(2), "{seen:?}");
    assert!(seen > Duration::from_millis(1500), "{seen:?}");
}

#[tokio::test(start_paused = true)]
async fn route_timeout_applies_without_a_client_timeout() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, "timeout = \"2s\"")).await;
    let response = post_echo(&gateway, "/v1/echo", None).await;
    assert_eq!(response.status(), 200);
    let seen = upstream_timeout(&scripted, 0);
    assert!(seen <= Duration::from_secs(2), "{seen:?}");
    assert!(seen > Duration::from_millis(1500), "{seen:?}");
}

#[tokio::test(start_paused = true)]
async fn method_timeout_overrides_the_route_timeout() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let extra = "timeout = \"2s\"\n[routes.methods.Echo]\ntimeout = \"400ms\"\n";
    let gateway = spawn_gateway(&everything_toml(scripted.addr, extra)).await;
    // Echo has its own budget; EchoQuery (GET /v1/echo) keeps the route's.
    assert_eq!(
        post_echo(&gateway, "/v1/echo", Some("1H")).await.status(),
        200
    );
    let response = client()
        .get(format!("{}/v1/echo", gateway.base))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let echo = upstream_timeout(&scripted, 0);
    assert!(echo <= Duration::from_millis(400), "{echo:?}");
    assert!(echo > Duration::from_millis(300), "{echo:?}");
    let query = upstream_timeout(&scripted, 1);
    assert!(query <= Duration::from_secs(2), "{query:?}");
    assert!(query > Duration::from_millis(1500), "{query:?}");
}

#[tokio::test(start_paused = true)]
async fn slow_upstream_yields_504_near_the_deadline_and_its_call_is_cancelled() {
    let scripted = spawn_scripted(
        pool(),
        Reply::Delay(Duration::from_secs(5), Box::new(Reply::Echo)),
    )
    .await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, "timeout = \"300ms\"")).await;
    let started = Instant::now();
    let response = post_echo(&gateway, "/v1/echo", None).await;
    let elapsed = started.elapsed();
    assert_eq!(response.status(), 504);
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(600), "{elapsed:?}");
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["code"], 4);
    assert_eq!(body["details"][0]["reason"], "DEADLINE_EXHAUSTED");
    assert_eq!(scripted.call_count(), 1);
    // The gateway reset the stream; the upstream saw the call cancelled.
    let waited = Instant::now();
    while scripted.cancelled.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(
            waited.elapsed() < Duration::from_secs(1),
            "the upstream never saw the cancellation"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        scripted.cancelled.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    // Only the stream was reset: the one connection keeps serving.
    scripted.set_reply(Reply::Echo);
    assert_eq!(post_echo(&gateway, "/v1/echo", None).await.status(), 200);
    assert_eq!(
        scripted.accepted.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn client_timeout_shorter_than_the_route_decides_the_504() {
    let scripted = spawn_scripted(
        pool(),
        Reply::Delay(Duration::from_secs(5), Box::new(Reply::Echo)),
    )
    .await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, "")).await;
    let started = Instant::now();
    let response = post_echo(&gateway, "/v1/echo", Some("250m")).await;
    let elapsed = started.elapsed();
    assert_eq!(response.status(), 504);
    assert!(elapsed >= Duration::from_millis(250), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(600), "{elapsed:?}");
}

#[tokio::test]
async fn malformed_grpc_timeout_is_400_and_never_reaches_the_upstream() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, "")).await;
    for bad in ["1.5S", "soon", "123456789m", "10", "-1S", "5s"] {
        let response = post_echo(&gateway, "/v1/echo", Some(bad)).await;
        assert_eq!(response.status(), 400, "{bad}");
        assert!(response.headers().contains_key("x-request-id"));
        let body: serde_json::Value = response.json().await.expect("json");
        assert_eq!(body["code"], 3, "{bad}");
        assert_eq!(body["details"][0]["reason"], "INVALID_HEADER", "{bad}");
    }
    assert_eq!(scripted.call_count(), 0);
}

#[tokio::test]
async fn client_timeout_already_spent_is_504_without_an_upstream_call() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, "")).await;
    let response = post_echo(&gateway, "/v1/echo", Some("1n")).await;
    assert_eq!(response.status(), 504);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["details"][0]["reason"], "DEADLINE_EXHAUSTED");
    assert_eq!(scripted.call_count(), 0);
}

#[tokio::test]
async fn upstream_deadline_exceeded_status_is_504() {
    let scripted = spawn_scripted(
        pool(),
        Reply::Status {
            code: 4,
            message: "backend gave up".into(),
            details: None,
        },
    )
    .await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, "")).await;
    let response = post_echo(&gateway, "/v1/echo", Some("2S")).await;
    assert_eq!(response.status(), 504);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(
        body,
        serde_json::json!({"code": 4, "message": "backend gave up", "details": []})
    );
}

#[tokio::test(start_paused = true)]
async fn client_grpc_timeout_is_replaced_not_forwarded() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, "timeout = \"1s\"")).await;
    assert_eq!(
        post_echo(&gateway, "/v1/echo", Some("3S")).await.status(),
        200
    );
    let calls = scripted.calls();
    let values: Vec<&HeaderValue> = calls[0].headers.get_all("grpc-timeout").iter().collect();
    assert_eq!(values.len(), 1, "{values:?}");
    assert_ne!(values[0], "3S");
    assert!(decode(values[0]).expect("valid") <= Duration::from_secs(1));
}
