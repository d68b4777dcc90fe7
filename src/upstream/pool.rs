//! A fixed set of long-lived HTTP/2 connections to one upstream.
//!
//! Each slot owns one connection and a background task that dials it, runs
//! it, and redials with exponential backoff and jitter when it drops. Dialling
//! happens at start-up and on reconnect, never on the request path: a request
//! takes a ready connection (round-robin over the slots) or fails fast with
//! "unreachable" when none is up. Requests are multiplexed as HTTP/2 streams;
//! when the server caps concurrent streams, hyper queues the excess on that
//! connection rather than failing it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http_body_util::Full;
use hyper::client::conn::http2::{Builder, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rand::Rng;
use tokio::net::TcpStream;
use tokio::sync::watch;

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

/// The request body type sent upstream: one pre-framed gRPC message.
pub type UpstreamBody = Full<Bytes>;

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

    /// A ready connection, round-robin over the slots, or why there is none.
    pub fn lease(&self) -> Result<Lease, String> {
        let n = self.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            let slot = &self.slots[(start + i) % n];
            if let Some(sender) = slot.sender.load().as_deref()
                && !sender.is_closed()
            {
                return Ok(Lease {
                    authority: slot.authority.clone(),
                    sender: sender.clone(),
                });
            }
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
    first_attempt: tokio::sync::oneshot::Sender<()>,
) {
    let mut first_attempt = Some(first_attempt);
    let mut backoff = config.backoff_initial;
    loop {
        let dialled = dial(&slot.authority, &config).await;
        if let Some(tx) = first_attempt.take() {
            // Publish before signalling, so start-up sees a ready connection.
            if let Ok((sender, _)) = &dialled {
                slot.sender.store(Some(Arc::new(sender.clone())));
            }
            let _ = tx.send(());
        }
        match dialled {
            Ok((sender, connection)) => {
                tracing::debug!(upstream = %config.name, endpoint = %slot.authority, "connected");
                slot.sender.store(Some(Arc::new(sender)));
                slot.last_error.store(None);
                backoff = config.backoff_initial;
                tokio::select! {
                    result = connection => {
                        let reason = match result {
                            Ok(()) => "connection closed by the upstream".to_string(),
                            Err(e) => format!("connection lost: {e}"),
                        };
                        tracing::warn!(upstream = %config.name, endpoint = %slot.authority, %reason, "upstream connection dropped; redialling");
                        slot.last_error.store(Some(Arc::new(reason)));
                    }
                    _ = shutdown.changed() => return,
                }
                slot.sender.store(None);
            }
            Err(reason) => {
                tracing::warn!(upstream = %config.name, endpoint = %slot.authority, %reason, retry_in = ?backoff, "cannot connect to upstream");
                slot.last_error.store(Some(Arc::new(reason)));
                slot.sender.store(None);
            }
        }
        // Full jitter over [backoff/2, backoff]: slots that failed together
        // do not redial in lockstep.
        let jittered = backoff.mul_f64(rand::rng().random_range(0.5..=1.0));
        tokio::select! {
            _ = tokio::time::sleep(jittered) => {}
            _ = shutdown.changed() => return,
        }
        backoff = (backoff * 2).min(config.backoff_max);
    }
}

type Connection =
    hyper::client::conn::http2::Connection<TokioIo<TcpStream>, UpstreamBody, TokioExecutor>;

async fn dial(
    authority: &Authority,
    config: &PoolConfig,
) -> Result<(SendRequest<UpstreamBody>, Connection), String> {
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
        Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(config.keepalive_interval)
            .keep_alive_timeout(config.keepalive_timeout)
            .keep_alive_while_idle(true)
            .initial_stream_window_size(1 << 20)
            .initial_connection_window_size(4 << 20)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP/2 handshake with {address}: {e}"))
    };
    tokio::time::timeout(config.connect_timeout, connect)
        .await
        .map_err(|_| {
            format!(
                "connect to {address}: timed out after {:?}",
                config.connect_timeout
            )
        })?
}
