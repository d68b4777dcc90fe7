//! Retries that are safe: idempotent calls are retried on UNAVAILABLE on
//! another endpoint, with `grpc-previous-rpc-attempts`, inside the one
//! deadline; writes are retried only when the upstream provably did not
//! process them (REFUSED_STREAM) or when the route says so; and the retry
//! budget keeps a failing upstream's load close to the client's.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response};
use serde_json::json;
use support::*;
use tokio::net::TcpListener;

/// What each call said in `grpc-previous-rpc-attempts` ("-": nothing).
fn previous_attempts(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .map(|c| {
            c.headers
                .get("grpc-previous-rpc-attempts")
                .map_or("-".to_string(), |v| v.to_str().expect("ascii").to_string())
        })
        .collect()
}

/// The status of one GET of `/v1/echo`.
async fn get_echo(gateway: &TestGateway, value: &str) -> u16 {
    client()
        .get(format!("{}/v1/echo?string_value={value}", gateway.base))
        .send()
        .await
        .expect("send")
        .status()
        .as_u16()
}

fn unavailable() -> Reply {
    Reply::Status {
        code: 14,
        message: "try elsewhere".into(),
        details: None,
    }
}

#[tokio::test]
async fn an_idempotent_get_that_meets_unavailable_is_retried_on_another_endpoint() {
    let failing = spawn_scripted(pool(), unavailable()).await;
    let healthy = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml_on(&[failing.addr, healthy.addr], "", "")).await;
    for i in 0..20 {
        assert_eq!(
            get_echo(&gateway, &format!("n{i}")).await,
            200,
            "request {i}"
        );
    }
    assert!(
        failing.call_count() > 0,
        "p2c sent some first attempts to the failing endpoint"
    );
    assert_eq!(
        healthy.call_count(),
        20,
        "every request ended on the healthy endpoint"
    );
    let retries: Vec<_> = healthy
        .calls()
        .into_iter()
        .filter(|c| c.headers.contains_key("grpc-previous-rpc-attempts"))
        .collect();
    assert_eq!(
        retries.len(),
        failing.call_count(),
        "one retry per failed first attempt"
    );
    for call in &retries {
        assert_eq!(call.headers["grpc-previous-rpc-attempts"], "1");
    }
    for call in failing.calls() {
        assert!(!call.headers.contains_key("grpc-previous-rpc-attempts"));
    }
}

#[tokio::test]
async fn a_post_that_meets_unavailable_is_not_retried() {
    let failing = spawn_scripted(pool(), unavailable()).await;
    let gateway = spawn_gateway(&everything_toml(failing.addr, "")).await;
    let answer = client()
        .post(format!("{}/v1/echo", gateway.base))
        .json(&json!({"stringValue": "once"}))
        .send()
        .await
        .expect("send");
    assert_eq!(answer.status(), 503);
    assert_eq!(
        failing.call_count(),
        1,
        "a write that may have been processed is not repeated"
    );
}

#[tokio::test]
async fn a_route_that_lists_unavailable_retries_its_posts_up_to_its_attempts() {
    let failing = spawn_scripted(pool(), unavailable()).await;
    let gateway = spawn_gateway(&everything_toml(
        failing.addr,
        "retry = { on = [\"unavailable\"], attempts = 4 }",
    ))
    .await;
    let answer = client()
        .post(format!("{}/v1/echo", gateway.base))
        .json(&json!({"stringValue": "again"}))
        .send()
        .await
        .expect("send");
    assert_eq!(answer.status(), 503);
    assert_eq!(previous_attempts(&failing.calls()), ["-", "1", "2", "3"]);
}

#[tokio::test]
async fn attempts_one_turns_retries_off_even_for_gets() {
    let failing = spawn_scripted(pool(), unavailable()).await;
    let gateway = spawn_gateway(&everything_toml(failing.addr, "retry = { attempts = 1 }")).await;
    assert_eq!(get_echo(&gateway, "x").await, 503);
    assert_eq!(failing.call_count(), 1);
}

#[tokio::test]
async fn every_attempt_carries_the_remaining_budget_not_a_fresh_one() {
    let failing = spawn_scripted(
        pool(),
        Reply::Delay(
            std::time::Duration::from_millis(300),
            Box::new(unavailable()),
        ),
    )
    .await;
    let gateway = spawn_gateway(&everything_toml(failing.addr, "timeout = \"2s\"")).await;
    assert_eq!(get_echo(&gateway, "x").await, 503);
    let budgets: Vec<u64> = failing
        .calls()
        .iter()
        .map(|c| {
            let value = c.headers["grpc-timeout"].to_str().expect("ascii");
            let decoded = protogate::upstream::deadline::decode(&value.parse().expect("value"))
                .expect("grpc-timeout");
            decoded.as_millis() as u64
        })
        .collect();
    assert_eq!(budgets.len(), 3, "three attempts: {budgets:?}");
    assert!(budgets[0] <= 2000);
    for pair in budgets.windows(2) {
        assert!(
            pair[1] + 300 <= pair[0],
            "each attempt has what the earlier ones left: {budgets:?}"
        );
    }
}

#[tokio::test]
async fn with_every_endpoint_unavailable_retries_stay_within_the_budget() {
    let a = spawn_scripted(pool(), unavailable()).await;
    let b = spawn_scripted(pool(), unavailable()).await;
    let c = spawn_scripted(pool(), unavailable()).await;
    // A floor of 1 retry a second over a 10 s window: 10 retries whatever
    // the share, then 20 % of the calls.
    let gateway = spawn_gateway(&everything_toml_on(
        &[a.addr, b.addr, c.addr],
        "retry_budget = { percent = 20, min_per_second = 1, window = \"10s\" }\n\
         outlier = { consecutive_unavailable = 0 }",
        "",
    ))
    .await;
    let requests = 300;
    let http = client();
    let mut statuses = Vec::new();
    for batch in (0..requests).collect::<Vec<_>>().chunks(16) {
        let sends = batch.iter().map(|i| {
            let http = http.clone();
            let url = format!("{}/v1/echo?string_value=n{i}", gateway.base);
            async move { http.get(url).send().await.expect("send").status() }
        });
        statuses.extend(futures_util::future::join_all(sends).await);
    }
    assert!(statuses.iter().all(|s| *s == 503));
    let upstream_calls = a.call_count() + b.call_count() + c.call_count();
    let floor = 10;
    assert!(
        upstream_calls as f64 <= 1.2 * requests as f64 + floor as f64,
        "{upstream_calls} upstream calls for {requests} requests"
    );
    assert!(
        upstream_calls > requests,
        "some retries were made: {upstream_calls}"
    );
}

/// A raw HTTP/2 gRPC upstream that resets its first `refuse` streams with
/// REFUSED_STREAM (as a server at its stream limit or shutting down does)
/// and echoes the request message on the rest; counts both.
async fn spawn_refusing(refuse: usize) -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let refused = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));
    let (refused_count, served_count) = (refused.clone(), served.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (refused, served) = (refused_count.clone(), served_count.clone());
            tokio::spawn(async move {
                let Ok(mut connection) = h2::server::handshake(stream).await else {
                    return;
                };
                while let Some(Ok((request, mut respond))) = connection.accept().await {
                    if refused.fetch_add(1, Ordering::SeqCst) < refuse {
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                        continue;
                    }
                    refused.fetch_sub(1, Ordering::SeqCst);
                    served.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(echo(request, respond));
                }
            });
        }
    });
    (addr, refused, served)
}

async fn echo(
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
) {
    let mut body = request.into_body();
    let mut message = Vec::new();
    while let Some(Ok(chunk)) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.len());
        message.extend_from_slice(&chunk);
    }
    let mut head = Response::new(());
    head.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    let Ok(mut send) = respond.send_response(head, false) else {
        return;
    };
    let _ = send.send_data(Bytes::from(message), false);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let _ = send.send_trailers(trailers);
}

#[tokio::test]
async fn a_post_refused_with_refused_stream_is_retried_because_it_was_not_processed() {
    let (addr, refused, served) = spawn_refusing(2).await;
    let gateway = spawn_gateway(&everything_toml(addr, "")).await;
    let answer = client()
        .post(format!("{}/v1/echo", gateway.base))
        .json(&json!({"stringValue": "exactly once"}))
        .send()
        .await
        .expect("send");
    assert_eq!(answer.status(), 200);
    let body: serde_json::Value = answer.json().await.expect("json");
    assert_eq!(body["stringValue"], "exactly once");
    assert_eq!(refused.load(Ordering::SeqCst), 2, "two streams refused");
    assert_eq!(served.load(Ordering::SeqCst), 1, "processed exactly once");
}
