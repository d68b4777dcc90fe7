//! The serde mirror of the upstream resilience keys: active health checks,
//! outlier ejection and retries (`[upstreams.NAME]`), and a binding's retry
//! policy (`retry = {...}` on a route or method).

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::file::duration;

/// `health_check = { ... }`: opt-in `grpc.health.v1.Health/Check`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSection {
    /// Time between checks of one endpoint.
    #[serde(default = "defaults::health_interval", deserialize_with = "duration")]
    pub interval: Duration,
    /// How long one check may take.
    #[serde(default = "defaults::health_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// The service asked about; empty: the server as a whole.
    #[serde(default)]
    pub service: String,
    /// Failed checks in a row that take an endpoint out.
    #[serde(default = "defaults::unhealthy_threshold")]
    pub unhealthy_threshold: Spanned<u32>,
    /// Passed checks in a row that bring it back.
    #[serde(default = "defaults::healthy_threshold")]
    pub healthy_threshold: Spanned<u32>,
}

/// `outlier = { ... }`: passive ejection of failing endpoints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierSection {
    /// Transport failures in a row that eject (0: never).
    #[serde(default = "defaults::consecutive_transport_failures")]
    pub consecutive_transport_failures: u32,
    /// UNAVAILABLE answers in a row that eject (0: never).
    #[serde(default = "defaults::consecutive_unavailable")]
    pub consecutive_unavailable: u32,
    /// The first ejection's length; each one in a row doubles it.
    #[serde(
        default = "defaults::base_ejection_time",
        deserialize_with = "duration"
    )]
    pub base_ejection_time: Duration,
    /// The longest ejection.
    #[serde(default = "defaults::max_ejection_time", deserialize_with = "duration")]
    pub max_ejection_time: Duration,
    /// The largest share of the endpoints ejected at once, in percent.
    #[serde(default = "defaults::max_ejection_percent")]
    pub max_ejection_percent: Spanned<u8>,
}

/// `retry_budget = { ... }`: retries as a share of calls.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBudgetSection {
    /// Retries allowed as a percentage of recent calls.
    #[serde(default = "defaults::budget_percent")]
    pub percent: Spanned<f32>,
    /// Retries allowed per second whatever the share.
    #[serde(default = "defaults::budget_min_per_second")]
    pub min_per_second: u32,
    /// How far back "recent" reaches (1s to 60s).
    #[serde(
        default = "defaults::budget_window",
        deserialize_with = "spanned_duration"
    )]
    pub window: Spanned<Duration>,
}

/// `cancel_budget = { ... }`: how a connection cancels calls whose client
/// left (see `upstream::cancel`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelBudgetSection {
    /// Resets one connection may send at once.
    #[serde(default = "defaults::cancel_burst")]
    pub burst: u32,
    /// Resets regained per second.
    #[serde(default = "defaults::cancel_per_second")]
    pub per_second: Spanned<f64>,
    /// Abandoned calls one connection keeps running beyond the budget.
    #[serde(default = "defaults::cancel_max_left_running")]
    pub max_left_running: usize,
}

/// `retry = { on = [...], attempts = N }` on a route or method.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySection {
    /// gRPC codes (snake_case names) retried although the upstream may
    /// have acted on the call.
    #[serde(default)]
    pub on: Vec<Spanned<String>>,
    /// Attempts in all, the first included; 1 turns retries off.
    pub attempts: Option<Spanned<u32>>,
}

impl Default for OutlierSection {
    fn default() -> Self {
        OutlierSection {
            consecutive_transport_failures: defaults::consecutive_transport_failures(),
            consecutive_unavailable: defaults::consecutive_unavailable(),
            base_ejection_time: defaults::base_ejection_time(),
            max_ejection_time: defaults::max_ejection_time(),
            max_ejection_percent: defaults::max_ejection_percent(),
        }
    }
}

impl Default for CancelBudgetSection {
    fn default() -> Self {
        CancelBudgetSection {
            burst: defaults::cancel_burst(),
            per_second: defaults::cancel_per_second(),
            max_left_running: defaults::cancel_max_left_running(),
        }
    }
}

impl Default for RetryBudgetSection {
    fn default() -> Self {
        RetryBudgetSection {
            percent: defaults::budget_percent(),
            min_per_second: defaults::budget_min_per_second(),
            window: defaults::budget_window(),
        }
    }
}

fn spanned_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Spanned<Duration>, D::Error> {
    let text = Spanned::<String>::deserialize(d)?;
    let span = text.span();
    let parsed = duration(serde::de::value::StrDeserializer::<D::Error>::new(
        text.get_ref(),
    ))?;
    Ok(Spanned::new(span, parsed))
}

pub(super) mod defaults {
    use std::time::Duration;
    use toml::Spanned;

    pub(crate) fn health_interval() -> Duration {
        Duration::from_secs(5)
    }
    pub(crate) fn health_timeout() -> Duration {
        Duration::from_secs(1)
    }
    pub(crate) fn unhealthy_threshold() -> Spanned<u32> {
        Spanned::new(0..0, 3)
    }
    pub(crate) fn healthy_threshold() -> Spanned<u32> {
        Spanned::new(0..0, 1)
    }
    pub(crate) fn consecutive_transport_failures() -> u32 {
        5
    }
    pub(crate) fn consecutive_unavailable() -> u32 {
        5
    }
    pub(crate) fn base_ejection_time() -> Duration {
        Duration::from_secs(10)
    }
    pub(crate) fn max_ejection_time() -> Duration {
        Duration::from_secs(300)
    }
    pub(crate) fn max_ejection_percent() -> Spanned<u8> {
        Spanned::new(0..0, 50)
    }
    pub(crate) fn budget_percent() -> Spanned<f32> {
        Spanned::new(0..0, 20.0)
    }
    pub(crate) fn budget_min_per_second() -> u32 {
        10
    }
    pub(crate) fn budget_window() -> Spanned<Duration> {
        Spanned::new(0..0, Duration::from_secs(10))
    }
    // Half of h2's 20 pending-accept resets at once; 5 a second with the
    // burst on top stays under Netty's 200 in 30 seconds.
    pub(crate) fn cancel_burst() -> u32 {
        10
    }
    pub(crate) fn cancel_per_second() -> Spanned<f64> {
        Spanned::new(0..0, 5.0)
    }
    pub(crate) fn cancel_max_left_running() -> usize {
        100
    }
    pub(crate) fn max_concurrent_calls() -> Spanned<usize> {
        Spanned::new(0..0, 1024)
    }
    pub(crate) fn retry_backoff() -> Duration {
        Duration::from_millis(25)
    }
    pub(crate) fn retry_backoff_max() -> Duration {
        Duration::from_millis(250)
    }
    pub(crate) fn retry_min_remaining() -> Duration {
        Duration::from_millis(5)
    }
}
