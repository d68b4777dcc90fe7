//! The serde mirror of `[idempotency]` (where keys are stored) and of a
//! route's or method's `idempotency = { ... }` (which writes take keys).

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::file::{duration, optional_duration};

/// `[idempotency]`: the store of `Idempotency-Key` answers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdempotencySection {
    /// `redis://host:6379` or `redis+unix:///path/redis.sock`: keys shared
    /// by every replica. Unset, each gateway keeps its own in memory.
    pub redis: Option<Spanned<String>>,
    /// Most keys the memory store holds.
    pub max_entries: usize,
    /// Most answer bytes the memory store holds.
    pub max_bytes: usize,
    /// Answers larger than this are not stored.
    pub max_answer_bytes: usize,
    /// Prefix of every Redis key.
    pub key_prefix: String,
    /// How long one Redis command may take before this replica's memory
    /// store answers instead.
    #[serde(deserialize_with = "duration")]
    pub redis_timeout: Duration,
}

impl Default for IdempotencySection {
    fn default() -> Self {
        IdempotencySection {
            redis: None,
            max_entries: 100_000,
            max_bytes: 64 * 1024 * 1024,
            max_answer_bytes: 1024 * 1024,
            key_prefix: "protogate:idempotency:".into(),
            redis_timeout: Duration::from_millis(250),
        }
    }
}

/// `idempotency = { ttl = "24h", required = false }` on a route or method.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdempotencyRule {
    /// How long an answer is replayed to retries (default 24h).
    #[serde(default, deserialize_with = "optional_duration")]
    pub ttl: Option<Duration>,
    /// Refuse a request without `Idempotency-Key` (400); default false.
    #[serde(default)]
    pub required: bool,
}
