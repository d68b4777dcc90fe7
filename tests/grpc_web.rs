//! gRPC-Web calls through the gateway against real upstreams over real
//! sockets: unary (binary and text), server and client streaming, upstream
//! statuses with details, trailers-only refusals (auth, unknown method,
//! malformed or oversize bodies, deadline), CORS, metrics, flow control.

mod stream_upstream;
mod support;
mod web_client;

use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use prost::Message as _;
use prost_reflect::DynamicMessage;

use stream_upstream::{proto, spawn_stream_upstream, streaming_toml};
use support::{Reply, client, everything_toml, pool, spawn_gateway, spawn_scripted};
use web_client::{ENABLED, WebBody, decode_text, frame, parse};

const ECHO: &str = "/testing.v1.EverythingService/Echo";

fn everything(json: serde_json::Value) -> Vec<u8> {
    let descriptor = pool()
        .get_message_by_name("testing.v1.Everything")
        .expect("known");
    DynamicMessage::deserialize(descriptor, json)
        .expect("valid")
        .encode_to_vec()
}

async fn post(
    url: String,
    content_type: &str,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = client()
        .post(url)
        .header("content-type", content_type)
        .header("x-grpc-web", "1")
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("send")
}

/// The answer's head checked (200, content type), its body parsed.
async fn answer(response: reqwest::Response, content_type: &str) -> (http::HeaderMap, WebBody) {
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], content_type);
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("body");
    let body = match content_type.starts_with("application/grpc-web-text") {
        true => decode_text(&bytes),
        false => bytes.to_vec(),
    };
    (headers, parse(&body))
}

/// A trailers-only answer: the status in the headers, an empty body.
async fn trailers_only(response: reqwest::Response) -> (i32, String, http::HeaderMap) {
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("body");
    assert!(body.is_empty(), "trailers-only has no body: {body:?}");
    let code = headers["grpc-status"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("number");
    let message = headers
        .get("grpc-message")
        .map(|m| m.to_str().expect("ascii").to_string())
        .unwrap_or_default();
    (code, message, headers)
}

#[tokio::test]
async fn unary_binary_call_passes_the_message_through() {
    let upstream = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml(upstream.addr, ENABLED)).await;
    let message = everything(serde_json::json!({"string_value": "hi", "int64_value": "7"}));
    let response = post(
        format!("{}{ECHO}", gateway.base),
        "application/grpc-web+proto",
        frame(&message),
        &[("x-user-agent", "grpc-web-javascript/0.1")],
    )
    .await;
    let (headers, body) = answer(response, "application/grpc-web+proto").await;
    assert!(headers.get("content-encoding").is_none());
    assert_eq!(body.messages, [message]);
    assert_eq!(body.trailer("grpc-status"), Some("0"));
    let calls = upstream.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].path, ECHO);
    assert_eq!(calls[0].message["string_value"], "hi");
    assert_eq!(calls[0].headers["content-type"], "application/grpc");
    assert!(
        calls[0].headers.get("x-grpc-web").is_none(),
        "not forwarded"
    );
}

#[tokio::test]
async fn unary_text_call_accepts_several_padded_chunks() {
    let upstream = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml(upstream.addr, ENABLED)).await;
    let message = everything(serde_json::json!({"string_value": "text mode"}));
    let framed = frame(&message);
    // The prefix and the message base64-encoded apart, each padded.
    let body = format!(
        "{}{}",
        STANDARD.encode(&framed[..5]),
        STANDARD.encode(&framed[5..])
    );
    assert!(body[..8].ends_with('='), "{body}");
    let response = post(
        format!("{}{ECHO}", gateway.base),
        "application/grpc-web-text",
        body.into_bytes(),
        &[("accept", "application/grpc-web-text")],
    )
    .await;
    let (_, body) = answer(response, "application/grpc-web-text").await;
    assert_eq!(body.messages, [message]);
    assert_eq!(body.trailer("grpc-status"), Some("0"));
}

#[tokio::test]
async fn server_stream_frames_arrive_as_sent_then_the_trailers() {
    let upstream = spawn_stream_upstream().await;
    let gateway = spawn_gateway(&streaming_toml(upstream.addr, ENABLED)).await;
    let request = proto::TicksRequest {
        count: 3,
        hold: true,
        hold_after: 1,
        ..Default::default()
    };
    let mut response = post(
        format!("{}/testing.v1.Streaming/Ticks", gateway.base),
        "application/grpc-web",
        frame(&request.encode_to_vec()),
        &[],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/grpc-web");
    // The upstream holds after its first tick: the frame can only be here
    // if the gateway wrote it as it came.
    let mut received = Vec::new();
    while received.len() < 5 || received.len() < 5 + received[4] as usize {
        let chunk = response.chunk().await.expect("read").expect("more");
        received.extend_from_slice(&chunk);
    }
    let first = parse(&received);
    assert_eq!(first.messages.len(), 1);
    assert_eq!(
        proto::Tick::decode(&first.messages[0][..])
            .expect("tick")
            .seq,
        1
    );
    assert_eq!(upstream.state.sent.load(Ordering::SeqCst), 1);
    upstream.state.hold.notify_one();
    while let Some(chunk) = response.chunk().await.expect("read") {
        received.extend_from_slice(&chunk);
    }
    let body = parse(&received);
    let seqs: Vec<i64> = body
        .messages
        .iter()
        .map(|m| proto::Tick::decode(&m[..]).expect("tick").seq)
        .collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(body.trailer("grpc-status"), Some("0"));
}

#[tokio::test]
async fn a_stream_that_fails_after_its_messages_ends_with_its_status() {
    let upstream = spawn_stream_upstream().await;
    let gateway = spawn_gateway(&streaming_toml(upstream.addr, ENABLED)).await;
    let request = proto::TicksRequest {
        count: 2,
        fail_code: 10,
        fail_message: "aborted: 100% done".into(),
        ..Default::default()
    };
    let response = post(
        format!("{}/testing.v1.Streaming/Ticks", gateway.base),
        "application/grpc-web-text+proto",
        STANDARD
            .encode(frame(&request.encode_to_vec()))
            .into_bytes(),
        &[],
    )
    .await;
    let (_, body) = answer(response, "application/grpc-web-text+proto").await;
    assert_eq!(body.messages.len(), 2);
    assert_eq!(body.trailer("grpc-status"), Some("10"));
    // Passed through as tonic percent-encoded it.
    assert_eq!(
        body.trailer("grpc-message"),
        Some("aborted:%20100%25%20done")
    );
}

#[tokio::test]
async fn client_streaming_sends_every_message_of_the_body() {
    let upstream = spawn_stream_upstream().await;
    let gateway = spawn_gateway(&streaming_toml(upstream.addr, ENABLED)).await;
    let mut body = Vec::new();
    for value in [3, 4, 5] {
        let number = proto::Number {
            value,
            label: "n".into(),
        };
        body.extend(frame(&number.encode_to_vec()));
    }
    let response = post(
        format!("{}/testing.v1.Streaming/Sum", gateway.base),
        "application/grpc-web",
        body,
        &[],
    )
    .await;
    let (_, body) = answer(response, "application/grpc-web").await;
    assert_eq!(body.messages.len(), 1);
    let total = proto::Total::decode(&body.messages[0][..]).expect("total");
    assert_eq!((total.sum, total.count), (12, 3));
    assert_eq!(body.trailer("grpc-status"), Some("0"));
}

#[tokio::test]
async fn upstream_status_and_details_reach_the_trailers_frame() {
    let details = support::status_details(
        &pool(),
        5,
        "no such book",
        &[(
            "google.rpc.ErrorInfo",
            serde_json::json!({"reason": "BOOK_GONE", "domain": "shop"}),
        )],
    );
    let upstream = spawn_scripted(
        pool(),
        Reply::Status {
            code: 5,
            message: "no such book".into(),
            details: Some(details.clone()),
        },
    )
    .await;
    let gateway = spawn_gateway(&everything_toml(upstream.addr, ENABLED)).await;
    let response = post(
        format!("{}{ECHO}", gateway.base),
        "application/grpc-web",
        frame(&everything(serde_json::json!({}))),
        &[],
    )
    .await;
    let (_, body) = answer(response, "application/grpc-web").await;
    assert!(body.messages.is_empty());
    assert_eq!(body.trailer("grpc-status"), Some("5"));
    assert_eq!(body.trailer("grpc-message"), Some("no such book"));
    let sent = body.trailer("grpc-status-details-bin").expect("details");
    assert_eq!(STANDARD_NO_PAD.decode(sent).expect("base64"), details);
}

#[tokio::test]
async fn auth_failure_is_unauthenticated_trailers_only_and_never_sent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (provider, mint) = support::hmac_provider(dir.path());
    let upstream = spawn_scripted(pool(), Reply::Echo).await;
    let toml = support::auth_toml(upstream.addr, "auth = \"t\"", &provider) + ENABLED;
    let gateway = spawn_gateway(&toml).await;
    let url = format!("{}{ECHO}", gateway.base);
    let message = frame(&everything(serde_json::json!({"string_value": "x"})));
    let refused = post(url.clone(), "application/grpc-web", message.clone(), &[]).await;
    let (code, message_text, headers) = trailers_only(refused).await;
    assert_eq!(code, 16, "UNAUTHENTICATED: {message_text}");
    assert!(headers.contains_key("www-authenticate"));
    assert_eq!(headers["content-type"], "application/grpc-web");
    assert_eq!(upstream.call_count(), 0);
    let token = format!("Bearer {}", mint("alice"));
    let allowed = post(
        url,
        "application/grpc-web",
        message,
        &[("authorization", &token)],
    )
    .await;
    let (_, body) = answer(allowed, "application/grpc-web").await;
    assert_eq!(body.trailer("grpc-status"), Some("0"));
    assert_eq!(upstream.call_count(), 1);
}

#[tokio::test]
async fn grpc_timeout_is_capped_forwarded_and_enforced() {
    let upstream = spawn_scripted(
        pool(),
        Reply::Delay(Duration::from_secs(30), Box::new(Reply::Echo)),
    )
    .await;
    let gateway = spawn_gateway(&everything_toml(upstream.addr, ENABLED)).await;
    let response = post(
        format!("{}{ECHO}", gateway.base),
        "application/grpc-web",
        frame(&everything(serde_json::json!({}))),
        &[("grpc-timeout", "200m")],
    )
    .await;
    let (code, _, _) = trailers_only(response).await;
    assert_eq!(code, 4, "DEADLINE_EXCEEDED");
    let calls = upstream.calls();
    assert_eq!(calls.len(), 1);
    let sent = calls[0].headers["grpc-timeout"].to_str().expect("ascii");
    let micros: u64 = sent.trim_end_matches('u').parse().expect("micros");
    assert!(sent.ends_with('u') && micros <= 200_000, "{sent}");
}

#[tokio::test]
async fn unknown_and_unexposed_methods_are_unimplemented() {
    let upstream = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml(upstream.addr, ENABLED)).await;
    for path in [
        "/testing.v1.EverythingService/Unannotated",
        "/bookstore.v1.Bookstore/GetShelf",
        "/nothing",
    ] {
        let response = post(
            format!("{}{path}", gateway.base),
            "application/grpc-web",
            frame(&everything(serde_json::json!({}))),
            &[],
        )
        .await;
        let (code, message, _) = trailers_only(response).await;
        assert_eq!(code, 12, "UNIMPLEMENTED for {path}: {message}");
    }
    assert_eq!(upstream.call_count(), 0);
}

#[tokio::test]
async fn malformed_bodies_are_refused_before_the_upstream() {
    let upstream = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml(upstream.addr, ENABLED)).await;
    let message = everything(serde_json::json!({"string_value": "x"}));
    let mut truncated = frame(&message);
    truncated.pop();
    let mut compressed = frame(&message);
    compressed[0] = 1;
    let two = [frame(&message), frame(&message)].concat();
    let cases: [(&str, Vec<u8>, i32, &str); 6] = [
        ("application/grpc-web", truncated, 13, "announces"),
        ("application/grpc-web", vec![0, 0], 13, "too few"),
        ("application/grpc-web", two, 13, "exactly one"),
        ("application/grpc-web", Vec::new(), 13, "carried 0"),
        ("application/grpc-web", compressed, 12, "compressed"),
        (
            "application/grpc-web-text",
            b"AAA*AAAA".to_vec(),
            13,
            "base64",
        ),
    ];
    for (content_type, body, expected, says) in cases {
        let response = post(format!("{}{ECHO}", gateway.base), content_type, body, &[]).await;
        let (code, message, headers) = trailers_only(response).await;
        assert_eq!(code, expected, "{message}");
        assert!(message.contains(says), "{message}");
        assert!(headers.contains_key("grpc-status-details-bin"));
    }
    let json = post(
        format!("{}{ECHO}", gateway.base),
        "application/grpc-web+json",
        b"{}".to_vec(),
        &[],
    )
    .await;
    assert_eq!(trailers_only(json).await.0, 12, "only protobuf messages");
    assert_eq!(upstream.call_count(), 0, "the upstream never saw them");
}

#[tokio::test]
async fn an_oversize_body_is_resource_exhausted() {
    let upstream = spawn_scripted(pool(), Reply::Echo).await;
    let toml = everything_toml(upstream.addr, ENABLED)
        .replace("[server]\n", "[limits]\nmax_body_bytes = 64\n\n[server]\n");
    let gateway = spawn_gateway(&toml).await;
    let big = everything(serde_json::json!({"string_value": "x".repeat(200)}));
    let response = post(
        format!("{}{ECHO}", gateway.base),
        "application/grpc-web",
        frame(&big),
        &[],
    )
    .await;
    let (code, message, _) = trailers_only(response).await;
    assert_eq!(code, 8, "RESOURCE_EXHAUSTED: {message}");
    assert_eq!(upstream.call_count(), 0);
}

#[tokio::test]
async fn without_the_switch_grpc_web_is_an_ordinary_unrouted_request() {
    let upstream = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml(upstream.addr, "")).await;
    let response = post(
        format!("{}{ECHO}", gateway.base),
        "application/grpc-web",
        frame(&everything(serde_json::json!({}))),
        &[],
    )
    .await;
    assert_eq!(response.status(), 404);
    assert_eq!(upstream.call_count(), 0);
}

#[tokio::test]
async fn cors_preflight_allows_grpc_web_and_answers_expose_the_status() {
    let upstream = spawn_scripted(pool(), Reply::Echo).await;
    let cors = "\n[cors]\nallow_origins = [\"https://app.example\"]\nallow_headers = [\"authorization\"]\n";
    let toml = everything_toml(upstream.addr, &format!("{ENABLED}{cors}"));
    let gateway = spawn_gateway(&toml).await;
    let preflight = client()
        .request(reqwest::Method::OPTIONS, format!("{}{ECHO}", gateway.base))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,x-grpc-web,x-user-agent,grpc-timeout,authorization",
        )
        .send()
        .await
        .expect("send");
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let headers = preflight.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example"
    );
    let allowed = headers["access-control-allow-headers"]
        .to_str()
        .expect("ascii");
    for name in [
        "content-type",
        "x-grpc-web",
        "x-user-agent",
        "grpc-timeout",
        "authorization",
    ] {
        assert!(allowed.contains(name), "{name} not in {allowed}");
    }
    assert_eq!(upstream.call_count(), 0, "preflights are never forwarded");
    let refused = post(
        format!("{}/testing.v1.EverythingService/Unannotated", gateway.base),
        "application/grpc-web-text",
        Vec::new(),
        &[("origin", "https://app.example")],
    )
    .await;
    let exposed = refused.headers()["access-control-expose-headers"]
        .to_str()
        .expect("ascii")
        .to_string();
    for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        assert!(exposed.contains(name), "{name} not in {exposed}");
    }
    assert_eq!(trailers_only(refused).await.0, 12);
}

#[tokio::test]
async fn calls_are_counted_under_the_grpc_method() {
    let upstream = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml(upstream.addr, ENABLED)).await;
    let url = format!("{}{ECHO}", gateway.base);
    let ok = post(
        url.clone(),
        "application/grpc-web",
        frame(&everything(serde_json::json!({}))),
        &[],
    )
    .await;
    answer(ok, "application/grpc-web").await;
    let bad = post(url, "application/grpc-web", vec![0], &[]).await;
    trailers_only(bad).await;
    let metrics = gateway.gateway.metrics().render();
    let line = |status: &str| {
        metrics.lines().any(|l| {
            l.contains(&format!("route=\"{ECHO}\""))
                && l.contains(&format!("status=\"{status}\""))
                && l.ends_with(" 1")
        })
    };
    assert!(line("2xx") && line("4xx"), "{metrics}");
}

#[tokio::test]
async fn a_slow_reader_holds_the_upstream_back() {
    let upstream = spawn_stream_upstream().await;
    let toml = streaming_toml(
        upstream.addr,
        &format!("stream_timeout = \"120s\"\n{ENABLED}"),
    );
    let gateway = spawn_gateway(&toml).await;
    let total = 20_000;
    let request = proto::TicksRequest {
        count: total,
        payload_bytes: 1000,
        ..Default::default()
    };
    let mut response = post(
        format!("{}/testing.v1.Streaming/Ticks", gateway.base),
        "application/grpc-web",
        frame(&request.encode_to_vec()),
        &[],
    )
    .await;
    let mut received = response
        .chunk()
        .await
        .expect("read")
        .expect("a chunk")
        .to_vec();
    // The client reads nothing more; the upstream gets only as far as the
    // windows and socket buffers on the way let it.
    let (mut last, mut stable) = (0, 0);
    while stable < 10 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let sent = upstream.state.sent.load(Ordering::SeqCst);
        stable = if sent == last { stable + 1 } else { 0 };
        last = sent;
    }
    println!("the upstream stalled after {last} of {total} ticks");
    assert!(
        last < total as u64,
        "everything sent to a client that reads nothing"
    );
    assert!(
        last * 1000 < 16 << 20,
        "{last} ticks sent ahead of the reader"
    );
    while let Some(chunk) = response.chunk().await.expect("read") {
        received.extend_from_slice(&chunk);
    }
    let body = parse(&received);
    assert_eq!(body.messages.len(), total as usize);
    assert_eq!(body.trailer("grpc-status"), Some("0"));
}

#[tokio::test]
async fn a_python_client_framing_its_own_requests_gets_answers() {
    let echo = spawn_scripted(pool(), Reply::Echo).await;
    let echo_gateway = spawn_gateway(&everything_toml(echo.addr, ENABLED)).await;
    let streams = spawn_stream_upstream().await;
    let streams_gateway = spawn_gateway(&streaming_toml(streams.addr, ENABLED)).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/web_client/client.py");
    let output = tokio::process::Command::new("python3")
        .arg(script)
        .arg(&echo_gateway.base)
        .arg(&streams_gateway.base)
        .output()
        .await
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "client failed: {stderr}");
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(
        result,
        serde_json::json!({
            "echo": ["hello from python"],
            "echo_status": "0",
            "ticks": [1, 2, 3],
            "ticks_status": "0",
            "unknown_status": "12",
            "unknown_body_frames": 0,
        })
    );
}
