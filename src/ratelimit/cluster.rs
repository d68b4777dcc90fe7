//! Cluster-wide limits: one GCRA bucket per key in Redis, updated by one
//! atomic Lua script on Redis's own clock, so every replica counts against
//! the same bucket and their clocks never need to agree.
//!
//! Two shortcuts keep Redis off most paths that do not need it:
//! - a key Redis refused until T is refused locally until T, without a
//!   round trip. This is exact: a refusal leaves the bucket as it was, and
//!   other replicas can only push T later, never earlier;
//! - when a call fails or takes longer than `redis_timeout`, the request is
//!   decided by the replica's local limiter (fail open to local), and for
//!   the next [`RETRY_AFTER_FAILURE`] every request goes straight there, so
//!   a dead Redis costs one timeout per interval, not one per request. The
//!   connection manager redials in the background meanwhile.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Decision, Rate};

/// How long after a failed call requests skip Redis.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// At most one "Redis unavailable" warning per this interval.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The GCRA, atomically. KEYS[1]: the bucket; ARGV[1]: the emission interval
/// in µs; ARGV[2]: the burst. The bucket holds its theoretical arrival time
/// (TAT) in µs on Redis's clock (TIME) and expires when it is full again.
/// Returns {1, remaining, µs until full} or {0, µs until allowed, 0}.
const GCRA_SCRIPT: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allowed_at = tat + interval - burst * interval
if now < allowed_at then
  return {0, allowed_at - now, 0}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000))
return {1, math.floor((now + burst * interval - new_tat) / interval), new_tat - now}
";

/// The Redis every cluster-wide limit of a snapshot shares.
pub struct Cluster {
    client: redis::Client,
    timeout: Duration,
    /// Made on first use, inside the runtime; redials by itself.
    connection: OnceLock<Option<ConnectionManager>>,
    script: redis::Script,
    /// Until when (ms on `clock`) requests skip Redis after a failure.
    skip_until_ms: AtomicU64,
    /// When (ms on `clock`) the last warning was logged, plus one.
    logged_at_ms: AtomicU64,
    clock: tokio::time::Instant,
}

/// Why a call did not give an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unavailable {
    /// A recent call failed; Redis was not asked.
    Skipped,
    /// The call took longer than `redis_timeout`.
    Timeout,
    /// Redis answered with an error, or the connection failed.
    Failed,
}

// === impl Cluster ===

impl Cluster {
    /// A Redis at `client`'s URL (not dialled until the first request).
    pub(crate) fn new(client: redis::Client, timeout: Duration) -> Cluster {
        Cluster {
            client,
            timeout,
            connection: OnceLock::new(),
            script: redis::Script::new(GCRA_SCRIPT),
            skip_until_ms: AtomicU64::new(0),
            logged_at_ms: AtomicU64::new(0),
            clock: tokio::time::Instant::now(),
        }
    }

    /// Counts one request against the bucket `key` of `rate`.
    pub(super) async fn check(&self, key: &str, rate: &Rate) -> Result<Decision, Unavailable> {
        let now = self.now_ms();
        if now < self.skip_until_ms.load(Ordering::Relaxed) {
            return Err(Unavailable::Skipped);
        }
        let Some(mut connection) = self.connection() else {
            return Err(self.failed(Unavailable::Failed, "cannot create the Redis connection"));
        };
        let mut invocation = self.script.key(key);
        invocation
            .arg(rate.interval().as_micros() as u64)
            .arg(rate.burst);
        let call = invocation.invoke_async::<(i64, i64, i64)>(&mut connection);
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok((1, remaining, full_in))) => Ok(Decision::Allowed {
                remaining: remaining.max(0) as u64,
                reset: micros(full_in),
            }),
            Ok(Ok((_, wait, _))) => Ok(Decision::Refused {
                retry_after: micros(wait),
            }),
            Ok(Err(error)) => Err(self.failed(Unavailable::Failed, &error.to_string())),
            Err(_) => Err(self.failed(Unavailable::Timeout, "the call timed out")),
        }
    }

    fn connection(&self) -> Option<ConnectionManager> {
        self.connection
            .get_or_init(|| {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout.max(Duration::from_millis(100))))
                    .set_response_timeout(Some(self.timeout))
                    .set_max_delay(Duration::from_secs(2));
                ConnectionManager::new_lazy_with_config(self.client.clone(), config)
                    .inspect_err(|error| tracing::warn!(%error, "rate limits: no Redis connection"))
                    .ok()
            })
            .clone()
    }

    /// Skips Redis for a while and logs, at most once per [`LOG_EVERY`].
    fn failed(&self, why: Unavailable, detail: &str) -> Unavailable {
        let now = self.now_ms();
        self.skip_until_ms.store(
            now + RETRY_AFTER_FAILURE.as_millis() as u64,
            Ordering::Relaxed,
        );
        let logged = self.logged_at_ms.load(Ordering::Relaxed);
        let due = logged == 0 || now + 1 >= logged + LOG_EVERY.as_millis() as u64;
        if due
            && self
                .logged_at_ms
                .compare_exchange(logged, now + 1, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                reason = ?why,
                detail,
                "rate limits: Redis unavailable; each replica limits on its own until it answers"
            );
        }
        why
    }

    fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("redis", &self.client.get_connection_info().addr())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

fn micros(value: i64) -> Duration {
    Duration::from_micros(value.max(0) as u64)
}
