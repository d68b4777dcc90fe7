//! Compiles an upstream's resilience settings — active health checks,
//! outlier ejection, the retry budget and the cancel budget — checking each
//! value's range.

use std::time::Duration;

use toml::Spanned;

use crate::config::ConfigError;
use crate::config::file::UpstreamSection;
use crate::config::upstream::{HealthCheckSection, OutlierSection};
use crate::upstream::health::HealthConfig;
use crate::upstream::outlier::OutlierConfig;
use crate::upstream::{CancelPolicy, RetrySettings};

/// Health checks more often than this would be load, not a check.
const MIN_HEALTH_INTERVAL: Duration = Duration::from_millis(10);

pub(super) fn health_config(
    section: &Spanned<HealthCheckSection>,
    errors: &mut Vec<ConfigError>,
) -> HealthConfig {
    let h = section.get_ref();
    if h.interval.is_zero() || h.timeout.is_zero() {
        errors.push(
            ConfigError::at(
                section.span(),
                "health_check interval and timeout must be above zero",
            )
            .hint("for example health_check = { interval = \"5s\", timeout = \"1s\" }"),
        );
    }
    for threshold in [&h.unhealthy_threshold, &h.healthy_threshold] {
        if *threshold.get_ref() == 0 {
            errors.push(
                ConfigError::at(
                    threshold.span(),
                    "a health_check threshold must be at least 1",
                )
                .hint("it counts checks in a row"),
            );
        }
    }
    HealthConfig {
        interval: h.interval.max(MIN_HEALTH_INTERVAL),
        timeout: h.timeout.max(MIN_HEALTH_INTERVAL),
        service: h.service.clone(),
        unhealthy_threshold: (*h.unhealthy_threshold.get_ref()).max(1),
        healthy_threshold: (*h.healthy_threshold.get_ref()).max(1),
    }
}

pub(super) fn outlier_config(o: &OutlierSection, errors: &mut Vec<ConfigError>) -> OutlierConfig {
    if *o.max_ejection_percent.get_ref() > 100 {
        errors.push(
            ConfigError::at(
                o.max_ejection_percent.span(),
                "max_ejection_percent is a percentage: 0 to 100",
            )
            .hint("the default, 50, never ejects more than half of the endpoints"),
        );
    }
    OutlierConfig {
        consecutive_transport_failures: o.consecutive_transport_failures,
        consecutive_unavailable: o.consecutive_unavailable,
        base_ejection_time: o.base_ejection_time,
        max_ejection_time: o.max_ejection_time.max(o.base_ejection_time),
        max_ejection_percent: (*o.max_ejection_percent.get_ref()).min(100),
    }
}

pub(super) fn retry_settings(s: &UpstreamSection, errors: &mut Vec<ConfigError>) -> RetrySettings {
    let budget = &s.retry_budget;
    let percent = *budget.percent.get_ref();
    if !(0.0..=1000.0).contains(&percent) {
        errors.push(
            ConfigError::at(
                budget.percent.span(),
                "retry_budget percent must be 0 to 1000",
            )
            .hint("20 lets retries add at most a fifth to the calls"),
        );
    }
    let window = *budget.window.get_ref();
    if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&window) {
        errors.push(
            ConfigError::at(
                budget.window.span(),
                "retry_budget window must be 1s to 60s",
            )
            .hint("the default is \"10s\""),
        );
    }
    RetrySettings {
        budget_percent: percent,
        budget_min_per_second: budget.min_per_second,
        budget_window: window,
        backoff: s.retry_backoff,
        backoff_max: s.retry_backoff_max.max(s.retry_backoff),
        min_remaining: s.retry_min_remaining,
    }
}

pub(super) fn cancel_policy(s: &UpstreamSection, errors: &mut Vec<ConfigError>) -> CancelPolicy {
    let budget = &s.cancel_budget;
    let per_second = *budget.per_second.get_ref();
    if !(per_second.is_finite() && per_second >= 0.0) {
        errors.push(
            ConfigError::at(
                budget.per_second.span(),
                "cancel_budget per_second must be a number, 0 or more",
            )
            .hint("the resets a connection regains per second; the default is 5"),
        );
    }
    CancelPolicy {
        burst: budget.burst,
        per_second,
        max_left_running: budget.max_left_running,
    }
}
