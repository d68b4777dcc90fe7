//! Requests the gateway answers at its edge without the upstream: header
//! values that gRPC metadata cannot carry, and `OPTIONS` without a CORS
//! preflight.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FORWARD_TENANT: &str = "\n[headers]\nforward_request = [\"x-tenant\"]\n";

/// One HTTP/1 request with `header` (raw bytes) added; the whole answer.
async fn with_header(addr: SocketAddr, header: &[u8]) -> String {
    let mut socket = TcpStream::connect(addr).await.expect("connect");
    let mut raw = b"GET /v1/echo?stringValue=a HTTP/1.1\r\nConnection: close\r\n".to_vec();
    raw.extend_from_slice(header);
    raw.extend_from_slice(b"\r\n\r\n");
    socket.write_all(&raw).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut out))
        .await
        .expect("answer")
        .expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn obs_text_in_a_header_sent_as_metadata_is_dropped_never_re_encoded() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, FORWARD_TENANT)).await;
    // Latin-1 bytes an upstream would decode its own way.
    for (header, name) in [
        (&b"Host: x\r\nX-Tenant: caf\xe9"[..], "x-tenant"),
        (&b"Host: caf\xe9.example"[..], "x-forwarded-host"),
        (&b"Host: x\r\nTraceparent: 00-\xff"[..], "traceparent"),
    ] {
        let answer = with_header(gateway.addr, header).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let calls = scripted.calls();
        let sent = &calls.last().expect("a call").headers;
        // A traceparent the gateway cannot read starts a fresh trace: the
        // upstream gets the gateway's own, never the client's bytes.
        let reached = match name {
            "traceparent" => sent.get(name).is_some_and(|v| v.len() != 55),
            _ => sent.get(name).is_some(),
        };
        assert!(!reached, "{name} reached the upstream: {sent:?}");
        assert!(
            sent.values()
                .all(|v| v.as_bytes().iter().all(|b| (0x20..=0x7e).contains(b))),
            "{sent:?}"
        );
    }
    // Visible ASCII still crosses unchanged.
    let answer = with_header(gateway.addr, b"Host: x\r\nX-Tenant: acme-eu").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let calls = scripted.calls();
    assert_eq!(
        calls
            .last()
            .expect("a call")
            .headers
            .get("x-tenant")
            .map(|v| v.as_bytes()),
        Some(&b"acme-eu"[..])
    );
}

#[tokio::test]
async fn options_without_a_preflight_answers_204_with_the_route_methods() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, "")).await;
    let response = client()
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/v1/echo", gateway.base),
        )
        .send()
        .await
        .expect("OPTIONS");
    assert_eq!(response.status(), 204);
    let allow = response.headers()["allow"].to_str().expect("ascii");
    let mut methods: Vec<&str> = allow.split(',').map(str::trim).collect();
    methods.sort_unstable();
    assert_eq!(methods, ["GET", "HEAD", "OPTIONS", "POST"], "{allow}");
    assert_eq!(scripted.call_count(), 0);
}

#[tokio::test]
async fn options_on_an_unknown_path_is_a_404() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, "")).await;
    let response = client()
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/v1/nowhere", gateway.base),
        )
        .send()
        .await
        .expect("OPTIONS");
    assert_eq!(response.status(), 404);
    assert!(response.headers().get("allow").is_none());
}
