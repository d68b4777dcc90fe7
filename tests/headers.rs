//! What crosses the gateway besides the message, over real sockets: request
//! ids, trace context and X-Forwarded-* are set by the gateway, only
//! allowlisted headers are forwarded either way, and hop-by-hop or client-sent
//! `grpc-*` headers never reach the upstream.

mod support;

use std::net::SocketAddr;

use http::HeaderMap;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FORWARD_TENANT: &str = "\n[headers]\nforward_request = [\"x-tenant\"]\n";

/// The scripted Echo upstream behind a gateway configured with `extra`.
async fn echo_gateway(extra: &str) -> (Scripted, TestGateway) {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, extra)).await;
    (scripted, gateway)
}

/// POST /v1/echo with extra headers.
async fn echo(gateway: &TestGateway, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = client()
        .post(format!("{}/v1/echo", gateway.base))
        .header("content-type", "application/json")
        .body("{}");
    for &(name, value) in headers {
        request = request.header(name, value);
    }
    request.send().await.expect("send")
}

/// The metadata of the upstream's only call.
fn only_call_headers(scripted: &Scripted) -> HeaderMap {
    let calls = scripted.calls();
    assert_eq!(calls.len(), 1, "expected exactly one upstream call");
    calls[0].headers.clone()
}

/// Every value of `name` the upstream saw.
fn values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

fn is_generated_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Sends a hand-written HTTP/1.1 request head (plus `{}` as the body) and
/// returns the whole answer; the head must ask for `connection: close`.
async fn raw_echo(addr: SocketAddr, header_lines: &[&str]) -> String {
    let mut socket = TcpStream::connect(addr).await.expect("connect");
    let mut head = String::from(
        "POST /v1/echo HTTP/1.1\r\nhost: gateway.example\r\ncontent-type: application/json\r\ncontent-length: 2\r\n",
    );
    for line in header_lines {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("\r\n{}");
    socket.write_all(head.as_bytes()).await.expect("write");
    let mut answer = String::new();
    socket.read_to_string(&mut answer).await.expect("read");
    answer
}

#[tokio::test]
async fn valid_request_id_is_echoed_and_forwarded() {
    let (scripted, gateway) = echo_gateway("").await;
    let response = echo(&gateway, &[("x-request-id", "req-42.abc_DEF")]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "req-42.abc_DEF");
    let headers = only_call_headers(&scripted);
    assert_eq!(values(&headers, "x-request-id"), ["req-42.abc_DEF"]);
}

#[tokio::test]
async fn missing_request_id_is_generated_as_32_hex_chars_and_forwarded() {
    let (scripted, gateway) = echo_gateway("").await;
    let response = echo(&gateway, &[]).await;
    assert_eq!(response.status(), 200);
    let id = response.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(is_generated_id(&id), "{id}");
    assert_eq!(
        values(&only_call_headers(&scripted), "x-request-id"),
        [id.as_str()]
    );
    let again = echo(&gateway, &[]).await;
    assert_ne!(
        again.headers()["x-request-id"],
        id.as_str(),
        "ids are fresh"
    );
}

#[tokio::test]
async fn invalid_request_ids_are_replaced_by_generated_ones() {
    let too_long = "a".repeat(129);
    for bad in ["has space", too_long.as_str(), "tab\there"] {
        let (scripted, gateway) = echo_gateway("").await;
        let response = echo(&gateway, &[("x-request-id", bad)]).await;
        assert_eq!(response.status(), 200);
        let id = response.headers()["x-request-id"]
            .to_str()
            .expect("ascii")
            .to_string();
        assert!(is_generated_id(&id), "{bad:?} gave {id}");
        assert_eq!(values(&only_call_headers(&scripted), "x-request-id"), [id]);
    }
    // Non-ASCII bytes (obs-text) are replaced too.
    let (_scripted, gateway) = echo_gateway("").await;
    let response = client()
        .post(format!("{}/v1/echo", gateway.base))
        .header("content-type", "application/json")
        .header(
            "x-request-id",
            http::HeaderValue::from_bytes(b"caf\xc3\xa9").expect("obs-text"),
        )
        .body("{}")
        .send()
        .await
        .expect("send");
    let id = response.headers()["x-request-id"].to_str().expect("ascii");
    assert!(is_generated_id(id), "{id}");
}

#[tokio::test]
async fn request_id_is_echoed_on_errors_too() {
    let (scripted, gateway) = echo_gateway("").await;
    // A gateway error: no route.
    let response = client()
        .get(format!("{}/v1/nowhere", gateway.base))
        .header("x-request-id", "lost-1")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["x-request-id"], "lost-1");
    // A client error: malformed JSON.
    let response = client()
        .post(format!("{}/v1/echo", gateway.base))
        .header("content-type", "application/json")
        .header("x-request-id", "broken-2")
        .body("{")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 400);
    assert_eq!(response.headers()["x-request-id"], "broken-2");
    // An upstream status, with a generated id.
    scripted.set_reply(Reply::Status {
        code: 7,
        message: "no".into(),
        details: None,
    });
    let response = echo(&gateway, &[]).await;
    assert_eq!(response.status(), 403);
    let id = response.headers()["x-request-id"].to_str().expect("ascii");
    assert!(is_generated_id(id), "{id}");
    assert_eq!(values(&only_call_headers(&scripted), "x-request-id"), [id]);
}

#[tokio::test]
async fn trace_context_continues_with_the_gateway_span_as_parent() {
    let (scripted, gateway) = echo_gateway("").await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let tracestate = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";
    let response = echo(
        &gateway,
        &[("traceparent", traceparent), ("tracestate", tracestate)],
    )
    .await;
    assert_eq!(response.status(), 200);
    let headers = only_call_headers(&scripted);
    let sent = values(&headers, "traceparent");
    let [sent] = sent.as_slice() else {
        panic!("one traceparent: {sent:?}")
    };
    // Same trace and flags; the parent is now the gateway's own span.
    let fields: Vec<&str> = sent.split('-').collect();
    assert_eq!(fields.len(), 4, "{sent}");
    assert_eq!(
        (fields[0], fields[1], fields[3]),
        ("00", "4bf92f3577b34da6a3ce929d0e0e4736", "01")
    );
    assert_eq!(fields[2].len(), 16, "{sent}");
    assert_ne!(fields[2], "00f067aa0ba902b7", "{sent}");
    assert_eq!(values(&headers, "tracestate"), [tracestate]);
}

#[tokio::test]
async fn forwarded_for_is_the_peer_and_a_spoofed_one_is_dropped() {
    let (scripted, gateway) = echo_gateway("").await;
    let response = echo(&gateway, &[("x-forwarded-for", "6.6.6.6")]).await;
    assert_eq!(response.status(), 200);
    let headers = only_call_headers(&scripted);
    assert_eq!(values(&headers, "x-forwarded-for"), ["127.0.0.1"]);
}

#[tokio::test]
async fn one_trusted_proxy_hop_keeps_the_last_client_entry() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let toml = everything_toml(scripted.addr, "").replace(
        "access_log = false",
        "access_log = false\ntrusted_proxy_hops = 1",
    );
    let gateway = spawn_gateway(&toml).await;
    let response = echo(&gateway, &[("x-forwarded-for", "6.6.6.6, 203.0.113.7")]).await;
    assert_eq!(response.status(), 200);
    let headers = only_call_headers(&scripted);
    assert_eq!(
        values(&headers, "x-forwarded-for"),
        ["203.0.113.7, 127.0.0.1"]
    );
}

#[tokio::test]
async fn unparseable_trusted_entry_does_not_let_a_client_entry_through() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let toml = everything_toml(scripted.addr, "").replace(
        "access_log = false",
        "access_log = false\ntrusted_proxy_hops = 1",
    );
    let gateway = spawn_gateway(&toml).await;
    // The trusted proxy wrote "unknown"; 6.6.6.6 is the client's own claim.
    let response = echo(&gateway, &[("x-forwarded-for", "6.6.6.6, unknown")]).await;
    assert_eq!(response.status(), 200);
    let headers = only_call_headers(&scripted);
    assert_eq!(values(&headers, "x-forwarded-for"), ["127.0.0.1"]);
}

#[tokio::test]
async fn forwarded_host_and_proto_are_set_by_the_gateway() {
    let (scripted, gateway) = echo_gateway("").await;
    let response = echo(
        &gateway,
        &[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
        ],
    )
    .await;
    assert_eq!(response.status(), 200);
    let headers = only_call_headers(&scripted);
    assert_eq!(values(&headers, "x-forwarded-proto"), ["http"]);
    assert_eq!(
        values(&headers, "x-forwarded-host"),
        [gateway.addr.to_string()]
    );
}

#[tokio::test]
async fn only_allowlisted_request_headers_are_forwarded() {
    let (scripted, gateway) = echo_gateway(FORWARD_TENANT).await;
    let response = echo(
        &gateway,
        &[
            ("x-tenant", "acme"),
            ("x-tenant", "acme-eu"),
            ("x-unlisted", "1"),
            ("authorization", "Bearer secret-token"),
            ("cookie", "session=secret"),
            ("x-api-key", "secret-key"),
            ("user-agent", "curl/8"),
        ],
    )
    .await;
    assert_eq!(response.status(), 200);
    let headers = only_call_headers(&scripted);
    assert_eq!(values(&headers, "x-tenant"), ["acme", "acme-eu"]);
    for name in [
        "x-unlisted",
        "authorization",
        "cookie",
        "x-api-key",
        "accept",
        "accept-encoding",
    ] {
        assert!(!headers.contains_key(name), "{name} reached the upstream");
    }
    let text = format!("{headers:?}");
    assert!(!text.contains("secret"), "{text}");
    assert_eq!(values(&headers, "content-type"), ["application/grpc"]);
}

#[tokio::test]
async fn hop_by_hop_headers_never_reach_the_upstream() {
    let (scripted, gateway) = echo_gateway(FORWARD_TENANT).await;
    let answer = raw_echo(
        gateway.addr,
        &[
            "connection: close, x-hop",
            "keep-alive: timeout=5",
            "te: gzip",
            "upgrade: websocket",
            "proxy-connection: keep-alive",
            "proxy-authorization: Basic c2VjcmV0",
            "trailer: x-late",
            "x-hop: 1",
            "x-tenant: acme",
        ],
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let headers = only_call_headers(&scripted);
    assert_eq!(values(&headers, "x-tenant"), ["acme"]);
    for name in [
        "connection",
        "keep-alive",
        "upgrade",
        "proxy-connection",
        "proxy-authorization",
        "trailer",
        "x-hop",
    ] {
        assert!(!headers.contains_key(name), "{name} reached the upstream");
    }
    // The one `te` is the gateway's own, required by gRPC.
    assert_eq!(values(&headers, "te"), ["trailers"]);
}

#[tokio::test]
async fn allowlisted_header_named_in_connection_is_not_forwarded() {
    // RFC 9110 §7.6.1: a header the client's Connection names is for that
    // hop only, allowlist or not.
    let (scripted, gateway) = echo_gateway(FORWARD_TENANT).await;
    let answer = raw_echo(
        gateway.addr,
        &["connection: x-tenant, close", "x-tenant: acme"],
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let headers = only_call_headers(&scripted);
    assert!(!headers.contains_key("x-tenant"), "{headers:?}");
}

#[tokio::test]
async fn client_grpc_headers_never_reach_the_upstream() {
    let (scripted, gateway) = echo_gateway(FORWARD_TENANT).await;
    let response = echo(
        &gateway,
        &[
            ("grpc-status-details-bin", "CAUSBG5vcGU"),
            ("grpc-encoding", "gzip"),
            ("grpc-accept-encoding", "gzip"),
            ("grpc-message", "injected"),
            ("grpc-status", "0"),
            ("grpc-previous-rpc-attempts", "3"),
            ("grpc-timeout", "5S"),
        ],
    )
    .await;
    assert_eq!(response.status(), 200);
    let headers = only_call_headers(&scripted);
    let grpc: Vec<&str> = headers
        .keys()
        .map(|name| name.as_str())
        .filter(|name| name.starts_with("grpc-"))
        .collect();
    assert_eq!(grpc, ["grpc-timeout"], "{headers:?}");
    assert_ne!(values(&headers, "grpc-timeout"), ["5S"]);
}

#[tokio::test]
async fn allowlisted_upstream_metadata_is_returned_and_nothing_else() {
    let scripted = spawn_scripted(
        pool(),
        Reply::WithMetadata {
            headers: vec![
                ("x-ratelimit-remaining", "41"),
                ("x-backend-host", "db-7.internal"),
            ],
            trailers: vec![
                ("x-ratelimit-remaining", "40"),
                ("x-debug-trace", "internal-span-9"),
            ],
            reply: Box::new(Reply::Echo),
        },
    )
    .await;
    let extra = "\n[headers]\nforward_response = [\"x-ratelimit-remaining\"]\n";
    let gateway = spawn_gateway(&everything_toml(scripted.addr, extra)).await;
    let response = echo(&gateway, &[]).await;
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    let remaining: Vec<&str> = headers
        .get_all("x-ratelimit-remaining")
        .iter()
        .map(|v| v.to_str().expect("ascii"))
        .collect();
    assert_eq!(remaining, ["41", "40"]);
    for name in ["x-backend-host", "x-debug-trace", "grpc-status", "te"] {
        assert!(!headers.contains_key(name), "{name} was exposed");
    }
    assert!(
        headers
            .keys()
            .all(|name| !name.as_str().starts_with("grpc-")),
        "{headers:?}"
    );
    assert_eq!(headers["content-type"], "application/json");
}

#[tokio::test]
async fn upstream_metadata_is_not_exposed_without_an_allowlist() {
    let scripted = spawn_scripted(
        pool(),
        Reply::WithMetadata {
            headers: vec![("x-ratelimit-remaining", "41")],
            trailers: vec![("x-debug-trace", "internal-span-9")],
            reply: Box::new(Reply::Echo),
        },
    )
    .await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, "")).await;
    let response = echo(&gateway, &[]).await;
    assert_eq!(response.status(), 200);
    assert!(!response.headers().contains_key("x-ratelimit-remaining"));
    assert!(!response.headers().contains_key("x-debug-trace"));
}

#[tokio::test]
async fn allowlisted_upstream_metadata_is_returned_on_error_statuses_too() {
    let scripted = spawn_scripted(
        pool(),
        Reply::WithMetadata {
            headers: vec![("x-ratelimit-remaining", "0")],
            trailers: vec![("x-debug-trace", "internal-span-9")],
            reply: Box::new(Reply::Status {
                code: 8,
                message: "quota".into(),
                details: None,
            }),
        },
    )
    .await;
    let extra = "\n[headers]\nforward_response = [\"x-ratelimit-remaining\"]\n";
    let gateway = spawn_gateway(&everything_toml(scripted.addr, extra)).await;
    let response = echo(&gateway, &[]).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["x-ratelimit-remaining"], "0");
    assert!(!response.headers().contains_key("x-debug-trace"));
}
