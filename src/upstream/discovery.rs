//! Where an upstream's endpoints come from. A [`Discovery`] is compiled
//! from routes.toml; [`Discovery::watch`] follows it and publishes the
//! latest good set of addresses, which the pool reconciles its endpoints
//! with (new ones dialled, departed ones drained).

use std::sync::Arc;

use http::uri::Authority;
use tokio::sync::watch;

/// The addresses an upstream currently has, sorted by their text and
/// without duplicates.
pub type Endpoints = Arc<[Authority]>;

/// How an upstream's endpoints are found.
#[derive(Debug, Clone)]
pub enum Discovery {
    /// A fixed list from routes.toml (`endpoints`).
    Static(Vec<Authority>),
}

// === impl Discovery ===

impl Discovery {
    /// Starts following the source and returns a receiver holding the
    /// latest good set: `None` until the first answer arrives. A source
    /// that can change runs in a background task that ends when every
    /// receiver is dropped.
    pub fn watch(&self, _upstream: &str) -> watch::Receiver<Option<Endpoints>> {
        match self {
            Discovery::Static(endpoints) => watch::channel(Some(endpoint_set(endpoints.clone()))).1,
        }
    }

    /// Where the endpoints come from, for "no endpoints" errors.
    pub fn describe(&self) -> String {
        match self {
            Discovery::Static(_) => "the endpoints list is empty".to_string(),
        }
    }

    /// The fixed list, for a static upstream.
    pub fn static_endpoints(&self) -> Option<&[Authority]> {
        match self {
            Discovery::Static(endpoints) => Some(endpoints),
        }
    }
}

/// Sorts and de-duplicates addresses into an [`Endpoints`] set.
pub fn endpoint_set(mut addresses: Vec<Authority>) -> Endpoints {
    addresses.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    addresses.dedup_by(|a, b| a.as_str() == b.as_str());
    addresses.into()
}
