//! Compiles what a method's writes answer: `idempotency = { ... }` (route
//! or method) for its POST and PATCH bindings, and a method's
//! `success_status` and `location`; plus the gateway-wide `[idempotency]`
//! store settings.

use std::ops::Range;
use std::time::Duration;

use http::{Method, StatusCode};
use prost_reflect::MethodDescriptor;

use crate::config::ConfigError;
use crate::config::file::{MethodSection, RouteSection, RoutesFile};
use crate::idempotency::{self, StoreSettings};
use crate::transcode::{LocationTemplate, Success};

/// A stored answer's lifetime when the rule gives no `ttl`.
const DEFAULT_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// `[idempotency]`, compiled.
pub(super) fn store_settings(file: &RoutesFile, errors: &mut Vec<ConfigError>) -> StoreSettings {
    let section = &file.idempotency;
    if let Some(url) = &section.redis
        && let Err(why) = idempotency::check_redis_url(url.get_ref())
    {
        errors.push(
            ConfigError::at(url.span(), format!("invalid Redis URL: {why}"))
                .hint("write redis://host:6379 or redis+unix:///path/to/redis.sock"),
        );
    }
    for (value, name) in [
        (section.max_entries, "max_entries"),
        (section.max_answer_bytes, "max_answer_bytes"),
    ] {
        if value == 0 {
            errors.push(ConfigError::global(format!(
                "[idempotency] {name} must be at least 1"
            )));
        }
    }
    StoreSettings {
        redis: section.redis.as_ref().map(|u| u.get_ref().clone()),
        max_entries: section.max_entries,
        max_bytes: section.max_bytes,
        max_answer_bytes: section.max_answer_bytes,
        key_prefix: section.key_prefix.clone(),
        redis_timeout: section.redis_timeout,
    }
}

/// Whether a binding with this HTTP method takes keys.
pub(super) fn takes_keys(method: &Method) -> bool {
    *method == Method::POST || *method == Method::PATCH
}

/// The idempotency policy of one method's POST/PATCH bindings: the
/// method's own rule, else its route's. A method-level rule on a method
/// with no POST or PATCH binding, or on a streaming method, is a mistake.
pub(super) fn idempotency(
    route: &RouteSection,
    section: Option<&MethodSection>,
    method: &MethodDescriptor,
    http_methods: &[Method],
    errors: &mut Vec<ConfigError>,
) -> Option<idempotency::Policy> {
    let own = section.and_then(|m| m.idempotency.as_ref());
    let streaming = method.is_client_streaming() || method.is_server_streaming();
    if let Some(rule) = own {
        if streaming {
            errors.push(ConfigError::at(
                rule.span(),
                format!("{} is a streaming method; Idempotency-Key applies to unary POST and PATCH methods only", method.full_name()),
            ));
            return None;
        }
        if !http_methods.iter().any(takes_keys) {
            let mut bound: Vec<&str> = http_methods.iter().map(Method::as_str).collect();
            bound.dedup();
            errors.push(
                ConfigError::at(
                    rule.span(),
                    format!(
                        "{} is bound to {}; Idempotency-Key applies to POST and PATCH only",
                        method.full_name(),
                        bound.join(", ")
                    ),
                )
                .hint("GET, PUT and DELETE are idempotent already; remove idempotency here"),
            );
            return None;
        }
    }
    let rule = own.or(route.idempotency.as_ref()).filter(|_| !streaming)?;
    let ttl = rule.get_ref().ttl.unwrap_or(DEFAULT_TTL);
    if ttl.is_zero() {
        errors.push(ConfigError::at(
            rule.span(),
            "idempotency ttl must be longer than 0s",
        ));
        return None;
    }
    Some(idempotency::Policy {
        ttl,
        required: rule.get_ref().required,
    })
}

/// A method's successful answer: `success_status` and `location`.
pub(super) fn success(
    section: Option<&MethodSection>,
    method: &MethodDescriptor,
    http_methods: &[Method],
    errors: &mut Vec<ConfigError>,
) -> Success {
    let Some(section) = section else {
        return Success::default();
    };
    let status = section.success_status.as_ref().and_then(|status| {
        status_of(
            *status.get_ref(),
            status.span(),
            method,
            http_methods,
            errors,
        )
    });
    let status = status.unwrap_or(StatusCode::OK);
    let location = section.location.as_ref().and_then(|text| {
        if status != StatusCode::CREATED {
            errors.push(
                ConfigError::at(text.span(), "location is sent only with a 201 answer")
                    .hint("add success_status = 201 to this method"),
            );
            return None;
        }
        LocationTemplate::compile(text.get_ref(), &method.output())
            .map_err(|why| errors.push(ConfigError::at(text.span(), why)))
            .ok()
    });
    Success { status, location }
}

fn status_of(
    code: u16,
    span: Range<usize>,
    method: &MethodDescriptor,
    http_methods: &[Method],
    errors: &mut Vec<ConfigError>,
) -> Option<StatusCode> {
    let status = match code {
        200 | 201 | 202 | 204 => StatusCode::from_u16(code).ok()?,
        other => {
            errors.push(
                ConfigError::at(
                    span,
                    format!("success_status {other} is not a success status a method can declare"),
                )
                .hint("use 200, 201, 202 or 204"),
            );
            return None;
        }
    };
    if status == StatusCode::OK {
        return Some(status);
    }
    if method.is_client_streaming() || method.is_server_streaming() {
        errors.push(ConfigError::at(
            span,
            format!(
                "{} is a streaming method; its answer is always 200",
                method.full_name()
            ),
        ));
        return None;
    }
    if http_methods.contains(&Method::GET) {
        errors.push(
            ConfigError::at(
                span,
                format!("{} is bound to GET, whose answers are 200 (cache headers, ETag and 304 assume it)", method.full_name()),
            )
            .hint("declare success_status on methods bound to POST, PUT, PATCH or DELETE"),
        );
        return None;
    }
    Some(status)
}
