//! The serde mirror of rate limits: the gateway-wide `[rate_limits]`
//! section (the Redis that makes limits cluster-wide, the memory bound) and
//! the `rate_limits = [...]` lists on a route or a method.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::file::{DurationValue, duration};

/// `[rate_limits]`: what every limit shares.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitsSection {
    /// `redis://host:port`, `rediss://…` or `redis+unix:///path`: limits are
    /// counted there, shared by every gateway replica. Unset: per replica.
    pub redis: Option<Spanned<String>>,
    /// How long one Redis call may take before the replica falls back to
    /// its local limiter for that request.
    #[serde(deserialize_with = "duration")]
    pub redis_timeout: Duration,
    /// Prefix of every Redis key the gateway writes.
    pub redis_key_prefix: String,
    /// Keys (consumers, addresses, header values) one limit tracks in
    /// memory; past it, new keys share one bucket until idle ones expire.
    pub max_tracked_keys: Spanned<usize>,
    /// How often idle keys are dropped from memory.
    #[serde(deserialize_with = "duration")]
    pub sweep_interval: Duration,
}

impl Default for RateLimitsSection {
    fn default() -> Self {
        RateLimitsSection {
            redis: None,
            // A Redis round trip in the same zone is well under a millisecond:
            // 50 ms means Redis is in trouble, and the request should not wait on it.
            redis_timeout: Duration::from_millis(50),
            redis_key_prefix: "protogate:rl".into(),
            max_tracked_keys: Spanned::new(0..0, 100_000),
            sweep_interval: Duration::from_secs(10),
        }
    }
}

/// One entry of `rate_limits = [...]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSection {
    /// The policy's name in `RateLimit-Policy`, `RateLimit` and the 429 body.
    pub name: Spanned<String>,
    /// What is counted separately: `consumer`, `ip`, `route` or `header:NAME`.
    pub key: Spanned<String>,
    /// Requests allowed per `per`.
    pub rate: Spanned<u32>,
    /// The window of `rate`, a whole number of seconds (`"1s"`, `"1m"`, `"1h"`).
    pub per: Spanned<DurationValue>,
    /// Requests allowed at once (default: `rate`).
    pub burst: Option<Spanned<u32>>,
    /// `local` counts on each replica even when `[rate_limits] redis` is set.
    pub scope: Option<Spanned<String>>,
    /// Other rates for API-key consumers whose key has this `tier`.
    #[serde(default)]
    pub tiers: BTreeMap<Spanned<String>, Spanned<TierSection>>,
}

/// `tiers = { gold = { rate = 1000, burst = 100 } }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierSection {
    /// Requests allowed per `per`.
    pub rate: Spanned<u32>,
    /// The window (default: the limit's).
    pub per: Option<Spanned<DurationValue>>,
    /// Requests allowed at once (default: this tier's `rate`).
    pub burst: Option<Spanned<u32>>,
}
