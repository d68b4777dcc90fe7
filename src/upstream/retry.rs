//! Which failed calls are tried again, and how often. A call the upstream
//! provably did not process — never sent, refused with REFUSED_STREAM, or
//! above a GOAWAY's last stream id — is always tried again. A call that may
//! have been processed is tried again only when its binding's policy lists
//! the code (by default: UNAVAILABLE, for idempotent methods only).
//!
//! Every retry that adds load on the upstream is paid from the upstream's
//! retry budget (a share of recent calls plus a small floor per second), so
//! retries cannot multiply the load on an upstream that is failing.

use std::time::Duration;

use tower::retry::budget::{Budget, TpsBudget};

/// A binding's retry rules, part of its [`super::Target`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included (at least 1).
    pub attempts: u32,
    /// Codes that may be retried although the upstream may have acted.
    pub on: CodeSet,
}

/// A set of gRPC status codes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CodeSet(u32);

/// How one upstream spends retries, from `[upstreams.NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrySettings {
    /// Retries allowed as a share of calls, in percent.
    pub budget_percent: f32,
    /// Retries allowed per second whatever the share.
    pub budget_min_per_second: u32,
    /// How far back the share looks (1 s to 60 s).
    pub budget_window: Duration,
    /// First delay before a retry that may repeat work.
    pub backoff: Duration,
    /// Longest delay before a retry.
    pub backoff_max: Duration,
    /// No retry starts with less of the deadline left than this.
    pub min_remaining: Duration,
}

/// An upstream's retry budget.
pub struct RetryBudget(TpsBudget);

// === impl RetryPolicy ===

impl RetryPolicy {
    /// Only what the upstream provably did not process.
    pub const SAFE_ONLY: RetryPolicy = RetryPolicy {
        attempts: 3,
        on: CodeSet::EMPTY,
    };

    /// The default for an idempotent method: UNAVAILABLE too.
    pub const IDEMPOTENT: RetryPolicy = RetryPolicy {
        attempts: 3,
        on: CodeSet::UNAVAILABLE,
    };
}

// === impl CodeSet ===

impl CodeSet {
    /// No codes.
    pub const EMPTY: CodeSet = CodeSet(0);
    /// Only UNAVAILABLE.
    pub const UNAVAILABLE: CodeSet = CodeSet(1 << tonic::Code::Unavailable as u32);

    /// The set with `code` added.
    pub fn with(self, code: tonic::Code) -> CodeSet {
        CodeSet(self.0 | 1 << (code as u32))
    }

    /// Whether `code` is in the set.
    pub fn contains(self, code: tonic::Code) -> bool {
        self.0 & (1 << (code as u32)) != 0
    }
}

// === impl RetryBudget ===

impl RetryBudget {
    /// A budget for `settings` (the window is clamped to 1 s to 60 s).
    pub fn new(settings: &RetrySettings) -> RetryBudget {
        let window = settings
            .budget_window
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
        let percent = settings.budget_percent.clamp(0.0, 1000.0) / 100.0;
        RetryBudget(TpsBudget::new(
            window,
            settings.budget_min_per_second.min(i32::MAX as u32 - 1),
            percent,
        ))
    }

    /// Counts a call: each one earns a share of a retry.
    pub fn deposit(&self) {
        self.0.deposit();
    }

    /// Takes one retry from the budget, if there is one.
    pub fn withdraw(&self) -> bool {
        self.0.withdraw()
    }
}

impl std::fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RetryBudget")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_sets_hold_their_codes() {
        let set = CodeSet::UNAVAILABLE.with(tonic::Code::ResourceExhausted);
        assert!(set.contains(tonic::Code::Unavailable));
        assert!(set.contains(tonic::Code::ResourceExhausted));
        assert!(!set.contains(tonic::Code::Internal));
        assert!(!CodeSet::EMPTY.contains(tonic::Code::Ok));
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_allows_its_floor_then_a_share_of_calls() {
        let budget = RetryBudget::new(&RetrySettings {
            budget_percent: 20.0,
            budget_min_per_second: 1,
            budget_window: Duration::from_secs(10),
            backoff: Duration::from_millis(25),
            backoff_max: Duration::from_millis(250),
            min_remaining: Duration::from_millis(5),
        });
        let floor = (0..100).take_while(|_| budget.withdraw()).count();
        assert_eq!(floor, 10, "1 per second over a 10 s window");
        for _ in 0..100 {
            budget.deposit();
        }
        let earned = (0..100).take_while(|_| budget.withdraw()).count();
        assert_eq!(earned, 20, "20 % of 100 calls");
    }
}
