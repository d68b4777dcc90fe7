//! Compiles `[upstreams.NAME]` into connection plans (dialled later, by
//! [`crate::snapshot::Compiled::start`]) and the name → index map that
//! bindings use.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use std::time::Duration;

use http::uri::Authority;
use toml::Spanned;

use crate::config::file::UpstreamSection;
use crate::config::upstream::{HealthCheckSection, OutlierSection};
use crate::config::{ConfigError, RoutesFile};
use crate::upstream::health::HealthConfig;
use crate::upstream::outlier::OutlierConfig;
use crate::upstream::tls::ClientTls;
use crate::upstream::{Discovery, PoolConfig, RetrySettings, UpstreamConfig};

/// Health checks more often than this would be load, not a check.
const MIN_HEALTH_INTERVAL: Duration = Duration::from_millis(10);

/// Every upstream, compiled, in index order.
#[derive(Debug, Default)]
pub(super) struct CompiledUpstreams {
    /// Name → index into `configs`.
    pub index: HashMap<String, usize>,
    /// One plan per upstream.
    pub configs: Vec<UpstreamConfig>,
}

/// Compiles every `[upstreams.NAME]`, reporting each mistake.
pub(super) fn compile(
    file: &RoutesFile,
    base_dir: &Path,
    errors: &mut Vec<ConfigError>,
) -> CompiledUpstreams {
    let mut compiled = CompiledUpstreams::default();
    for (name, section) in &file.upstreams {
        let s = section.get_ref();
        let mut endpoints = Vec::new();
        let mut schemes = Vec::new();
        for endpoint in &s.endpoints {
            match parse_endpoint(endpoint.get_ref()) {
                Ok((tls, authority)) => {
                    endpoints.push(authority);
                    schemes.push((tls, endpoint.span()));
                }
                Err(message) => errors.push(ConfigError::at(endpoint.span(), message).hint(
                    "write endpoints as \"http://host:port\" (\"https://host:port\" for TLS)",
                )),
            }
        }
        let tls = tls(name.get_ref(), s, &schemes, base_dir, errors);
        if s.endpoints.is_empty() {
            errors.push(
                ConfigError::at(
                    section.span(),
                    format!("upstream '{}' has no endpoints", name.get_ref()),
                )
                .hint("add endpoints = [\"http://127.0.0.1:50051\"]"),
            );
        }
        if *s.connections.get_ref() == 0 {
            errors.push(
                ConfigError::at(s.connections.span(), "connections must be at least 1")
                    .hint("it is the number of HTTP/2 connections kept to each endpoint; the default is 2"),
            );
        }
        if *s.max_concurrent_calls.get_ref() == 0 {
            errors.push(
                ConfigError::at(
                    s.max_concurrent_calls.span(),
                    "max_concurrent_calls must be at least 1",
                )
                .hint("it bounds the calls in flight to this upstream; the default is 1024"),
            );
        }
        let health = s.health_check.as_ref().map(|h| health_config(h, errors));
        let outlier = outlier_config(&s.outlier, errors);
        let retry = retry_settings(s, errors);
        compiled
            .index
            .insert(name.get_ref().clone(), compiled.configs.len());
        compiled.configs.push(UpstreamConfig {
            pool: PoolConfig {
                name: name.get_ref().clone(),
                discovery: Discovery::Static(endpoints),
                connections: *s.connections.get_ref(),
                connect_timeout: s.connect_timeout,
                keepalive_interval: s.keepalive_interval,
                keepalive_timeout: s.keepalive_timeout,
                backoff_initial: s.reconnect_backoff,
                backoff_max: s.reconnect_backoff_max.max(s.reconnect_backoff),
                outlier,
                health,
                tls,
            },
            timeout: s.timeout,
            max_message_bytes: s.max_message_bytes,
            retry,
            max_concurrent_calls: (*s.max_concurrent_calls.get_ref()).max(1),
        });
    }
    compiled
}

fn health_config(
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

fn outlier_config(o: &OutlierSection, errors: &mut Vec<ConfigError>) -> OutlierConfig {
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

fn retry_settings(s: &UpstreamSection, errors: &mut Vec<ConfigError>) -> RetrySettings {
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

/// An upstream is reached over TLS when its `tls` table is present or its
/// endpoints are `https://`; one upstream is all TLS or all cleartext.
fn tls(
    name: &str,
    s: &UpstreamSection,
    schemes: &[(bool, Range<usize>)],
    base_dir: &Path,
    errors: &mut Vec<ConfigError>,
) -> Option<Arc<ClientTls>> {
    let https = schemes.iter().any(|(tls, _)| *tls);
    if let Some((_, span)) = schemes.iter().find(|(tls, _)| *tls != schemes[0].0) {
        errors.push(
            ConfigError::at(
                span.clone(),
                format!("upstream '{name}' mixes http:// and https:// endpoints"),
            )
            .hint("an upstream is all TLS or all cleartext: make every endpoint https:// (or use two upstreams)"),
        );
        return None;
    }
    match &s.tls {
        Some(table) if !schemes.is_empty() && !https => {
            errors.push(
                ConfigError::at(
                    table.span(),
                    format!("upstream '{name}' has a tls table but http:// endpoints"),
                )
                .hint("write the endpoints as \"https://host:port\", or remove tls"),
            );
            None
        }
        Some(table) => super::tls::upstream(Some(table), base_dir, errors),
        None if https => super::tls::upstream(None, base_dir, errors),
        None => None,
    }
}

/// `http://host:port` or `https://host:port`: whether it is TLS, and where.
fn parse_endpoint(text: &str) -> Result<(bool, Authority), String> {
    let (tls, rest) = match (text.strip_prefix("https://"), text.strip_prefix("http://")) {
        (Some(rest), _) => (true, rest),
        (None, Some(rest)) => (false, rest),
        (None, None) => {
            return Err(format!(
                "endpoint {text:?} must start with http:// or https://"
            ));
        }
    };
    let authority: Authority = rest
        .trim_end_matches('/')
        .parse()
        .map_err(|e| format!("endpoint {text:?}: {e}"))?;
    if authority.port_u16().is_none() {
        return Err(format!("endpoint {text:?} has no port"));
    }
    Ok((tls, authority))
}
