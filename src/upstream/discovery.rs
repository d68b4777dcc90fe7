//! Where an upstream's endpoints come from. A [`Discovery`] is compiled
//! from routes.toml; [`Discovery::watch`] follows it and publishes the
//! latest good set of addresses, which the pool reconciles its endpoints
//! with (new ones dialled, departed ones drained).

pub mod dns;
pub mod etcd;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::uri::Authority;
use tokio::sync::watch;

/// The addresses an upstream currently has, sorted by their text and
/// without duplicates.
pub type Endpoints = Arc<[Authority]>;

/// How an upstream's endpoints are found.
#[derive(Debug, Clone, PartialEq)]
pub enum Discovery {
    /// A fixed list from routes.toml (`endpoints`).
    Static(Vec<Authority>),
    /// Every address a DNS name resolves to (`dns`), re-resolved on its TTL.
    Dns(dns::DnsConfig),
    /// The values under an etcd prefix (`etcd`), followed with a watch.
    Etcd(etcd::EtcdConfig),
}

// === impl Discovery ===

impl Discovery {
    /// Starts following the source and returns a receiver holding the
    /// latest good set: `None` until the first answer arrives. A source
    /// that can change runs in a background task that ends when every
    /// receiver is dropped.
    pub fn watch(&self, upstream: &str) -> watch::Receiver<Option<Endpoints>> {
        match self {
            Discovery::Static(endpoints) => watch::channel(Some(endpoint_set(endpoints.clone()))).1,
            Discovery::Dns(config) => dns::watch(config.clone(), upstream),
            Discovery::Etcd(config) => etcd::watch(config.clone(), upstream),
        }
    }

    /// Where the endpoints come from, for "no endpoints" errors.
    pub fn describe(&self) -> String {
        match self {
            Discovery::Static(_) => "the endpoints list is empty".to_string(),
            Discovery::Dns(config) => format!(
                "DNS has not answered with an address of {}:{} yet",
                config.name, config.port
            ),
            Discovery::Etcd(config) => format!(
                "etcd ({}) has no address under {} yet",
                config.endpoints.join(", "),
                config.prefix
            ),
        }
    }

    /// The fixed list, for a static upstream.
    pub fn static_endpoints(&self) -> Option<&[Authority]> {
        match self {
            Discovery::Static(endpoints) => Some(endpoints),
            Discovery::Dns(_) | Discovery::Etcd(_) => None,
        }
    }
}

/// Sorts and de-duplicates addresses into an [`Endpoints`] set.
pub fn endpoint_set(mut addresses: Vec<Authority>) -> Endpoints {
    addresses.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    addresses.dedup_by(|a, b| a.as_str() == b.as_str());
    addresses.into()
}

/// Publishes a source's new answer. An empty answer never replaces a set:
/// an upstream with no address can only fail its calls, while the last
/// addresses may still serve (and the pool drops the ones that are gone).
/// Returns whether the set changed.
fn publish(tx: &watch::Sender<Option<Endpoints>>, addresses: Vec<Authority>) -> bool {
    if addresses.is_empty() {
        return false;
    }
    let set = endpoint_set(addresses);
    tx.send_if_modified(|current| {
        if current.as_deref() == Some(&*set) {
            return false;
        }
        *current = Some(set);
        true
    })
}

/// Logs a source's failures without flooding the log while it stays down:
/// the first failure at once, then at most one line per [`Self::EVERY`]
/// with how many were not logged, and one line when it recovers.
#[derive(Debug)]
struct FailureLog {
    upstream: String,
    source: &'static str,
    failing_since: Option<Instant>,
    last_logged: Option<Instant>,
    unlogged: u64,
}

impl FailureLog {
    const EVERY: Duration = Duration::from_secs(30);

    fn new(upstream: &str, source: &'static str) -> FailureLog {
        FailureLog {
            upstream: upstream.to_owned(),
            source,
            failing_since: None,
            last_logged: None,
            unlogged: 0,
        }
    }

    /// Records one failure; logs it if the last line is old enough.
    fn failed(&mut self, reason: &str) {
        let now = Instant::now();
        self.failing_since.get_or_insert(now);
        if self
            .last_logged
            .is_some_and(|at| now.duration_since(at) < Self::EVERY)
        {
            self.unlogged += 1;
            return;
        }
        tracing::warn!(
            upstream = %self.upstream,
            source = self.source,
            %reason,
            not_logged = self.unlogged,
            "endpoint discovery failed; the last good set of endpoints is kept"
        );
        self.last_logged = Some(now);
        self.unlogged = 0;
    }

    /// Records a success; says so if the source had been failing.
    fn succeeded(&mut self) {
        if let Some(since) = self.failing_since.take() {
            tracing::info!(
                upstream = %self.upstream,
                source = self.source,
                failed_for = ?since.elapsed(),
                "endpoint discovery recovered"
            );
        }
        self.last_logged = None;
        self.unlogged = 0;
    }
}

/// Waits `delay`, or returns false at once if every receiver is gone.
async fn wait_unless_unwatched(tx: &watch::Sender<Option<Endpoints>>, delay: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => true,
        () = tx.closed() => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authorities(texts: &[&str]) -> Vec<Authority> {
        texts
            .iter()
            .map(|t| t.parse().expect("authority"))
            .collect()
    }

    #[test]
    fn publish_ignores_empty_and_unchanged_answers() {
        let (tx, rx) = watch::channel(None);
        assert!(!publish(&tx, Vec::new()), "empty answer before any set");
        assert!(rx.borrow().is_none());
        assert!(publish(&tx, authorities(&["b:1", "a:1", "b:1"])));
        let expected = authorities(&["a:1", "b:1"]);
        assert_eq!(rx.borrow().as_deref(), Some(&expected[..]));
        assert!(!publish(&tx, authorities(&["b:1", "a:1"])), "same set");
        assert!(!publish(&tx, Vec::new()), "empty answer keeps the set");
        assert_eq!(rx.borrow().as_deref(), Some(&expected[..]));
        assert!(publish(&tx, authorities(&["c:1"])));
    }
}
