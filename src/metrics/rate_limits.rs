//! Rate limits: requests refused, by route and what the limit counts by,
//! and requests a cluster-wide limit decided locally because Redis did not
//! answer (each one is a request the cluster did not count).

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Labels of a refused request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitedLabels {
    route: Arc<str>,
    key: &'static str,
}

/// The rate-limit families; cheap to clone (handles share their values).
#[derive(Debug, Clone, Default)]
pub struct RateLimitMetrics {
    limited: Family<LimitedLabels, Counter>,
    redis_fallbacks: Counter,
}

// === impl RateLimitMetrics ===

impl RateLimitMetrics {
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "rate_limited",
            "Requests refused with 429 by a rate limit, by route template and key kind",
            self.limited.clone(),
        );
        registry.register(
            "rate_limit_redis_fallbacks",
            "Requests whose cluster-wide limit was decided by the replica's local limiter because Redis did not answer in time",
            self.redis_fallbacks.clone(),
        );
    }

    /// Counts a request refused on `route` by a limit keyed by `key`.
    pub fn limited(&self, route: &str, key: &'static str) {
        let route = Arc::from(route);
        self.limited
            .get_or_create(&LimitedLabels { route, key })
            .inc();
    }

    /// Counts a request decided locally in place of Redis.
    pub fn fell_back(&self) {
        self.redis_fallbacks.inc();
    }
}
