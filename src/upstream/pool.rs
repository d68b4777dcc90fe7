//! A fixed set of long-lived HTTP/2 connections to one upstream.
//!
//! Each slot (see [`super::connection`]) owns one connection. A request
//! takes a ready connection (round-robin over the live slots) or fails fast
//! with "unreachable" when none is up. Requests are multiplexed as HTTP/2
//! streams; when the server caps concurrent streams, hyper queues the excess
//! on that connection rather than failing it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use hyper::client::conn::http2::SendRequest;
use tokio::sync::watch;

use super::connection::{Slot, UpstreamBody, run_slot};
use super::discovery::Discovery;
use super::tls::ClientTls;

/// Connection settings for one upstream, from routes.toml.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Upstream name, for errors and logs.
    pub name: String,
    /// Where the endpoints come from.
    pub discovery: Discovery,
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
    /// TLS settings, for an upstream reached over TLS (`https://`).
    pub tls: Option<Arc<ClientTls>>,
}

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
        let endpoints = config.discovery.watch(&config.name).borrow().clone();
        for authority in endpoints.iter().flat_map(|set| set.iter()) {
            for _ in 0..config.connections.max(1) {
                let slot = Arc::new(Slot::new(authority.clone()));
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
            scheme: super::tls::scheme(config.tls.as_deref()),
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
            .filter_map(|slot| Some((slot.as_ref(), slot.live()?)))
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
