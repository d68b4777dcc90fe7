//! Passive outlier detection: an endpoint whose calls keep failing at the
//! transport level, or keep answering UNAVAILABLE, is ejected — it gets no
//! new calls — for a back-off period that doubles with each ejection in a
//! row, and is let back in when the period ends. The pool never ejects
//! more than `max_ejection_percent` of an upstream's endpoints.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// When to eject, from `[upstreams.NAME] outlier`.
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierConfig {
    /// Transport failures in a row (lost connection, reset, refused) that eject.
    pub consecutive_transport_failures: u32,
    /// UNAVAILABLE answers in a row that eject.
    pub consecutive_unavailable: u32,
    /// The first ejection's length; each ejection in a row doubles it.
    pub base_ejection_time: Duration,
    /// The longest ejection.
    pub max_ejection_time: Duration,
    /// The largest share of an upstream's endpoints ejected at once.
    pub max_ejection_percent: u8,
}

/// How one call on an endpoint ended, as outlier detection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The endpoint answered (any status but UNAVAILABLE).
    Answered,
    /// The endpoint answered UNAVAILABLE.
    Unavailable,
    /// The connection or stream failed.
    TransportFailure,
}

/// One endpoint's outlier state.
#[derive(Debug, Default)]
pub struct Outlier {
    transport_failures: AtomicU32,
    unavailable: AtomicU32,
    /// Fast path for the balancer: no lock unless ejected.
    ejected: AtomicBool,
    until: Mutex<Option<Instant>>,
    /// Ejections in a row; reset by the first answer after one.
    ejections: AtomicU32,
    /// Every ejection, for metrics.
    ejections_total: AtomicU64,
}

// === impl Outlier ===

impl Outlier {
    /// Counts one call's outcome; true when it crosses a threshold and the
    /// endpoint should be ejected (the pool decides, within its cap).
    pub fn record(&self, outcome: Outcome, config: &OutlierConfig) -> bool {
        match outcome {
            Outcome::Answered => {
                reset(&self.transport_failures);
                reset(&self.unavailable);
                if !self.ejected.load(Ordering::Relaxed) {
                    reset(&self.ejections);
                }
                false
            }
            Outcome::Unavailable => {
                reset(&self.transport_failures);
                let run = self.unavailable.fetch_add(1, Ordering::Relaxed) + 1;
                config.consecutive_unavailable > 0 && run >= config.consecutive_unavailable
            }
            Outcome::TransportFailure => {
                let run = self.transport_failures.fetch_add(1, Ordering::Relaxed) + 1;
                config.consecutive_transport_failures > 0
                    && run >= config.consecutive_transport_failures
            }
        }
    }

    /// Whether the endpoint is ejected now; an ejection that has run out
    /// is lifted here.
    pub fn is_ejected(&self) -> bool {
        if !self.ejected.load(Ordering::Relaxed) {
            return false;
        }
        let mut until = self.until.lock().unwrap_or_else(|e| e.into_inner());
        match *until {
            Some(end) if Instant::now() < end => true,
            _ => {
                *until = None;
                self.ejected.store(false, Ordering::Relaxed);
                false
            }
        }
    }

    /// How many times the endpoint has been ejected.
    pub fn ejections(&self) -> u64 {
        self.ejections_total.load(Ordering::Relaxed)
    }

    /// Ejects for the back-off period of this ejection in a row; returns it.
    pub(super) fn eject(&self, config: &OutlierConfig) -> Duration {
        self.ejections_total.fetch_add(1, Ordering::Relaxed);
        let previous = self.ejections.fetch_add(1, Ordering::Relaxed);
        let period = config
            .base_ejection_time
            .saturating_mul(1 << previous.min(16))
            .min(config.max_ejection_time.max(config.base_ejection_time));
        *self.until.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + period);
        self.ejected.store(true, Ordering::Relaxed);
        reset(&self.transport_failures);
        reset(&self.unavailable);
        period
    }
}

/// Zeroes a counter without writing a cache line that is already zero.
fn reset(counter: &AtomicU32) {
    if counter.load(Ordering::Relaxed) != 0 {
        counter.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> OutlierConfig {
        OutlierConfig {
            consecutive_transport_failures: 3,
            consecutive_unavailable: 5,
            base_ejection_time: Duration::from_secs(10),
            max_ejection_time: Duration::from_secs(25),
            max_ejection_percent: 50,
        }
    }

    #[test]
    fn five_unavailable_in_a_row_cross_the_threshold_and_an_answer_starts_over() {
        let outlier = Outlier::default();
        let config = config();
        for _ in 0..4 {
            assert!(!outlier.record(Outcome::Unavailable, &config));
        }
        assert!(!outlier.record(Outcome::Answered, &config));
        for _ in 0..4 {
            assert!(!outlier.record(Outcome::Unavailable, &config));
        }
        assert!(outlier.record(Outcome::Unavailable, &config));
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_doubles_up_to_the_cap_and_runs_out() {
        let outlier = Outlier::default();
        let config = config();
        assert_eq!(outlier.eject(&config), Duration::from_secs(10));
        assert!(outlier.is_ejected());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(!outlier.is_ejected());
        assert_eq!(outlier.eject(&config), Duration::from_secs(20));
        assert_eq!(outlier.eject(&config), Duration::from_secs(25));
        tokio::time::advance(Duration::from_secs(25)).await;
        assert!(!outlier.is_ejected());
        outlier.record(Outcome::Answered, &config);
        assert_eq!(outlier.eject(&config), Duration::from_secs(10));
    }
}
