//! What a client connection may hold, over real sockets on tokio's paused
//! clock: a connection that never completes a first request (nothing, part
//! of the HTTP/2 preface, only the preface) is closed after
//! `first_request_timeout`; an idle HTTP/2 connection after `idle_timeout`;
//! HTTP/2 responses the client never opens its window for are bounded by
//! `max_buffered_response_bytes` (the streams beyond are reset at once) and
//! by `send_timeout` (then the connection is closed); connections above
//! `max_connections` are closed at accept while the listener keeps serving.
//!
//! The requests here are answered by the gateway alone (a 404 for a path it
//! does not route, whose JSON body echoes the path, so its size is chosen):
//! with no upstream on the path, every byte on the wire is ready at once and
//! the paused clock advances only when the gateway really waits.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Far beyond every configured bound: a wait this long means "never".
const NEVER: Duration = Duration::from_secs(3600);

async fn gateway(server: &str) -> (Scripted, TestGateway) {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let toml =
        everything_toml(scripted.addr, "").replace("[server]\n", &format!("[server]\n{server}\n"));
    let gateway = spawn_gateway(&toml).await;
    (scripted, gateway)
}

/// Writes `sent`, then reads until the gateway closes the socket; returns
/// how long (virtual time) the gateway kept it open, or `None` if it never did.
async fn held_for(addr: SocketAddr, sent: &[u8]) -> Option<Duration> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(sent).await.expect("write");
    let started = Instant::now();
    let mut sink = Vec::new();
    tokio::time::timeout(NEVER, stream.read_to_end(&mut sink))
        .await
        .ok()
        .map(|_| started.elapsed())
}

/// The HTTP/1 header timeout is set far beyond the first-request one, so
/// only the latter can close these connections.
const FIRST_REQUEST: &str = "first_request_timeout = \"5s\"\nheader_read_timeout = \"600s\"";

#[tokio::test(start_paused = true)]
async fn a_connection_that_sends_nothing_is_closed_after_first_request_timeout() {
    let (_scripted, gateway) = gateway(FIRST_REQUEST).await;
    let held = held_for(gateway.addr, b"").await;
    let held = held.expect("a silent connection must be closed");
    assert!(
        held >= Duration::from_secs(5) && held < Duration::from_secs(6),
        "{held:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_partial_http2_preface_is_closed_after_first_request_timeout() {
    let (_scripted, gateway) = gateway(FIRST_REQUEST).await;
    let held = held_for(gateway.addr, &PREFACE[..10]).await;
    let held = held.expect("a partial preface must not hold the connection");
    assert!(
        held >= Duration::from_secs(4) && held < Duration::from_secs(6),
        "{held:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_sends_only_the_preface_is_closed_after_first_request_timeout() {
    let (_scripted, gateway) = gateway(FIRST_REQUEST).await;
    // The preface and an empty SETTINGS frame: a complete HTTP/2 start, no request.
    let mut sent = PREFACE.to_vec();
    sent.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let held = held_for(gateway.addr, &sent).await;
    let held = held.expect("a preface without a request must not hold the connection");
    assert!(
        held >= Duration::from_secs(4) && held < Duration::from_secs(6),
        "{held:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_partial_http1_head_is_closed_after_first_request_timeout() {
    let (_scripted, gateway) = gateway(FIRST_REQUEST).await;
    let held = held_for(gateway.addr, b"GET /v1/echo HTTP/1.1\r\nHo").await;
    let held = held.expect("a partial head must not hold the connection");
    assert!(held < Duration::from_secs(6), "{held:?}");
}

/// A path the gateway answers itself with a 404 of about `len` bytes.
fn unrouted(len: usize) -> String {
    format!("/unrouted/{}", "x".repeat(len.saturating_sub(100)))
}

/// An HTTP/2 client connection with the given stream receive window.
async fn h2_client(
    addr: SocketAddr,
    window: u32,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<Instant>,
) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(window)
        .handshake(tcp)
        .await
        .expect("h2 handshake");
    // Resolves with the instant the gateway ended the connection.
    let ended = tokio::spawn(async move {
        let _ = connection.await;
        Instant::now()
    });
    (client, ended)
}

fn get(addr: SocketAddr, path_and_query: &str) -> http::Request<()> {
    http::Request::get(format!("http://{addr}{path_and_query}"))
        .body(())
        .expect("request")
}

#[tokio::test(start_paused = true)]
async fn an_idle_http2_connection_is_closed_after_idle_timeout() {
    let (_scripted, gateway) = gateway("idle_timeout = \"20s\"").await;
    let (client, ended) = h2_client(gateway.addr, 65_535).await;
    let mut client = client.ready().await.expect("ready");
    let (response, _) = client
        .send_request(get(gateway.addr, &unrouted(100)), true)
        .expect("send");
    let mut body = response.await.expect("response").into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("body");
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let idle_from = Instant::now();
    let ended = tokio::time::timeout(NEVER, ended)
        .await
        .expect("an idle HTTP/2 connection must be closed")
        .expect("join");
    let idle = ended - idle_from;
    assert!(
        idle >= Duration::from_secs(20) && idle < Duration::from_secs(21),
        "{idle:?}"
    );
}

/// How each of a zero-window client's streams ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// RST_STREAM from the gateway, before any timeout.
    ResetAtOnce,
    /// Still open when the connection was closed, `after` from the start.
    HeldUntilClosed { after: Duration },
}

/// The answer's length, from its response head.
fn content_length<T>(response: &http::Response<T>) -> usize {
    response.headers()[http::header::CONTENT_LENGTH]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("length")
}

/// Whether `error` is the gateway resetting the one stream.
fn stream_reset(error: &h2::Error) -> bool {
    error.reason() == Some(h2::Reason::INTERNAL_ERROR) && !error.is_go_away() && error.is_remote()
}

/// Sends `count` GETs on a connection whose stream windows stay at zero and
/// waits for each stream to end; also returns the answers' length.
async fn stalled_streams(addr: SocketAddr, count: usize, size: usize) -> (Vec<Outcome>, usize) {
    let (client, _ended) = h2_client(addr, 0).await;
    let started = Instant::now();
    let mut pending = Vec::new();
    let mut client = client;
    for _ in 0..count {
        client = client.ready().await.expect("ready");
        let (response, _) = client
            .send_request(get(addr, &unrouted(size)), true)
            .expect("send");
        pending.push(response);
    }
    // Each stream is watched on its own, so each ending is timed when it happens.
    let watchers: Vec<_> = pending
        .into_iter()
        .map(|response| {
            tokio::spawn(async move {
                // A stream reset before its head was written loses the head too.
                let (length, ended) = match response.await {
                    Ok(response) => {
                        let length = content_length(&response);
                        let mut body = response.into_body();
                        match tokio::time::timeout(NEVER, body.data()).await {
                            Ok(Some(Err(error))) => (Some(length), error),
                            other => {
                                panic!("a zero-window stream can only end in error: {other:?}")
                            }
                        }
                    }
                    Err(error) => (None, error),
                };
                let after = started.elapsed();
                let outcome = if stream_reset(&ended) && after < Duration::from_secs(30) {
                    Outcome::ResetAtOnce
                } else {
                    Outcome::HeldUntilClosed { after }
                };
                (length, outcome)
            })
        })
        .collect();
    let mut length = 0;
    let mut outcomes = Vec::new();
    for watcher in watchers {
        let (seen, outcome) = watcher.await.expect("watcher");
        length = seen.unwrap_or(length);
        outcomes.push(outcome);
    }
    (outcomes, length)
}

#[tokio::test(start_paused = true)]
async fn zero_window_streams_are_capped_per_connection_and_closed_after_send_timeout() {
    let (_scripted, gateway) =
        gateway("send_timeout = \"30s\"\nmax_buffered_response_bytes = 5000").await;
    let (outcomes, length) = stalled_streams(gateway.addr, 5, 2000).await;
    let held: Vec<_> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::HeldUntilClosed { after } => Some(*after),
            Outcome::ResetAtOnce => None,
        })
        .collect();
    // Only as many whole answers as fit in the limit are kept waiting.
    assert!(length > 1800 && length < 2500, "{length}");
    assert_eq!(held.len(), 5000 / length, "{outcomes:?}");
    for after in held {
        assert!(
            after >= Duration::from_secs(30) && after < Duration::from_secs(31),
            "{outcomes:?}"
        );
    }
}

/// Opens `count` zero-window streams on `client`; returns those the gateway
/// keeps waiting (after a virtual second) and the number it reset.
async fn open_stalled(
    client: &mut h2::client::SendRequest<bytes::Bytes>,
    addr: SocketAddr,
    count: usize,
) -> (Vec<h2::RecvStream>, usize) {
    let mut pending = Vec::new();
    for _ in 0..count {
        *client = client.clone().ready().await.expect("ready");
        let (response, _) = client
            .send_request(get(addr, &unrouted(2000)), true)
            .expect("send");
        pending.push(response);
    }
    let (mut kept, mut reset) = (Vec::new(), 0);
    for response in pending {
        let mut body = match response.await {
            Ok(response) => response.into_body(),
            Err(error) if stream_reset(&error) => {
                reset += 1;
                continue;
            }
            Err(error) => panic!("{error}"),
        };
        tokio::select! {
            ended = body.data() => {
                assert!(matches!(ended, Some(Err(ref e)) if stream_reset(e)), "{ended:?}");
                reset += 1;
            }
            () = tokio::time::sleep(Duration::from_secs(1)) => kept.push(body),
        }
    }
    (kept, reset)
}

#[tokio::test(start_paused = true)]
async fn streams_the_client_resets_return_their_buffered_bytes() {
    let (_scripted, gateway) =
        gateway("send_timeout = \"30s\"\nmax_buffered_response_bytes = 5000").await;
    let (mut client, _ended) = h2_client(gateway.addr, 0).await;
    // Two ~2 KB answers fit in the limit, a third is reset.
    let (kept, reset) = open_stalled(&mut client, gateway.addr, 3).await;
    assert_eq!((kept.len(), reset), (2, 1), "the limit must be in force");
    // The client gives up on the stalled streams (RST_STREAM CANCEL)...
    drop(kept);
    // ...and their bytes are free again: two new answers are kept, not reset.
    let (kept, reset) = open_stalled(&mut client, gateway.addr, 2).await;
    assert_eq!((kept.len(), reset), (2, 0));
}

/// An HTTP/1 request on `stream`; the answer's status line, or `None` if
/// the gateway closed the connection without one.
async fn status_line(stream: &mut TcpStream) -> Option<String> {
    stream
        .write_all(b"GET /unrouted HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .ok()?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    let mut rest = [0u8; 4096];
    // The rest of this small answer; the connection stays open.
    let _ = tokio::time::timeout(Duration::from_millis(100), stream.read(&mut rest)).await;
    Some(String::from_utf8_lossy(&head).trim_end().to_owned())
}

#[tokio::test(start_paused = true)]
async fn connections_above_max_connections_are_closed_and_accepting_goes_on() {
    let (_scripted, gateway) = gateway("max_connections = 2").await;
    let mut first = TcpStream::connect(gateway.addr).await.expect("connect");
    let mut second = TcpStream::connect(gateway.addr).await.expect("connect");
    assert_eq!(
        status_line(&mut first).await.as_deref(),
        Some("HTTP/1.1 404 Not Found")
    );
    assert_eq!(
        status_line(&mut second).await.as_deref(),
        Some("HTTP/1.1 404 Not Found")
    );
    let mut third = TcpStream::connect(gateway.addr).await.expect("connect");
    assert_eq!(
        status_line(&mut third).await,
        None,
        "a connection above the cap is closed"
    );
    // One slot frees when a client leaves; the next connection is served.
    drop(first);
    let mut served = false;
    for _ in 0..20 {
        let mut next = TcpStream::connect(gateway.addr).await.expect("connect");
        if status_line(&mut next).await.is_some() {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(served, "the listener must keep accepting below the cap");
    assert_eq!(
        status_line(&mut second).await.as_deref(),
        Some("HTTP/1.1 404 Not Found")
    );
}
