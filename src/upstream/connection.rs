//! One upstream connection slot: a background task dials it, runs it, and
//! redials with exponential backoff and jitter when it drops. Dialling
//! happens at start-up and on reconnect, never on the request path. A TLS
//! upstream's handshake (see [`super::tls`]) is part of the dial.
//!
//! A connection is up once the upstream's SETTINGS frame has arrived, not
//! when hyper's handshake returns (which is before the peer has said a
//! word): a server that does not speak HTTP/2 is a failed dial, and its
//! redials back off.

mod first_settings;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::uri::Authority;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::client::conn::http2::{Builder, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use self::first_settings::FirstSettings;
use super::cancel::{CancelPolicy, Cancellations};
use super::pool::PoolConfig;
use crate::backoff::Backoff;

/// Largest header or trailer block accepted from an upstream, in bytes of
/// decoded header list (HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE). A block over
/// it fails the call with a 502 (see `grpc::exchange_failed`).
pub(super) const MAX_METADATA_BYTES: u32 = 16 << 10;

/// How often one slot warns about a failing upstream; the failures in
/// between are logged at debug level and counted in the next warning.
const WARN_INTERVAL: Duration = Duration::from_secs(30);

/// The request body sent upstream: one pre-framed gRPC message, or (for a
/// client-streaming call) framed messages as the client sends them.
///
/// Its size hint is deliberately inexact: hyper turns an exact one into a
/// `content-length` header, which gRPC servers hand to the service as
/// metadata, and a gRPC request carries only the headers of the gRPC over
/// HTTP/2 protocol and the metadata the gateway built.
#[derive(Debug)]
pub struct UpstreamBody(Kind);

/// A message stream's error: the client's input could not be sent (the
/// stage that produced it keeps the reason); hyper resets the stream.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

enum Kind {
    One(Full<Bytes>),
    /// Polled by hyper only when the HTTP/2 stream has send window, so a
    /// fast client is slowed to the upstream's pace.
    Messages(UnsyncBoxBody<Bytes, BoxError>),
}

impl std::fmt::Debug for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kind::One(_) => f.write_str("One"),
            Kind::Messages(_) => f.write_str("Messages"),
        }
    }
}

/// One connection slot and the state its dialler task publishes.
#[derive(Debug)]
pub(super) struct Slot {
    pub(super) authority: Authority,
    pub(super) sender: ArcSwapOption<SendRequest<UpstreamBody>>,
    pub(super) last_error: ArcSwapOption<String>,
    /// What happened to this slot's connections, for metrics.
    pub(super) events: ConnectionEvents,
    /// Its connection's reset budget for calls whose client left.
    pub(super) cancellations: Cancellations,
}

/// How often connections failed to come up or went down, per slot.
#[derive(Debug, Default)]
pub(super) struct ConnectionEvents {
    /// Dials that failed (refused, timed out, not HTTP/2, TLS).
    pub(super) dial_failures: AtomicU64,
    /// Connections the upstream closed cleanly (after a GOAWAY, say).
    pub(super) closed_by_upstream: AtomicU64,
    /// Connections lost to an error (reset, keepalive timeout).
    pub(super) lost: AtomicU64,
}

// === impl Slot ===

impl Slot {
    pub(super) fn new(authority: Authority, cancel: CancelPolicy) -> Slot {
        Slot {
            authority,
            sender: ArcSwapOption::empty(),
            last_error: ArcSwapOption::empty(),
            events: ConnectionEvents::default(),
            cancellations: Cancellations::new(cancel),
        }
    }

    /// The slot's connection, if it is up.
    pub(super) fn live(&self) -> Option<Arc<SendRequest<UpstreamBody>>> {
        let sender = self.sender.load_full()?;
        (!sender.is_closed()).then_some(sender)
    }
}

/// Dials, serves and redials one slot until the pool is dropped.
pub(super) async fn run_slot(
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
                slot.cancellations.renew();
                // Published before start-up is signalled, so it sees a ready connection.
                slot.sender.store(Some(Arc::new(sender)));
                slot.last_error.store(None);
                if let Some(tx) = first_attempt.take() {
                    let _ = tx.send(());
                }
                backoff.reset();
                tokio::select! {
                    result = connection => {
                        let (reason, counter) = match result {
                            Ok(()) => ("connection closed by the upstream".to_string(), &slot.events.closed_by_upstream),
                            Err(e) => (format!("connection lost: {e}"), &slot.events.lost),
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                        warnings.log(&config.name, &slot.authority, &reason, "upstream connection dropped; redialling");
                        slot.last_error.store(Some(Arc::new(reason)));
                    }
                    _ = shutdown.changed() => return,
                }
                slot.sender.store(None);
            }
            Err(reason) => {
                slot.events.dial_failures.fetch_add(1, Ordering::Relaxed);
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

/// A running HTTP/2 connection, over TCP or TLS: it ends when the connection does.
type Connection = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// Connects (and, for a TLS upstream, runs the TLS handshake), shakes
/// hands, and waits for the upstream's SETTINGS, all within the connect
/// timeout.
async fn dial(
    authority: &Authority,
    config: &PoolConfig,
) -> Result<(SendRequest<UpstreamBody>, Connection), String> {
    let default_port = if config.tls.is_some() { 443 } else { 80 };
    let address = format!(
        "{}:{}",
        authority.host(),
        authority.port_u16().unwrap_or(default_port)
    );
    let connect = async {
        let stream = TcpStream::connect(&address)
            .await
            .map_err(|e| format!("connect to {address}: {e}"))?;
        // Small gRPC frames must not wait for Nagle's algorithm.
        stream
            .set_nodelay(true)
            .map_err(|e| format!("set TCP_NODELAY: {e}"))?;
        match &config.tls {
            Some(tls) => {
                let stream = tls
                    .connect(authority.host(), stream)
                    .await
                    .map_err(|e| format!("{address}: {e}"))?;
                http2_handshake(stream, &address, config).await
            }
            None => http2_handshake(stream, &address, config).await,
        }
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

/// The HTTP/2 handshake on a connected stream, up to the upstream's first
/// SETTINGS frame.
async fn http2_handshake<I>(
    io: I,
    address: &str,
    config: &PoolConfig,
) -> Result<(SendRequest<UpstreamBody>, Connection), String>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (settings_tx, settings) = oneshot::channel();
    let (sender, connection) = Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(config.keepalive_interval)
        .keep_alive_timeout(config.keepalive_timeout)
        .keep_alive_while_idle(true)
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(4 << 20)
        .max_header_list_size(MAX_METADATA_BYTES)
        .handshake(TokioIo::new(FirstSettings::new(io, settings_tx)))
        .await
        .map_err(|e| format!("HTTP/2 handshake with {address}: {e}"))?;
    let mut connection: Connection = Box::pin(connection);
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
}

// === impl UpstreamBody ===

impl UpstreamBody {
    /// A body of one framed message.
    pub fn new(framed: Bytes) -> UpstreamBody {
        UpstreamBody(Kind::One(Full::new(framed)))
    }

    /// A body of framed messages, sent as `messages` yields them.
    pub fn messages<B>(messages: B) -> UpstreamBody
    where
        B: Body<Data = Bytes, Error = BoxError> + Send + 'static,
    {
        UpstreamBody(Kind::Messages(UnsyncBoxBody::new(messages)))
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.0 {
            Kind::One(full) => Pin::new(full)
                .poll_frame(cx)
                .map(|frame| frame.map(|f| f.map_err(|never: Infallible| match never {}))),
            Kind::Messages(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::One(full) => full.is_end_stream(),
            Kind::Messages(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        // A lower bound without an upper one: see the type's doc.
        let lower = match &self.0 {
            Kind::One(full) => full.size_hint().lower(),
            Kind::Messages(_) => 0,
        };
        let mut hint = SizeHint::new();
        hint.set_lower(lower);
        hint
    }
}
