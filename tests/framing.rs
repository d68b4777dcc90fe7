//! HTTP/1 framing attacks over a raw socket: requests a smuggler would send
//! are never forwarded ambiguously, and the connection is closed after them.

mod support;

use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends raw bytes and reads until the server closes the connection (or 5 s).
async fn exchange(addr: std::net::SocketAddr, raw: &[u8]) -> (String, bool) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(raw).await.expect("write");
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out))
        .await
        .is_ok();
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

#[tokio::test]
async fn content_length_with_transfer_encoding_closes_the_connection() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, "")).await;
    // A classic CL.TE smuggling attempt: a second request hidden in the body.
    let smuggled = "GET /v1/echo?stringValue=smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let body = format!("0\r\n\r\n{smuggled}");
    let raw = format!(
        "POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
        body.len()
    );
    let (response, closed) = exchange(gateway.addr, raw.as_bytes()).await;
    assert!(
        closed,
        "the connection must be closed after an ambiguous request"
    );
    // At most one answer: the hidden request is never parsed as a request.
    assert_eq!(response.matches("HTTP/1.1 ").count(), 1, "{response}");
    assert!(
        scripted
            .calls()
            .iter()
            .all(|c| c.message["string_value"] != "smuggled"),
        "the smuggled request must never reach the upstream"
    );
}

#[tokio::test]
async fn malformed_chunk_size_is_a_400_and_nothing_is_forwarded() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, "")).await;
    let raw = "POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n";
    let (response, closed) = exchange(gateway.addr, raw.as_bytes()).await;
    assert!(
        closed,
        "the connection must be closed after a framing error"
    );
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(
        response.contains("\"code\":3"),
        "JSON error body expected: {response}"
    );
    assert_eq!(scripted.call_count(), 0);
}

#[tokio::test]
async fn two_different_content_lengths_are_rejected() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, "")).await;
    let raw = "POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}";
    let (response, closed) = exchange(gateway.addr, raw.as_bytes()).await;
    assert!(closed);
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert_eq!(scripted.call_count(), 0);
}

#[tokio::test]
async fn a_slow_request_head_is_cut_off() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let toml = everything_toml(scripted.addr, "")
        .replace("[server]\n", "[server]\nheader_read_timeout = \"300ms\"\n");
    let gateway = spawn_gateway(&toml).await;
    let mut stream = TcpStream::connect(gateway.addr).await.expect("connect");
    stream
        .write_all(b"GET /v1/echo HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    let started = tokio::time::Instant::now();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    assert!(
        read.is_ok(),
        "the server must close a connection whose head never completes"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(scripted.call_count(), 0);
}

#[tokio::test]
async fn transfer_encoding_other_than_exactly_chunked_is_a_400_and_nothing_is_forwarded() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, "")).await;
    for coding in ["gzip, chunked", "identity, chunked", "chunked, chunked"] {
        // hyper reads these as plain chunked; a proxy in front may not.
        let raw = format!(
            "POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: {coding}\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n"
        );
        let (response, closed) = exchange(gateway.addr, raw.as_bytes()).await;
        assert!(response.starts_with("HTTP/1.1 400"), "{coding}: {response}");
        assert!(response.contains("transfer-encoding"), "{response}");
        assert!(closed, "{coding}: the connection must be closed");
    }
    assert_eq!(scripted.call_count(), 0);
    // Exactly `chunked` is still fine.
    let raw = "POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
    let (response, _) = exchange(gateway.addr, raw.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

#[tokio::test]
async fn a_folded_header_line_is_a_400_and_nothing_is_forwarded() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, "")).await;
    // obs-fold (RFC 9112 §5.2): a proxy may join the lines, hyper must not guess.
    let raw = "POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nTransfer-Encoding:\r\n chunked\r\n\r\n{}";
    let (response, closed) = exchange(gateway.addr, raw.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(closed);
    assert_eq!(scripted.call_count(), 0);
}
