//! Exponential back-off with jitter, for anything that retries a remote
//! peer in the background (upstream redials, JWKS refetches): each failure
//! doubles the delay up to a cap, a success starts over, and the jitter
//! keeps peers that failed together from retrying in lockstep.

use std::time::Duration;

use rand::Rng;

/// The delay before the next attempt.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

// === impl Backoff ===

impl Backoff {
    /// Starts at `initial`, doubling up to `max` (at least `initial`).
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max: max.max(initial),
            current: initial,
        }
    }

    /// The delay to wait after a failure: drawn from [d/2, d] for the
    /// current step d, which then doubles (up to the cap).
    pub fn next_delay(&mut self) -> Duration {
        let step = self.current;
        self.current = (self.current * 2).min(self.max);
        step.mul_f64(rand::rng().random_range(0.5..=1.0))
    }

    /// After a success: the next failure waits the initial delay again.
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_jitter_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(700));
        let steps: Vec<u64> = [100, 200, 400, 700, 700].to_vec();
        for step in steps {
            let delay = backoff.next_delay().as_millis() as u64;
            assert!(
                (step / 2..=step).contains(&delay),
                "{delay} not in [{}, {step}]",
                step / 2
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn a_cap_below_the_start_is_the_start() {
        let mut backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(1));
        assert!(backoff.next_delay() <= Duration::from_secs(2));
        assert!(backoff.next_delay() <= Duration::from_secs(2));
    }
}
