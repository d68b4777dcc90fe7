//! The listener: accepts TCP connections, serves HTTP/1.1 and HTTP/2
//! (cleartext, prior knowledge or upgrade-free h2c) with hyper, bounds what a
//! client may send before a request is even parsed, and drains connections on
//! shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::limits::Limits;
use crate::metadata::ClientAddr;

/// The public listener's settings, compiled from `[server]`.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    /// Address the gateway listens on.
    pub listen: SocketAddr,
    /// How long a client may take to send an HTTP/1 request head.
    pub header_read_timeout: Duration,
    /// How long in-flight calls may finish after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Concurrent streams per client HTTP/2 connection.
    pub http2_max_concurrent_streams: u32,
}

/// Serves `router` on `listener` until `shutdown` resolves, then waits up to
/// the configured grace period for in-flight requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: &ListenerSettings,
    limits: &Limits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let builder = connection_builder(settings, limits);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off briefly rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = connection_service(router.clone(), peer);
        let connection = builder
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
            .into_owned();
        let watched = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = watched.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(grace = ?settings.shutdown_grace, "shutting down; draining connections");
    if tokio::time::timeout(settings.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; closing the remaining connections");
    }
    Ok(())
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
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

/// The router, with the connection's peer address attached to each request.
fn connection_service(
    router: Router,
    peer: SocketAddr,
) -> impl tower::Service<
    http::Request<Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |mut request: http::Request<Incoming>| {
        request.extensions_mut().insert(ClientAddr(peer));
        router.clone().oneshot(request.map(axum::body::Body::new))
    })
}
