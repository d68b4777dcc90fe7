//! The endpoints of one upstream, following its discovery source, and the
//! choice of one for each call.
//!
//! Each endpoint keeps `connections` long-lived HTTP/2 connections (see
//! [`super::connection`]); calls are multiplexed on them as streams. A
//! call goes to the less loaded of two endpoints drawn at random among
//! those that can take it (power of two choices on calls in flight): it
//! has a live connection, its health check passes, and it is not ejected.
//! When discovery drops an endpoint, the pool forgets it and it drains
//! (see [`super::endpoint`]).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::uri::{Authority, Scheme};
use rand::Rng;
use tokio::sync::{oneshot, watch};

use super::cancel::CancelPolicy;
use super::discovery::{Discovery, Endpoints};
use super::endpoint::{Endpoint, Lease};
use super::health::{self, HealthConfig};
use super::outlier::{Outcome, OutlierConfig};
use super::tls::ClientTls;

/// Connection settings for one upstream, from routes.toml. Equal settings
/// let a reload keep the live pool.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// Upstream name, for errors and logs.
    pub name: String,
    /// Where the endpoints come from.
    pub discovery: Discovery,
    /// Connections per endpoint; `None`: one per worker thread, at least 2
    /// (see [`PoolConfig::connections_per_endpoint`]).
    pub connections: Option<usize>,
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
    /// Passive outlier ejection.
    pub outlier: OutlierConfig,
    /// Active health checks, when enabled.
    pub health: Option<HealthConfig>,
    /// TLS settings, for an upstream reached over TLS (`https://`).
    pub tls: Option<Arc<ClientTls>>,
    /// How calls whose client left are cancelled.
    pub cancel: CancelPolicy,
}

/// The endpoints of one upstream.
#[derive(Debug)]
pub struct Pool {
    shared: Arc<Shared>,
    /// Stops the task that follows discovery.
    stop: watch::Sender<bool>,
}

#[derive(Debug)]
struct Shared {
    config: PoolConfig,
    scheme: Scheme,
    endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
}

// === impl PoolConfig ===

impl PoolConfig {
    /// The connections each endpoint keeps: `connections` if set, else one
    /// per worker thread so that every worker has one of its own (see
    /// [`crate::workers`]), and at least 2 so one lost connection does not
    /// leave an endpoint without any while it is redialled.
    pub fn connections_per_endpoint(&self) -> usize {
        match self.connections {
            Some(connections) => connections.max(1),
            None => crate::workers::count().max(2),
        }
    }
}

// === impl Pool ===

impl Pool {
    /// Waits (up to twice the connect timeout) for discovery's first answer
    /// and for each endpoint's first dial, so the gateway starts with warm
    /// connections; then follows discovery in the background. An upstream
    /// that is down does not stop start-up: its calls answer 503 until a
    /// redial succeeds.
    pub async fn start(config: PoolConfig) -> Pool {
        let bound = config.connect_timeout * 2;
        let mut addresses = config.discovery.watch(&config.name);
        let _ = tokio::time::timeout(bound, addresses.wait_for(Option::is_some)).await;
        let shared = Arc::new(Shared {
            scheme: super::tls::scheme(config.tls.as_deref()),
            config,
            endpoints: ArcSwap::from_pointee(Vec::new()),
        });
        let initial = addresses.borrow_and_update().clone();
        let first_attempts = initial
            .map(|set| shared.reconcile(&set))
            .unwrap_or_default();
        let _ = tokio::time::timeout(bound, async {
            for attempt in first_attempts {
                let _ = attempt.await;
            }
        })
        .await;
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(follow(shared.clone(), addresses, stopped));
        Pool { shared, stop }
    }

    /// A connection for one call, or why there is none. `avoid` is the
    /// endpoint a failed attempt used: a retry goes elsewhere if it can.
    pub fn lease(&self, avoid: Option<&Arc<Endpoint>>) -> Result<Lease, String> {
        let endpoints = self.shared.endpoints.load();
        let can_take = |e: &Arc<Endpoint>| {
            e.is_healthy() && !e.outlier().is_ejected() && avoid.is_none_or(|a| !Arc::ptr_eq(a, e))
        };
        if let Some(lease) = pick_two(&endpoints, &can_take).and_then(|e| e.lease()) {
            return Ok(lease);
        }
        // Nothing eligible: rather than fail, use any live connection (the
        // one avoided last). Ejection and health shape traffic; they must
        // not turn a degraded upstream into a dead one.
        if let Some(lease) = pick_two(&endpoints, &|_| true).and_then(|e| e.lease()) {
            return Ok(lease);
        }
        Err(self.why_unreachable(&endpoints))
    }

    fn why_unreachable(&self, endpoints: &[Arc<Endpoint>]) -> String {
        if endpoints.is_empty() {
            return format!("no endpoints: {}", self.shared.config.discovery.describe());
        }
        endpoints
            .iter()
            .find_map(|e| e.last_error())
            .map_or_else(|| "no connection is up yet".to_string(), |e| e.to_string())
    }

    /// Counts a call's outcome on its endpoint, ejecting it when it crosses
    /// a threshold and the cap allows.
    pub fn record(&self, endpoint: &Arc<Endpoint>, outcome: Outcome) {
        let config = &self.shared.config.outlier;
        if !endpoint.outlier().record(outcome, config) {
            return;
        }
        let endpoints = self.shared.endpoints.load();
        let ejected = endpoints
            .iter()
            .filter(|e| e.outlier().is_ejected())
            .count();
        let cap = endpoints.len() * usize::from(config.max_ejection_percent) / 100;
        if ejected >= cap {
            tracing::debug!(upstream = %self.shared.config.name, endpoint = %endpoint.authority(),
                ejected, cap, "outlier not ejected: at max_ejection_percent");
            return;
        }
        let period = endpoint.outlier().eject(config);
        tracing::warn!(upstream = %self.shared.config.name, endpoint = %endpoint.authority(),
            ?outcome, ejected_for = ?period, "endpoint ejected after consecutive failures");
    }

    /// The URI scheme of requests on this pool.
    pub fn scheme(&self) -> &Scheme {
        &self.shared.scheme
    }

    /// The current endpoints.
    pub fn endpoints(&self) -> Arc<Vec<Arc<Endpoint>>> {
        self.shared.endpoints.load_full()
    }

    /// How many connections are live, over all endpoints.
    pub fn connected(&self) -> usize {
        self.shared
            .endpoints
            .load()
            .iter()
            .map(|e| e.connected())
            .sum()
    }

    /// Connections the pool keeps open when all is well.
    pub fn size(&self) -> usize {
        self.shared.endpoints.load().iter().map(|e| e.size()).sum()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// The less loaded of two endpoints drawn at random among those `eligible`
/// says can take a call and that have a live connection.
fn pick_two<'a>(
    endpoints: &'a [Arc<Endpoint>],
    eligible: &dyn Fn(&Arc<Endpoint>) -> bool,
) -> Option<&'a Arc<Endpoint>> {
    let usable = |e: &&Arc<Endpoint>| eligible(e) && e.is_connected();
    match endpoints {
        [] => None,
        [only] => usable(&only).then_some(only),
        _ => {
            let mut rng = rand::rng();
            let first = &endpoints[rng.random_range(0..endpoints.len())];
            let mut second = &endpoints[rng.random_range(0..endpoints.len() - 1)];
            if Arc::ptr_eq(first, second) {
                second = &endpoints[endpoints.len() - 1];
            }
            match (usable(&first), usable(&second)) {
                (true, true) if second.in_flight() < first.in_flight() => Some(second),
                (true, _) => Some(first),
                (false, true) => Some(second),
                // Both drawn are out: choose among the usable ones.
                (false, false) => {
                    let usable: Vec<&Arc<Endpoint>> = endpoints.iter().filter(usable).collect();
                    match usable.len() {
                        0 => None,
                        n => Some(usable[rng.random_range(0..n)]),
                    }
                }
            }
        }
    }
}

/// Applies each new set of addresses from discovery until the pool stops.
async fn follow(
    shared: Arc<Shared>,
    mut addresses: watch::Receiver<Option<Endpoints>>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            changed = addresses.changed() => {
                if changed.is_err() {
                    // The source is fixed: nothing more will change.
                    return;
                }
            }
            _ = stopped.changed() => return,
        }
        let latest = addresses.borrow_and_update().clone();
        if let Some(set) = latest {
            drop(shared.reconcile(&set));
        }
    }
}

// === impl Shared ===

impl Shared {
    /// Makes the endpoint list match `set`: kept endpoints keep their
    /// connections, new ones start dialling (their first attempts are
    /// returned), and departed ones are dropped from the list to drain.
    fn reconcile(&self, set: &[Authority]) -> Vec<oneshot::Receiver<()>> {
        let current = self.endpoints.load();
        let mut next = Vec::with_capacity(set.len());
        let mut first_attempts = Vec::new();
        for authority in set {
            match current.iter().find(|e| e.authority() == authority) {
                Some(kept) => next.push(kept.clone()),
                None => {
                    let (endpoint, attempts) = Endpoint::start(authority.clone(), &self.config);
                    if let Some(health) = &self.config.health {
                        health::spawn(
                            &endpoint,
                            health.clone(),
                            self.scheme.clone(),
                            &self.config.name,
                        );
                    }
                    first_attempts.extend(attempts);
                    next.push(endpoint);
                }
            }
        }
        let added = next.len()
            - current
                .iter()
                .filter(|e| set.contains(e.authority()))
                .count();
        let removed = current.len() + added - next.len();
        if added > 0 || removed > 0 {
            tracing::info!(upstream = %self.config.name, endpoints = next.len(), added, removed,
                "upstream endpoints changed");
        }
        self.endpoints.store(Arc::new(next));
        first_attempts
    }
}
