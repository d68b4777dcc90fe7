//! The listener: accepts TCP connections, serves HTTP/1.1 and HTTP/2
//! (cleartext, prior knowledge or upgrade-free h2c, or over TLS with ALPN,
//! see [`tls`]) with hyper, bounds what a client may send before a request
//! is even parsed, and drains connections on shutdown.

mod connection;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulConnection;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::limits::Limits;
use crate::metadata::ClientAddr;
use connection::{Activity, Bounds, Tracked, Verdict};
use tls::ServerTls;

/// The public listener's settings, compiled from `[server]`.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    /// Address the gateway listens on.
    pub listen: SocketAddr,
    /// How long a client may take to send an HTTP/1 request head.
    pub header_read_timeout: Duration,
    /// How long in-flight calls may finish after a shutdown signal.
    pub shutdown_grace: Duration,
    /// After a shutdown signal, how long the listener still accepts while
    /// readiness answers 503 (read from the snapshot live at the signal).
    pub drain_delay: Duration,
    /// Concurrent streams per client HTTP/2 connection.
    pub http2_max_concurrent_streams: u32,
    /// From accept to a complete first request head, whatever the protocol.
    pub first_request_timeout: Duration,
    /// How long a connection with no request in flight is kept open.
    pub idle_timeout: Duration,
    /// How long a response may go without the client accepting any of it.
    pub send_timeout: Duration,
    /// Response bytes one connection's unfinished responses may hold.
    pub max_buffered_response_bytes: usize,
    /// Connections served at once.
    pub max_connections: usize,
    /// Threads serving connections, each with its own runtime (0: none,
    /// connections run on the caller's runtime); see [`crate::workers`].
    pub worker_threads: usize,
    /// HTTP/2 streams a client may reset before they are accepted (rapid reset).
    pub http2_max_pending_accept_reset_streams: usize,
    /// HTTP/2 streams the gateway may reset for a client's errors, per connection.
    pub http2_max_local_error_reset_streams: usize,
    /// TLS on the listener; the certificate is swapped on reload.
    pub tls: Option<Arc<ServerTls>>,
}

/// How long to wait before accepting again after `accept` failed (EMFILE,
/// ENFILE, ENOBUFS): long enough not to spin, short enough that a freed
/// descriptor is used soon.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// At most one warning per this interval for conditions that repeat per
/// connection (accept failures, the connection cap), with a count of the
/// ones left out.
const WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// Serves `service` (the public pipeline, or any axum `Router`) on
/// `listener` until `shutdown` resolves, then waits up to the configured
/// grace period for in-flight requests.
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    settings: &ListenerSettings,
    limits: &Limits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()>
where
    S: Public,
{
    let builder = Arc::new(connection_builder(settings, limits));
    let acceptor = match &settings.tls {
        Some(tls) => Some(tls.acceptor().map_err(std::io::Error::other)?),
        None => None,
    };
    let bounds = bounds(settings);
    let capacity = settings.max_connections.min(Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(capacity));
    let (stop, stopping) = watch::channel(false);
    let mut accept_failures = Throttled::default();
    let mut refusals = Throttled::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    if let Some(left_out) = accept_failures.due() {
                        tracing::warn!(error = %e, left_out, "accept failed; backing off");
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Closing at once frees the descriptor; an HTTP answer would
            // first need the protocol sniffed, which is what costs.
            if let Some(left_out) = refusals.due() {
                tracing::warn!(
                    limit = capacity,
                    left_out,
                    "connection limit reached; closing new connections"
                );
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = Activity::new(bounds);
        let service = ConnectionService {
            service: service.clone(),
            peer,
            activity: activity.clone(),
        };
        let (builder, acceptor, stopping) = (builder.clone(), acceptor.clone(), stopping.clone());
        // Served on a worker thread's runtime (see `crate::workers`).
        crate::workers::spawn_connection(stream, move |stream| async move {
            let Some(acceptor) = acceptor else {
                let connection = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .into_owned();
                supervise(connection, activity, stopping, slot, peer).await;
                return;
            };
            // The handshake counts inside the first-request bound, which
            // runs from accept.
            let handshake = acceptor.accept(stream);
            let stream = match tokio::time::timeout(bounds.first_request, handshake).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "no TLS handshake within first_request_timeout");
                    return;
                }
            };
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            supervise(connection, activity, stopping, slot, peer).await;
        });
    }
    drop(listener);
    let _ = stop.send(true);
    tracing::info!(grace = ?settings.shutdown_grace, "shutting down; draining connections");
    let all_closed = slots.acquire_many(u32::try_from(capacity).unwrap_or(u32::MAX));
    if tokio::time::timeout(settings.shutdown_grace, all_closed)
        .await
        .is_err()
    {
        tracing::warn!("grace period over; closing the remaining connections");
    }
    Ok(())
}

fn bounds(settings: &ListenerSettings) -> Bounds {
    Bounds {
        first_request: settings.first_request_timeout,
        idle: settings.idle_timeout,
        send: settings.send_timeout,
        buffered_bytes: settings.max_buffered_response_bytes,
    }
}

/// Drives one connection until it ends, a bound in `activity` is crossed,
/// or the server stops. A connection that never sent a request, or whose
/// responses the client stopped accepting, is dropped at once (the socket
/// closes and every stream's memory is freed); an idle or stopping one is
/// asked to finish (HTTP/2 GOAWAY) and dropped if it has not within
/// `send_timeout`. The slot is released when this returns.
async fn supervise<C>(
    connection: C,
    activity: Arc<Activity>,
    mut stopping: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
    peer: SocketAddr,
) where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    tokio::pin!(connection);
    tokio::select! {
        ended = connection.as_mut() => {
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            return;
        }
        verdict = activity.crossed() => {
            tracing::debug!(%peer, ?verdict, "closing connection");
            if verdict != Verdict::Idle {
                return;
            }
        }
        _ = stopping.wait_for(|stop| *stop) => {}
    }
    connection.as_mut().graceful_shutdown();
    tokio::select! {
        _ = connection.as_mut() => {}
        verdict = activity.crossed() => {
            if verdict == Verdict::Idle {
                let _ = tokio::time::timeout(activity.send_bound(), connection).await;
            }
        }
    }
}

/// Says when a repeating warning is due again, and how many were left out.
#[derive(Debug, Default)]
struct Throttled {
    last: Option<Instant>,
    left_out: u64,
}

impl Throttled {
    fn due(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < WARNING_INTERVAL)
        {
            self.left_out += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.left_out))
    }
}

fn connection_builder(settings: &ListenerSettings, limits: &Limits) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        // hyper answers 431 itself above these; the pipeline applies the
        // configured limits first, with a JSON body.
        .max_headers(limits.max_headers.saturating_mul(2).max(16))
        .max_buf_size(
            limits.max_header_bytes.max(8192) + limits.max_path_bytes + limits.max_query_bytes,
        );
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.http2_max_concurrent_streams)
        // Also bounds a header block's CONTINUATION frames: h2 allows about
        // this size over the frame size, plus a quarter, and at least 5.
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        // Rapid reset (CVE-2023-44487): streams reset before they were
        // accepted; past the bound, GOAWAY with ENHANCE_YOUR_CALM.
        .max_pending_accept_reset_streams(settings.http2_max_pending_accept_reset_streams)
        // Streams the gateway resets for the client's errors (RUSTSEC-2024-0003).
        .max_local_error_reset_streams(settings.http2_max_local_error_reset_streams);
    builder
}

/// What the listener serves: a request in, an answer out, never an error.
pub trait Public:
    tower::Service<Request, Response = Response, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> Public for S where
    S: tower::Service<Request, Response = Response, Error = Infallible, Future: Send + 'static>
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// The service as hyper calls it, with the connection's peer address
/// attached to each request and each request and response reported to the
/// connection's `activity`. hyper calls by reference, so each request clones
/// the service once (tower's `&mut self` calls need their own copy).
#[derive(Clone)]
struct ConnectionService<S> {
    service: S,
    peer: SocketAddr,
    activity: Arc<Activity>,
}

impl<S: Public> hyper::service::Service<http::Request<Incoming>> for ConnectionService<S> {
    type Response = http::Response<Tracked<axum::body::Body>>;
    type Error = Infallible;
    type Future = Served<S>;

    fn call(&self, mut request: http::Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(ClientAddr(self.peer));
        Served {
            answer: self
                .service
                .clone()
                .oneshot(request.map(axum::body::Body::new)),
            in_flight: Some(self.activity.request_started()),
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer to one request, tracked from the moment hyper has it.
    struct Served<S: Public> {
        #[pin]
        answer: tower::util::Oneshot<S, Request>,
        in_flight: Option<connection::InFlight>,
    }
}

impl<S: Public> Future for Served<S> {
    type Output = Result<http::Response<Tracked<axum::body::Body>>, Infallible>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = std::task::ready!(this.answer.poll(cx));
        let in_flight = this
            .in_flight
            .take()
            .expect("a Served future is not polled after it is ready");
        std::task::Poll::Ready(Ok(response.map(|body| Tracked::new(body, in_flight))))
    }
}
