//! Server streams through the gateway, against a tonic upstream that
//! streams on a timer: NDJSON lines arrive one by one, SSE and JSON-array
//! framing, errors before and after the first message, deadlines, idle
//! timeouts, cancellation when the client goes away, and flow control.

mod stream_upstream;
mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use stream_upstream::*;
use support::{client, spawn_gateway};

/// Reads the response body until it holds `n` complete lines.
async fn lines(response: &mut reqwest::Response, buffer: &mut Vec<u8>, n: usize) -> Vec<String> {
    while buffer.iter().filter(|b| **b == b'\n').count() < n {
        let chunk = response
            .chunk()
            .await
            .expect("read")
            .expect("the stream ended early");
        buffer.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(buffer.clone()).expect("utf-8");
    text.lines().take(n).map(str::to_string).collect()
}

async fn rest(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.expect("read") {
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).expect("utf-8")
}

#[tokio::test]
async fn ndjson_lines_arrive_as_the_upstream_sends_them() {
    let upstream = spawn_stream_upstream().await;
    let gateway = spawn_gateway(&streaming_toml(upstream.addr, "")).await;
    let mut response = client()
        .get(format!(
            "{}/v1/ticks?count=3&hold=true&hold_after=1",
            gateway.base
        ))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert!(
        response.headers().get("content-encoding").is_none(),
        "streams are not compressed"
    );
    // The upstream holds after its first tick: the line can only be here
    // if the gateway wrote it as it came.
    let mut buffer = Vec::new();
    let first = lines(&mut response, &mut buffer, 1).await;
    assert_eq!(first, [r#"{"seq":"1","kind":"KIND_ODD"}"#]);
    assert_eq!(upstream.state.sent.load(Ordering::SeqCst), 1);
    upstream.state.hold.notify_one();
    let text = String::from_utf8(buffer).expect("utf-8") + &rest(response).await;
    assert_eq!(
        text,
        "{\"seq\":\"1\",\"kind\":\"KIND_ODD\"}\n{\"seq\":\"2\",\"kind\":\"KIND_EVEN\"}\n{\"seq\":\"3\",\"kind\":\"KIND_ODD\"}\n"
    );
}

#[tokio::test]
async fn sse_framing_is_exact() {
    let upstream = spawn_stream_upstream().await;
    let route = r#"
[routes.methods.Ticks]
sse = { id = "seq", event = "kind", retry = "2s" }"#;
    let gateway = spawn_gateway(&streaming_toml(upstream.addr, route)).await;
    let response = client()
        .get(format!("{}/v1/ticks?count=2&interval_ms=10", gateway.base))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    assert_eq!(
        rest(response).await,
        "retry: 2000\n\n\
         id: 1\nevent: KIND_ODD\ndata: {\"seq\":\"1\",\"kind\":\"KIND_ODD\"}\n\n\
         id: 2\nevent: KIND_EVEN\ndata: {\"seq\":\"2\",\"kind\":\"KIND_EVEN\"}\n\n"
    );
}

#[tokio::test]
async fn a_json_array_is_valid_when_complete() {
    let upstream = spawn_stream_upstream().await;
    let gateway = spawn_gateway(&streaming_toml(upstream.addr, "")).await;
    let response = client()
        .get(format!("{}/v1/ticks?count=3", gateway.base))
        .header("accept", "application/json")
        .send()
        .await
        .expect("send");
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: serde_json::Value =
        serde_json::from_str(&rest(response).await).expect("a JSON array");
    assert_eq!(
        body,
        serde_json::json!([
            {"seq": "1", "kind": "KIND_ODD"},
            {"seq": "2", "kind": "KIND_EVEN"},
            {"seq": "3", "kind": "KIND_ODD"}
        ])
    );
}

#[tokio::test]
async fn a_pinned_format_wins_and_an_unacceptable_one_is_a_406_before_any_call() {
    let upstream = spawn_stream_upstream().await;
    let gateway = spawn_gateway(&streaming_toml(upstream.addr, r#"stream_format = "sse""#)).await;
    let response = client()
        .get(format!("{}/v1/ticks?count=1", gateway.base))
        .send()
        .await
        .expect("send");
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    assert_eq!(
        rest(response).await,
        "data: {\"seq\":\"1\",\"kind\":\"KIND_ODD\"}\n\n"
    );
    let refused = client()
        .get(format!("{}/v1/ticks?count=1", gateway.base))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .expect("send");
    assert_eq!(refused.status(), 406);
    let body: serde_json::Value = refused.json().await.expect("json");
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("text/event-stream"),
        "{body}"
    );
    assert_eq!(upstream.state.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_error_after_the_first_message_ends_each_format_its_own_way() {
    let upstream = spawn_stream_upstream().await;
    let gateway = spawn_gateway(&streaming_toml(upstream.addr, "")).await;
    let url = format!(
        "{}/v1/ticks?count=2&fail_code=9&fail_message=shelf%20gone",
        gateway.base
    );
    let ndjson = rest(client().get(&url).send().await.expect("send")).await;
    let last: serde_json::Value =
        serde_json::from_str(ndjson.lines().last().expect("lines")).expect("json");
    assert_eq!(ndjson.lines().count(), 3, "{ndjson}");
    assert_eq!(last["error"]["code"], 9);
    assert_eq!(last["error"]["message"], "shelf gone");

    let sse = rest(
        client()
            .get(&url)
            .header("accept", "text/event-stream")
            .send()
            .await
            .expect("send"),
    )
    .await;
    let event = sse.split("\n\n").nth(2).expect("a third event");
    assert!(event.starts_with("event: error\ndata: {"), "{sse}");
    let data: serde_json::Value =
        serde_json::from_str(event.trim_start_matches("event: error\ndata: ")).expect("json");
    assert_eq!(data["code"], 9);
}

#[tokio::test]
async fn a_failed_json_array_is_closed_and_its_status_is_in_the_trailers() {
    let upstream = spawn_stream_upstream().await;
    let gateway = spawn_gateway(&streaming_toml(upstream.addr, "")).await;
    let path = "/v1/ticks?count=2&fail_code=9&fail_message=shelf%20gone";
    let (head, body, trailers) =
        h2c_get(gateway.addr, path, &[("accept", "application/json")]).await;
    assert_eq!(head.status, 200);
    let array: serde_json::Value = serde_json::from_slice(&body).expect("a closed array");
    assert_eq!(array.as_array().map(Vec::len), Some(2));
    let trailers = trailers.expect("trailers");
    assert_eq!(trailers["grpc-status"], "9");
    assert_eq!(trailers["grpc-message"], "shelf gone");
}

#[tokio::test]
async fn an_error_before_the_first_message_is_an_ordinary_error_answer() {
    let upstream = spawn_stream_upstream().await;
    let gateway = spawn_gateway(&streaming_toml(upstream.addr, "")).await;
    // The stream's first item is the status.
    let response = client()
        .get(format!(
            "{}/v1/ticks?count=0&fail_code=5&fail_message=no%20such%20shelf",
            gateway.base
        ))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 404);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["code"], 5);
    assert_eq!(body["message"], "no such shelf");
    // The handler refuses the call: a trailers-only answer.
    let response = client()
        .get(format!("{}/v1/ticks?count=-1", gateway.base))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 400);
    // An empty stream that ends OK is an empty body.
    let response = client()
        .get(format!("{}/v1/ticks?count=0", gateway.base))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(rest(response).await, "");
}

#[tokio::test]
async fn the_client_going_away_cancels_the_upstream_stream_within_100_ms() {
    let upstream = spawn_stream_upstream().await;
    let gateway = spawn_gateway(&streaming_toml(upstream.addr, r#"stream_timeout = "60s""#)).await;
    for http2 in [false, true] {
        let http = if http2 {
            reqwest::Client::builder()
                .http2_prior_knowledge()
                .build()
                .expect("client")
        } else {
            reqwest::Client::builder()
                .http1_only()
                .build()
                .expect("client")
        };
        let mut response = http
            .get(format!(
                "{}/v1/ticks?count=100000&interval_ms=20",
                gateway.base
            ))
            .send()
            .await
            .expect("send");
        let mut buffer = Vec::new();
        lines(&mut response, &mut buffer, 1).await;
        let gone = tokio::time::Instant::now();
        drop(response);
        drop(http);
        let noticed = upstream.state.next_cancellation().await;
        let after = noticed.duration_since(gone);
        assert!(
            after < Duration::from_millis(100),
            "http2 {http2}: cancelled after {after:?}"
        );
    }
}

#[tokio::test]
async fn the_request_deadline_covers_the_whole_stream_unless_stream_timeout_says_longer() {
    let upstream = spawn_stream_upstream().await;
    let short = spawn_gateway(&streaming_toml(upstream.addr, r#"timeout = "300ms""#)).await;
    let body = rest(
        client()
            .get(format!("{}/v1/ticks?count=1000&interval_ms=50", short.base))
            .send()
            .await
            .expect("send"),
    )
    .await;
    let last: serde_json::Value =
        serde_json::from_str(body.lines().last().expect("a line")).expect("json");
    assert_eq!(last["error"]["code"], 4, "{body}");
    assert!(body.lines().count() < 1000);

    let long = spawn_gateway(&streaming_toml(
        upstream.addr,
        "timeout = \"300ms\"\nstream_timeout = \"30s\"",
    ))
    .await;
    let body = rest(
        client()
            .get(format!("{}/v1/ticks?count=8&interval_ms=60", long.base))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(body.lines().count(), 8, "{body}");
    assert!(!body.contains("error"));
}

#[tokio::test]
async fn a_quiet_stream_ends_at_its_idle_timeout_and_the_upstream_is_cancelled() {
    let upstream = spawn_stream_upstream().await;
    let route = "stream_timeout = \"60s\"\nstream_idle_timeout = \"200ms\"";
    let gateway = spawn_gateway(&streaming_toml(upstream.addr, route)).await;
    let body = rest(
        client()
            .get(format!(
                "{}/v1/ticks?count=5&hold=true&hold_after=1",
                gateway.base
            ))
            .send()
            .await
            .expect("send"),
    )
    .await;
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.len(), 2, "{body}");
    let last: serde_json::Value = serde_json::from_str(lines[1]).expect("json");
    assert_eq!(last["error"]["code"], 4);
    assert_eq!(last["error"]["details"][0]["reason"], "STREAM_IDLE_TIMEOUT");
    upstream.state.next_cancellation().await;
}

#[tokio::test]
async fn an_idle_event_stream_gets_its_head_and_keep_alive_comments() {
    let upstream = spawn_stream_upstream().await;
    let route = "stream_timeout = \"60s\"\nstream_keepalive = \"50ms\"";
    let gateway = spawn_gateway(&streaming_toml(upstream.addr, route)).await;
    // Nothing comes before the test releases it: the head must come anyway.
    let mut response = client()
        .get(format!(
            "{}/v1/ticks?count=1&hold=true&hold_after=0",
            gateway.base
        ))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let mut buffer = Vec::new();
    while !String::from_utf8_lossy(&buffer).contains(": keep-alive\n\n: keep-alive\n\n") {
        buffer.extend_from_slice(&response.chunk().await.expect("read").expect("open"));
    }
    upstream.state.hold.notify_one();
    let text = String::from_utf8(buffer).expect("utf-8") + &rest(response).await;
    assert!(
        text.ends_with("data: {\"seq\":\"1\",\"kind\":\"KIND_ODD\"}\n\n"),
        "{text}"
    );
}

#[tokio::test]
async fn a_slow_reader_slows_the_upstream_instead_of_filling_memory() {
    let upstream = spawn_stream_upstream().await;
    let gateway = spawn_gateway(&streaming_toml(upstream.addr, r#"stream_timeout = "120s""#)).await;
    let total = 20_000u64;
    let mut response = client()
        .get(format!(
            "{}/v1/ticks?count={total}&payload_bytes=1000",
            gateway.base
        ))
        .send()
        .await
        .expect("send");
    let mut buffer = Vec::new();
    lines(&mut response, &mut buffer, 1).await;
    // The client reads nothing more. The upstream can get only as far as
    // the windows and socket buffers on the way let it.
    let mut last = 0;
    let mut stable = 0;
    while stable < 10 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let sent = upstream.state.sent.load(Ordering::SeqCst);
        stable = if sent == last { stable + 1 } else { 0 };
        last = sent;
    }
    let buffered_bytes = last * 1000;
    println!(
        "the upstream stalled after {last} of {total} ticks ({buffered_bytes} bytes ahead of the reader)"
    );
    assert!(
        last < total,
        "the upstream sent everything to a client that reads nothing"
    );
    assert!(
        buffered_bytes < 16 << 20,
        "{buffered_bytes} bytes sent ahead of a reader that stopped"
    );
    // Reading again drains the stream to its end.
    let text = String::from_utf8(buffer).expect("utf-8") + &rest(response).await;
    assert_eq!(text.lines().count() as u64, total);
}

#[tokio::test]
async fn a_stream_quieter_than_send_timeout_keeps_its_connection() {
    let upstream = spawn_stream_upstream().await;
    // send_timeout bounds a client that stops reading, not an upstream
    // that has nothing to say: a quiet stream must outlive it.
    let toml = streaming_toml(upstream.addr, r#"stream_timeout = "60s""#)
        .replace("[server]\n", "[server]\nsend_timeout = \"100ms\"\n");
    let gateway = spawn_gateway(&toml).await;
    let mut response = client()
        .get(format!(
            "{}/v1/ticks?count=2&hold=true&hold_after=1",
            gateway.base
        ))
        .send()
        .await
        .expect("send");
    let mut buffer = Vec::new();
    lines(&mut response, &mut buffer, 1).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    upstream.state.hold.notify_one();
    let text = String::from_utf8(buffer).expect("utf-8") + &rest(response).await;
    assert_eq!(text.lines().count(), 2, "{text}");
}

#[tokio::test]
async fn a_shutdown_ends_open_streams_with_a_last_unavailable_instead_of_cutting_them() {
    let upstream = spawn_stream_upstream().await;
    let gateway = spawn_gateway(&streaming_toml(upstream.addr, r#"stream_timeout = "60s""#)).await;
    let mut response = client()
        .get(format!(
            "{}/v1/ticks?count=1000&interval_ms=20",
            gateway.base
        ))
        .send()
        .await
        .expect("send");
    let mut buffer = Vec::new();
    lines(&mut response, &mut buffer, 1).await;
    // What the binary does once the drain delay has passed.
    gateway.gateway.end_streams();
    let text = String::from_utf8(buffer).expect("utf-8") + &rest(response).await;
    let last: serde_json::Value =
        serde_json::from_str(text.lines().last().expect("lines")).expect("json");
    assert_eq!(last["error"]["code"], 14, "{text}");
    assert_eq!(last["error"]["details"][0]["reason"], "SHUTTING_DOWN");
    upstream.state.next_cancellation().await;
}

#[tokio::test]
async fn an_open_stream_holds_its_upstream_call_slot_until_it_ends() {
    let upstream = spawn_stream_upstream().await;
    // One call at a time on this upstream: a stream is a call for as long
    // as it lasts, not only until its head is sent.
    let toml = streaming_toml(upstream.addr, r#"stream_timeout = "60s""#)
        .replace("endpoints = [", "max_concurrent_calls = 1\nendpoints = [");
    let gateway = spawn_gateway(&toml).await;
    let mut open = client()
        .get(format!(
            "{}/v1/ticks?count=2&hold=true&hold_after=1",
            gateway.base
        ))
        .send()
        .await
        .expect("send");
    let mut buffer = Vec::new();
    lines(&mut open, &mut buffer, 1).await;
    let refused = client()
        .get(format!("{}/v1/ticks?count=1", gateway.base))
        .send()
        .await
        .expect("send");
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    upstream.state.hold.notify_one();
    assert_eq!(rest(open).await.lines().count(), 1);
    let served = client()
        .get(format!("{}/v1/ticks?count=1", gateway.base))
        .send()
        .await
        .expect("send");
    assert_eq!(served.status(), 200);
}
