//! The in-process GCRA: governor's limiter over a key store whose size is
//! bounded, on tokio's clock (so tests can pause time). Used for limits
//! without Redis, and as each replica's fallback when Redis cannot answer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::Clock;
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed, StateStore};
use governor::{Quota, RateLimiter};

use super::{Decision, Rate};

/// One rate's buckets, one per key.
#[derive(Debug)]
pub(super) struct LocalLimiter {
    gcra: RateLimiter<u64, KeyStore, TokioClock, StateInformationMiddleware>,
    clock: TokioClock,
    rate: Rate,
    sweep_every: Duration,
    /// When idle keys were last dropped, as nanoseconds on `clock`.
    last_sweep: AtomicU64,
}

/// Buckets by key, at most `max_keys` of them. A key that arrives when the
/// store is full shares the one overflow bucket until a sweep makes room:
/// a flood of new keys (addresses, header values) is limited as a whole
/// and cannot grow memory, while keys already tracked keep their own.
#[derive(Debug)]
pub(super) struct KeyStore {
    keys: DashMap<u64, InMemoryState>,
    max_keys: usize,
    overflow: InMemoryState,
}

/// tokio's clock as governor's: time since the limiter was made, so a
/// paused test clock pauses the limiter too.
#[derive(Debug, Clone)]
pub(super) struct TokioClock {
    origin: tokio::time::Instant,
}

// === impl LocalLimiter ===

impl LocalLimiter {
    /// Buckets of `rate`, tracking at most `max_keys` keys, dropping idle
    /// ones every `sweep_every`.
    pub(super) fn new(rate: Rate, max_keys: usize, sweep_every: Duration) -> LocalLimiter {
        let clock = TokioClock {
            origin: tokio::time::Instant::now(),
        };
        let store = KeyStore {
            keys: DashMap::new(),
            max_keys,
            overflow: InMemoryState::default(),
        };
        let gcra = RateLimiter::new(rate.quota(), store, clock.clone());
        LocalLimiter {
            gcra,
            clock,
            rate,
            sweep_every,
            last_sweep: AtomicU64::new(0),
        }
    }

    /// Counts one request of `key`.
    pub(super) fn check(&self, key: u64) -> Decision {
        self.sweep_if_due();
        match self.gcra.check_key(&key) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                Decision::Allowed {
                    remaining: u64::from(remaining),
                    // The bucket is full again once the cells now in it
                    // have drained, one per interval.
                    reset: self.rate.interval() * self.rate.burst.saturating_sub(remaining),
                }
            }
            Err(not_until) => Decision::Refused {
                retry_after: not_until.wait_time_from(self.clock.now()),
            },
        }
    }

    /// Keys tracked now (the overflow bucket not counted).
    pub(super) fn tracked_keys(&self) -> usize {
        self.gcra.len()
    }

    /// One caller at a time drops the keys whose buckets are full again
    /// (indistinguishable from a key never seen) once per `sweep_every`.
    fn sweep_if_due(&self) {
        let now = self.clock.now().as_nanos() as u64;
        let last = self.last_sweep.load(Ordering::Relaxed);
        if now.saturating_sub(last) < self.sweep_every.as_nanos() as u64 {
            return;
        }
        if self
            .last_sweep
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.gcra.retain_recent();
            self.gcra.shrink_to_fit();
        }
    }
}

// === impl Rate ===

impl Rate {
    /// governor's quota: `burst` at once, one more every interval.
    fn quota(&self) -> Quota {
        let burst = std::num::NonZeroU32::new(self.burst).unwrap_or(std::num::NonZeroU32::MIN);
        Quota::with_period(self.interval())
            .unwrap_or_else(|| Quota::per_second(std::num::NonZeroU32::MAX))
            .allow_burst(burst)
    }
}

// === impl KeyStore ===

impl StateStore for KeyStore {
    type Key = u64;

    fn measure_and_replace<T, F, E>(&self, key: &u64, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        if let Some(state) = self.keys.get(key) {
            return state.measure_and_replace(&NotKeyed::NonKey, f);
        }
        if self.keys.len() >= self.max_keys {
            return self.overflow.measure_and_replace(&NotKeyed::NonKey, f);
        }
        let state = self.keys.entry(*key).or_default();
        state.measure_and_replace(&NotKeyed::NonKey, f)
    }
}

impl ShrinkableKeyedStateStore<u64> for KeyStore {
    fn retain_recent(&self, drop_below: Nanos) {
        self.keys
            .retain(|_, state| theoretical_arrival(state).is_some_and(|tat| tat > drop_below));
    }

    fn shrink_to_fit(&self) {
        self.keys.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.keys.len()
    }

    fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// A bucket's theoretical arrival time, read without changing it: the
/// closure refuses, handing back what it was shown.
fn theoretical_arrival(state: &InMemoryState) -> Option<Nanos> {
    state
        .measure_and_replace(&NotKeyed::NonKey, Err::<((), Nanos), _>)
        .err()
        .flatten()
}

// === impl TokioClock ===

impl Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        tokio::time::Instant::now().saturating_duration_since(self.origin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(rate: u32, per: Duration, burst: u32) -> Rate {
        Rate { rate, per, burst }
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_passes_then_one_per_interval() {
        let limiter = LocalLimiter::new(rate(2, Duration::from_secs(1), 2), 10, Duration::MAX);
        assert!(matches!(
            limiter.check(1),
            Decision::Allowed { remaining: 1, .. }
        ));
        assert!(matches!(
            limiter.check(1),
            Decision::Allowed { remaining: 0, .. }
        ));
        let Decision::Refused { retry_after } = limiter.check(1) else {
            panic!("third request within the burst's second passed");
        };
        assert_eq!(retry_after, Duration::from_millis(500));
        tokio::time::advance(retry_after).await;
        assert!(matches!(limiter.check(1), Decision::Allowed { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn keys_have_their_own_buckets() {
        let limiter = LocalLimiter::new(rate(1, Duration::from_secs(1), 1), 10, Duration::MAX);
        assert!(matches!(limiter.check(1), Decision::Allowed { .. }));
        assert!(matches!(limiter.check(1), Decision::Refused { .. }));
        assert!(matches!(limiter.check(2), Decision::Allowed { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn new_keys_past_the_bound_share_one_bucket_until_a_sweep() {
        let sweep = Duration::from_secs(5);
        let limiter = LocalLimiter::new(rate(1, Duration::from_secs(1), 1), 3, sweep);
        for key in 0..3 {
            assert!(matches!(limiter.check(key), Decision::Allowed { .. }));
        }
        assert_eq!(limiter.tracked_keys(), 3);
        // The first untracked key takes the overflow bucket's one cell;
        // every other new key finds it empty.
        assert!(matches!(limiter.check(100), Decision::Allowed { .. }));
        for key in 101..1_000 {
            assert!(matches!(limiter.check(key), Decision::Refused { .. }));
        }
        assert_eq!(limiter.tracked_keys(), 3, "memory stays bounded");
        tokio::time::advance(sweep).await;
        assert!(matches!(limiter.check(2_000), Decision::Allowed { .. }));
        assert_eq!(limiter.tracked_keys(), 1, "idle keys were dropped");
    }
}
