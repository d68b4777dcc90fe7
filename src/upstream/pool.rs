//! A fixed set of long-lived HTTP/2 connections to one upstream.
//!
//! Each slot owns one connection and a background task that dials it, runs
//! it, and redials with exponential backoff and jitter when it drops. Dialling
//! happens at start-up and on reconnect, never on the request path: a request
//! takes a ready connection (round-robin over the live slots) or fails fast
//! with "unreachable" when none is up. Requests are multiplexed as HTTP/2
//! streams; when the server caps concurrent streams, hyper queues the excess
//! on that connection rather than failing it.
//!
//! A connection is up once the upstream's SETTINGS frame has arrived, not
//! when hyper's handshake returns (which is before the peer has said a
//! word): a server that does not speak HTTP/2 is a failed dial, and its
//! redials back off.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::client::conn::http2::{Builder, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::backoff::Backoff;

/// Largest header or trailer block accepted from an upstream, in bytes of
/// decoded header list (HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE). A block over
/// it fails the call with a 502 (see `grpc::exchange_failed`).
pub const MAX_METADATA_BYTES: u32 = 16 << 10;

/// How often one slot warns about a failing upstream; the failures in
/// between are logged at debug level and counted in the next warning.
const WARN_INTERVAL: Duration = Duration::from_secs(30);

/// Connection settings for one upstream, from routes.toml.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Upstream name, for errors and logs.
    pub name: String,
    /// Where to connect: one authority per endpoint.
    pub endpoints: Vec<Authority>,
    /// Connections per endpoint.
    pub connections: usize,
    /// Dial timeout.
    pub connect_timeout: Duration,
    /// HTTP/2 PING interval.
    pub keepalive_interval: Duration,
    /// PING acknowledgement timeout.
    pub keepalive_timeout: Duration,
    /// First redial delay.
    pub backoff_initial: Duration,
    /// Longest redial delay.
    pub backoff_max: Duration,
}

/// The request body sent upstream: one pre-framed gRPC message.
///
/// Its size hint is deliberately inexact: hyper turns an exact one into a
/// `content-length` header, which gRPC servers hand to the service as
/// metadata, and a gRPC request carries only the headers of the gRPC over
/// HTTP/2 protocol and the metadata the gateway built.
#[derive(Debug)]
pub struct UpstreamBody(Full<Bytes>);

/// The live connections of one upstream.
#[derive(Debug)]
pub struct Pool {
    slots: Vec<Arc<Slot>>,
    next: AtomicUsize,
    scheme: Scheme,
    shutdown: watch::Sender<bool>,
}

/// A connection the pool handed out for one call.
#[derive(Debug)]
pub struct Lease {
    /// Where the request goes (for the request URI).
    pub authority: Authority,
    /// The HTTP/2 connection handle (cheap to clone; streams multiplex).
    pub sender: SendRequest<UpstreamBody>,
}

/// Passes a connection's bytes through, watching the first frame the
/// upstream sends: HTTP/2 makes it a SETTINGS frame (RFC 9113 §3.4), so once
/// one has been read whole the peer speaks HTTP/2. `settings` is sent then,
/// or dropped as soon as the first bytes are anything else.
#[derive(Debug)]
struct FirstSettings<T> {
    io: T,
    /// The first frame's 9-byte header, as far as it has been read.
    header: [u8; FRAME_HEADER_LEN],
    header_read: usize,
    /// Payload bytes of the SETTINGS frame still to come.
    payload_left: usize,
    settings: Option<oneshot::Sender<()>>,
}

const FRAME_HEADER_LEN: usize = 9;
const FRAME_TYPE_SETTINGS: u8 = 0x4;
const FLAG_ACK: u8 = 0x1;

/// One connection slot and the state its dialler task publishes.
#[derive(Debug)]
struct Slot {
    authority: Authority,
    sender: ArcSwapOption<SendRequest<UpstreamBody>>,
    last_error: ArcSwapOption<String>,
}

// === impl Pool ===

impl Pool {
    /// Starts one dialler task per slot and waits (up to the connect timeout)
    /// for the first attempt of each, so the gateway starts with warm
    /// connections. An upstream that is down does not stop start-up: its
    /// calls answer 503 until a redial succeeds.
    pub async fn start(config: PoolConfig) -> Pool {
        let (shutdown, _) = watch::channel(false);
        let mut slots = Vec::new();
        let mut first_attempts = Vec::new();
        for authority in &config.endpoints {
            for _ in 0..config.connections.max(1) {
                let slot = Arc::new(Slot {
                    authority: authority.clone(),
                    sender: ArcSwapOption::empty(),
                    last_error: ArcSwapOption::empty(),
                });
                let (attempted_tx, attempted_rx) = tokio::sync::oneshot::channel();
                tokio::spawn(run_slot(
                    slot.clone(),
                    config.clone(),
                    shutdown.subscribe(),
                    attempted_tx,
                ));
                first_attempts.push(attempted_rx);
                slots.push(slot);
            }
        }
        for attempt in first_attempts {
            let _ = tokio::time::timeout(config.connect_timeout * 2, attempt).await;
        }
        Pool {
            slots,
            next: AtomicUsize::new(0),
            scheme: Scheme::HTTP,
            shutdown,
        }
    }

    /// A ready connection, round-robin over the live slots, or why there is
    /// none. Turns are taken among the live connections only, so a slot
    /// that is down does not hand its share to one neighbour.
    pub fn lease(&self) -> Result<Lease, String> {
        let live: Vec<(&Slot, Arc<SendRequest<UpstreamBody>>)> = self
            .slots
            .iter()
            .filter_map(|slot| {
                let sender = slot.sender.load_full()?;
                (!sender.is_closed()).then_some((slot.as_ref(), sender))
            })
            .collect();
        if !live.is_empty() {
            let turn = self.next.fetch_add(1, Ordering::Relaxed) % live.len();
            let (slot, sender) = &live[turn];
            return Ok(Lease {
                authority: slot.authority.clone(),
                sender: SendRequest::clone(sender),
            });
        }
        let reason = self
            .slots
            .iter()
            .find_map(|s| s.last_error.load_full())
            .map_or_else(|| "no connection is up yet".to_string(), |e| e.to_string());
        Err(reason)
    }

    /// The URI scheme of requests on this pool.
    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    /// How many slots currently hold a live connection.
    pub fn connected(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.sender.load().as_deref().is_some_and(|c| !c.is_closed()))
            .count()
    }

    /// Total slots (connections the pool keeps open when healthy).
    pub fn size(&self) -> usize {
        self.slots.len()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Stops the dialler tasks; open connections close with them.
        let _ = self.shutdown.send(true);
    }
}

/// Dials, serves and redials one slot until the pool is dropped.
async fn run_slot(
    slot: Arc<Slot>,
    config: PoolConfig,
    mut shutdown: watch::Receiver<bool>,
    first_attempt: oneshot::Sender<()>,
) {
    let mut first_attempt = Some(first_attempt);
    let mut backoff = Backoff::new(config.backoff_initial, config.backoff_max);
    let mut warnings = Warnings::default();
    loop {
        match dial(&slot.authority, &config).await {
            Ok((sender, connection)) => {
                tracing::debug!(upstream = %config.name, endpoint = %slot.authority, "connected");
                // Published before start-up is signalled, so it sees a ready connection.
                slot.sender.store(Some(Arc::new(sender)));
                slot.last_error.store(None);
                if let Some(tx) = first_attempt.take() {
                    let _ = tx.send(());
                }
                backoff.reset();
                tokio::select! {
                    result = connection => {
                        let reason = match result {
                            Ok(()) => "connection closed by the upstream".to_string(),
                            Err(e) => format!("connection lost: {e}"),
                        };
                        warnings.log(&config.name, &slot.authority, &reason, "upstream connection dropped; redialling");
                        slot.last_error.store(Some(Arc::new(reason)));
                    }
                    _ = shutdown.changed() => return,
                }
                slot.sender.store(None);
            }
            Err(reason) => {
                warnings.log(
                    &config.name,
                    &slot.authority,
                    &reason,
                    "cannot connect to upstream",
                );
                slot.last_error.store(Some(Arc::new(reason)));
                slot.sender.store(None);
                if let Some(tx) = first_attempt.take() {
                    let _ = tx.send(());
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// One slot's warnings about its upstream, at most one per [`WARN_INTERVAL`].
#[derive(Debug, Default)]
struct Warnings {
    last: Option<Instant>,
    /// Failures logged at debug level since the last warning.
    quiet: u32,
}

impl Warnings {
    fn log(&mut self, upstream: &str, endpoint: &Authority, reason: &str, what: &str) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|at| now.duration_since(at) < WARN_INTERVAL)
        {
            self.quiet += 1;
            tracing::debug!(upstream, %endpoint, reason, "{what}");
            return;
        }
        self.last = Some(now);
        let since_last_warning = std::mem::take(&mut self.quiet);
        tracing::warn!(upstream, %endpoint, reason, since_last_warning, "{what}");
    }
}

type Connection = hyper::client::conn::http2::Connection<
    TokioIo<FirstSettings<TcpStream>>,
    UpstreamBody,
    TokioExecutor,
>;

/// Connects, shakes hands, and waits for the upstream's SETTINGS, all within
/// the connect timeout.
async fn dial(
    authority: &Authority,
    config: &PoolConfig,
) -> Result<(SendRequest<UpstreamBody>, Pin<Box<Connection>>), String> {
    let address = format!(
        "{}:{}",
        authority.host(),
        authority.port_u16().unwrap_or(80)
    );
    let connect = async {
        let stream = TcpStream::connect(&address)
            .await
            .map_err(|e| format!("connect to {address}: {e}"))?;
        // Small gRPC frames must not wait for Nagle's algorithm.
        stream
            .set_nodelay(true)
            .map_err(|e| format!("set TCP_NODELAY: {e}"))?;
        let (settings_tx, settings) = oneshot::channel();
        let (sender, connection) = Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(config.keepalive_interval)
            .keep_alive_timeout(config.keepalive_timeout)
            .keep_alive_while_idle(true)
            .initial_stream_window_size(1 << 20)
            .initial_connection_window_size(4 << 20)
            .max_header_list_size(MAX_METADATA_BYTES)
            .handshake(TokioIo::new(FirstSettings::new(stream, settings_tx)))
            .await
            .map_err(|e| format!("HTTP/2 handshake with {address}: {e}"))?;
        let mut connection = Box::pin(connection);
        tokio::select! {
            heard = settings => heard.map_err(|_| {
                format!("{address} answered with something other than HTTP/2 SETTINGS (not an HTTP/2 server?)")
            })?,
            ended = &mut connection => return Err(match ended {
                Ok(()) => format!("{address} closed the connection before its HTTP/2 SETTINGS"),
                Err(e) => format!("HTTP/2 handshake with {address}: {e}"),
            }),
        }
        Ok((sender, connection))
    };
    tokio::time::timeout(config.connect_timeout, connect)
        .await
        .map_err(|_| {
            format!(
                "connect to {address}: no HTTP/2 SETTINGS within {:?}",
                config.connect_timeout
            )
        })?
}

// === impl UpstreamBody ===

impl UpstreamBody {
    /// A body of one framed message.
    pub fn new(framed: Bytes) -> UpstreamBody {
        UpstreamBody(Full::new(framed))
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.0).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        // A lower bound without an upper one: see the type's doc.
        let mut hint = SizeHint::new();
        hint.set_lower(self.0.size_hint().lower());
        hint
    }
}

// === impl FirstSettings ===

impl<T> FirstSettings<T> {
    fn new(io: T, settings: oneshot::Sender<()>) -> FirstSettings<T> {
        FirstSettings {
            io,
            header: [0; FRAME_HEADER_LEN],
            header_read: 0,
            payload_left: 0,
            settings: Some(settings),
        }
    }

    /// Follows the first frame through bytes as they are read.
    fn watch(&mut self, mut bytes: &[u8]) {
        while self.settings.is_some() && !bytes.is_empty() {
            if self.header_read < FRAME_HEADER_LEN {
                let take = bytes.len().min(FRAME_HEADER_LEN - self.header_read);
                self.header[self.header_read..self.header_read + take]
                    .copy_from_slice(&bytes[..take]);
                self.header_read += take;
                bytes = &bytes[take..];
                if self.header_read == FRAME_HEADER_LEN {
                    self.read_header();
                }
            } else {
                let take = bytes.len().min(self.payload_left);
                self.payload_left -= take;
                bytes = &bytes[take..];
            }
            if self.header_read == FRAME_HEADER_LEN
                && self.payload_left == 0
                && let Some(settings) = self.settings.take()
            {
                let _ = settings.send(());
            }
        }
    }

    /// Checks the first frame's header is a SETTINGS frame's (length, type,
    /// flags, stream 0); if not, drops the sender to say so.
    fn read_header(&mut self) {
        let [l0, l1, l2, kind, flags, s0, s1, s2, s3] = self.header;
        let length = u32::from_be_bytes([0, l0, l1, l2]) as usize;
        let stream = u32::from_be_bytes([s0, s1, s2, s3]) & 0x7fff_ffff;
        let is_settings = kind == FRAME_TYPE_SETTINGS
            && flags & FLAG_ACK == 0
            && stream == 0
            && length.is_multiple_of(6);
        if is_settings {
            self.payload_left = length;
        } else {
            self.settings = None;
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for FirstSettings<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if this.settings.is_some() {
            this.watch(&buf.filled()[before..]);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for FirstSettings<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watched(chunks: &[&[u8]]) -> Result<(), oneshot::error::TryRecvError> {
        let (tx, mut rx) = oneshot::channel();
        let mut watch = FirstSettings::new((), tx);
        for chunk in chunks {
            watch.watch(chunk);
        }
        rx.try_recv()
    }

    #[test]
    fn settings_frame_is_seen_across_reads() {
        let settings: &[u8] = &[0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100];
        assert_eq!(watched(&[settings]), Ok(()));
        assert_eq!(
            watched(&[&settings[..4], &settings[4..10], &settings[10..]]),
            Ok(())
        );
        // An empty SETTINGS frame followed by more frames.
        assert_eq!(watched(&[&[0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 8]]), Ok(()));
    }

    #[test]
    fn incomplete_settings_frame_is_not_enough() {
        assert_eq!(
            watched(&[&[0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3]]),
            Err(oneshot::error::TryRecvError::Empty)
        );
    }

    #[test]
    fn anything_else_first_is_not_http2() {
        for first in [
            &b"HTTP/1.1 400 Bad Request\r\n"[..],
            &[0, 0, 0, 4, 1, 0, 0, 0, 0], // a SETTINGS ack
            &[0, 0, 8, 6, 0, 0, 0, 0, 0], // a PING
            &[0, 0, 5, 4, 0, 0, 0, 0, 0], // a length no setting adds up to
            &[0, 0, 0, 4, 0, 0, 0, 0, 1], // on a stream
        ] {
            assert_eq!(
                watched(&[first]),
                Err(oneshot::error::TryRecvError::Closed),
                "{first:?}"
            );
        }
    }
}
