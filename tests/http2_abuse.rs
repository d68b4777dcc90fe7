//! HTTP/2 abuse a client can try on the public listener, written frame by
//! frame on a raw socket (an ordinary client library would not send it):
//!
//! - rapid reset (CVE-2023-44487): streams opened and reset at once, in a
//!   batch. Past `http2_max_pending_accept_reset_streams` the gateway
//!   answers GOAWAY(ENHANCE_YOUR_CALM) and closes; the upstream sees at most
//!   a handful of the calls. Below the bound, the connection goes on.
//! - CONTINUATION flood (CVE-2024-27316 and kin): a header block that never
//!   ends. After a few CONTINUATION frames, GOAWAY(ENHANCE_YOUR_CALM).
//! - streams the gateway must reset for the client's errors (a request
//!   that says `content-length: 5` and ends at once): past
//!   `http2_max_local_error_reset_streams`, GOAWAY(ENHANCE_YOUR_CALM).
//! - an oversized header list (over `[limits] max_header_bytes`): refused
//!   on its stream without reaching the upstream; the connection goes on.
//!
//! Everything here waits on frames the gateway sends, each wait bounded.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame types and flags (RFC 9113 §6).
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// Error codes (RFC 9113 §7).
const CANCEL: u32 = 0x8;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// How long any one wait for the gateway may take on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(30);

/// One frame on the wire.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("frame length");
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK integer with an `n`-bit prefix whose high bits are `first` (RFC 7541 §5.1).
fn hpack_int(first: u8, n: u32, value: usize, out: &mut Vec<u8>) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// A literal header field without indexing, with a literal name (RFC 7541 §6.2.2).
fn literal(name: &str, value: &str, out: &mut Vec<u8>) {
    out.push(0x00);
    hpack_int(0, 7, name.len(), out);
    out.extend_from_slice(name.as_bytes());
    hpack_int(0, 7, value.len(), out);
    out.extend_from_slice(value.as_bytes());
}

/// The header block of `GET path` (static-table method and scheme).
fn get_block(path: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86]; // :method GET, :scheme http
    // :path and :authority, literal values with indexed names 4 and 1.
    block.push(0x04);
    hpack_int(0, 7, path.len(), &mut block);
    block.extend_from_slice(path.as_bytes());
    block.push(0x01);
    hpack_int(0, 7, "gateway".len(), &mut block);
    block.extend_from_slice(b"gateway");
    block
}

/// A routed GET: each one the gateway serves is a call upstream.
const ROUTED: &str = "/v1/echo";

/// `count` streams from `first_stream` on, each opened (a complete GET) and
/// reset right away, in one buffer.
fn rapid_resets(first_stream: u32, count: u32) -> Vec<u8> {
    let block = get_block(ROUTED);
    let mut out = Vec::new();
    for n in 0..count {
        let id = first_stream + 2 * n;
        out.extend(frame(HEADERS, END_STREAM | END_HEADERS, id, &block));
        out.extend(frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
    }
    out
}

/// A connection that has sent the preface and its (empty) SETTINGS.
async fn open(addr: SocketAddr) -> (OwnedReadHalf, tokio::net::tcp::OwnedWriteHalf) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (read, mut write) = stream.into_split();
    let mut start = PREFACE.to_vec();
    start.extend(frame(SETTINGS, 0, 0, &[]));
    write.write_all(&start).await.expect("preface");
    (read, write)
}

/// One frame from the gateway: (type, flags, stream, payload), or `None`
/// once it closed the connection.
async fn next_frame(read: &mut OwnedReadHalf) -> Option<(u8, u8, u32, Vec<u8>)> {
    let read_one = async {
        let mut head = [0u8; 9];
        read.read_exact(&mut head).await.ok()?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0; len];
        read.read_exact(&mut payload).await.ok()?;
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        Some((head[3], head[4], stream, payload))
    };
    tokio::time::timeout(PATIENCE, read_one)
        .await
        .expect("the gateway neither sent a frame nor closed")
}

/// Reads until a GOAWAY; its error code, or `None` if the connection closed without one.
async fn goaway_code(read: &mut OwnedReadHalf) -> Option<u32> {
    while let Some((kind, _, _, payload)) = next_frame(read).await {
        if kind == GOAWAY {
            return Some(u32::from_be_bytes([
                payload[4], payload[5], payload[6], payload[7],
            ]));
        }
    }
    None
}

/// Reads until the gateway closes the connection.
async fn closed(read: &mut OwnedReadHalf) {
    while next_frame(read).await.is_some() {}
}

/// The first HEADERS frame on `stream`: (flags, header block); panics on a GOAWAY.
async fn response_headers(read: &mut OwnedReadHalf, stream: u32) -> (u8, Vec<u8>) {
    loop {
        match next_frame(read).await {
            Some((HEADERS, flags, id, block)) if id == stream => return (flags, block),
            Some((GOAWAY, ..)) => panic!("GOAWAY while waiting for stream {stream}"),
            Some(_) => {}
            None => panic!("closed while waiting for stream {stream}"),
        }
    }
}

/// hpack's indexed `:status 200`: how hyper starts a 200 response.
const STATUS_200: u8 = 0x88;

async fn gateway(server: &str) -> (Scripted, TestGateway) {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let toml =
        everything_toml(scripted.addr, "").replace("[server]\n", &format!("[server]\n{server}\n"));
    (scripted, spawn_gateway(&toml).await)
}

#[tokio::test]
async fn rapid_reset_gets_goaway_enhance_your_calm_and_does_not_flood_the_upstream() {
    const STREAMS: u32 = 500;
    // The default bound: 20 pending-accept resets.
    let (scripted, gateway) = gateway("").await;
    let (mut read, mut write) = open(gateway.addr).await;
    // Written at once, as an attacker would; the gateway may close
    // before taking all of it.
    let _ = write.write_all(&rapid_resets(1, STREAMS)).await;
    assert_eq!(goaway_code(&mut read).await, Some(ENHANCE_YOUR_CALM));
    closed(&mut read).await;
    let calls = scripted.call_count();
    assert!(
        calls <= 20,
        "{calls} of {STREAMS} reset streams reached the upstream"
    );
}

#[tokio::test]
async fn resets_below_the_configured_bound_leave_the_connection_serving_and_above_it_close_it() {
    // Above h2's default of 20, so the key is what keeps this connection up.
    let (scripted, gateway) = gateway("http2_max_pending_accept_reset_streams = 100").await;
    let (mut read, mut write) = open(gateway.addr).await;
    let mut sent = rapid_resets(1, 50);
    sent.extend(frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        101,
        &get_block(ROUTED),
    ));
    write.write_all(&sent).await.expect("write");
    let (_, block) = response_headers(&mut read, 101).await;
    assert_eq!(block.first(), Some(&STATUS_200), "{block:?}");
    assert!(scripted.call_count() >= 1);

    let _ = write.write_all(&rapid_resets(103, 500)).await;
    assert_eq!(goaway_code(&mut read).await, Some(ENHANCE_YOUR_CALM));
    closed(&mut read).await;
}

#[tokio::test]
async fn a_continuation_flood_gets_goaway_enhance_your_calm_and_the_connection_closes() {
    let (scripted, gateway) = gateway("").await;
    let (mut read, mut write) = open(gateway.addr).await;
    // A header block that never ends: HEADERS without END_HEADERS, then
    // CONTINUATION frames of small headers, far more than any real block.
    let mut piece = Vec::new();
    literal("x-flood", &"a".repeat(64), &mut piece);
    let flood = tokio::spawn(async move {
        let first = frame(HEADERS, END_STREAM, 1, &get_block(ROUTED));
        if write.write_all(&first).await.is_err() {
            return;
        }
        for _ in 0..10_000 {
            if write
                .write_all(&frame(CONTINUATION, 0, 1, &piece))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    assert_eq!(goaway_code(&mut read).await, Some(ENHANCE_YOUR_CALM));
    closed(&mut read).await;
    flood.abort();
    assert_eq!(scripted.call_count(), 0);
}

#[tokio::test]
async fn an_oversized_header_list_is_refused_on_its_stream_and_the_connection_goes_on() {
    // 16 KiB of header list at most; two 12 KB headers are 24 KB.
    let (scripted, gateway) = gateway("").await;
    let (mut read, mut write) = open(gateway.addr).await;
    let mut first = get_block(ROUTED);
    literal("x-big-1", &"a".repeat(12_000), &mut first);
    let mut second = Vec::new();
    literal("x-big-2", &"b".repeat(12_000), &mut second);
    let mut sent = frame(HEADERS, END_STREAM, 1, &first);
    sent.extend(frame(CONTINUATION, END_HEADERS, 1, &second));
    write.write_all(&sent).await.expect("write");
    let (flags, block) = response_headers(&mut read, 1).await;
    assert_ne!(flags & END_STREAM, 0, "the refusal has no body");
    assert_ne!(block.first(), Some(&STATUS_200), "{block:?}");
    assert_eq!(scripted.call_count(), 0, "the upstream never saw it");

    let next = frame(HEADERS, END_STREAM | END_HEADERS, 3, &get_block(ROUTED));
    write.write_all(&next).await.expect("write");
    let (_, block) = response_headers(&mut read, 3).await;
    assert_eq!(block.first(), Some(&STATUS_200), "{block:?}");
    assert_eq!(scripted.call_count(), 1);
}

/// `count` streams from `first_stream` on, each a request that announces
/// a body (`content-length: 5`) and ends in its HEADERS frame: malformed
/// (RFC 9113 §8.1.1), so the gateway resets each, a reset the client caused.
fn provoked_resets(first_stream: u32, count: u32) -> Vec<u8> {
    let mut block = get_block(ROUTED);
    // content-length, literal value with the static table's name 28.
    hpack_int(0x00, 4, 28, &mut block);
    block.extend_from_slice(&[1, b'5']);
    let mut out = Vec::new();
    for n in 0..count {
        let id = first_stream + 2 * n;
        out.extend(frame(HEADERS, END_STREAM | END_HEADERS, id, &block));
    }
    out
}

#[tokio::test]
async fn resets_a_client_provokes_are_bounded_by_http2_max_local_error_reset_streams() {
    let (scripted, gateway) = gateway("http2_max_local_error_reset_streams = 10").await;
    let (mut read, mut write) = open(gateway.addr).await;
    let mut sent = provoked_resets(1, 5);
    sent.extend(frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        11,
        &get_block(ROUTED),
    ));
    write.write_all(&sent).await.expect("write");
    let (_, block) = response_headers(&mut read, 11).await;
    assert_eq!(block.first(), Some(&STATUS_200), "5 of 10: {block:?}");
    assert_eq!(
        scripted.call_count(),
        1,
        "malformed requests never go upstream"
    );

    let _ = write.write_all(&provoked_resets(13, 50)).await;
    assert_eq!(goaway_code(&mut read).await, Some(ENHANCE_YOUR_CALM));
    closed(&mut read).await;
}
