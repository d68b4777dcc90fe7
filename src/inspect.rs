//! What a compiled configuration says, as JSON, and what changes between
//! two of them. The admin listener serves the running one (`/routes`,
//! `/config`); `protogate check --diff old.toml` and `--against
//! http://ADMIN` print what a reload to a new routes.toml would change.
//! Secrets never appear: auth shows as its policy (`corp(books.read)`),
//! never keys or token sources' values.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use crate::plan::{MethodPlan, Plans};
use crate::snapshot::{Settings, Snapshot};
use crate::upstream::{Discovery, PoolConfig, Upstream, UpstreamConfig};

/// Every binding, as `/routes` serves it.
pub fn routes(plans: &Plans) -> Value {
    Value::Array(plans.iter().map(route).collect())
}

fn route(plan: &MethodPlan) -> Value {
    let summary = plan.summary();
    json!({
        "method": summary.http_method,
        "template": summary.template,
        "grpc_method": summary.grpc_method,
        "upstream": summary.upstream,
        "body": summary.body,
        "timeout": text(summary.timeout),
        "auth": summary.auth,
        "cache": {
            "public": plan.cache.public,
            "gateway": plan.cache.gateway,
            "fresh_for": text(plan.cache.fresh_for),
        },
        "retry": {
            "attempts": plan.upstream.retry.attempts,
            "on": plan.upstream.retry.on.names(),
        },
    })
}

/// The effective configuration of a running snapshot, as `/config` serves
/// it: settings, upstreams (with their current endpoints) and routes.
pub fn config(snapshot: &Snapshot) -> Value {
    json!({
        "settings": settings(&snapshot.settings),
        "upstreams": snapshot.upstreams.iter().map(|u| upstream(u)).collect::<Vec<_>>(),
        "routes": routes(&snapshot.plans),
    })
}

fn settings(s: &Settings) -> Value {
    let l = &s.listener;
    let limits = &s.limits;
    json!({
        "server": {
            "listen": l.listen.to_string(),
            "header_read_timeout": text(l.header_read_timeout),
            "shutdown_grace": text(l.shutdown_grace),
            "http2_max_concurrent_streams": l.http2_max_concurrent_streams,
            "first_request_timeout": text(l.first_request_timeout),
            "idle_timeout": text(l.idle_timeout),
            "send_timeout": text(l.send_timeout),
            "max_buffered_response_bytes": l.max_buffered_response_bytes,
            "max_connections": l.max_connections,
            "trusted_proxy_hops": s.forwarding.trusted_proxy_hops,
            "access_log": s.access_log,
        },
        "limits": {
            "max_body_bytes": limits.max_body_bytes,
            "max_json_depth": limits.max_json_depth,
            "max_path_bytes": limits.max_path_bytes,
            "max_query_bytes": limits.max_query_bytes,
            "max_headers": limits.max_headers,
            "max_header_bytes": limits.max_header_bytes,
            "max_concurrent_requests": limits.max_concurrent_requests,
        },
        "headers": {
            "forward_request": names(&s.forwarding.request),
            "forward_response": names(&s.forwarding.response),
        },
        "cors": s.edge.cors.as_ref().map(|c| json!({
            "allow_origins": c.allow_origins,
            "allow_methods": c.allow_methods.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
            "allow_headers": names(&c.allow_headers),
            "expose_headers": names(&c.expose_headers),
            "allow_credentials": c.allow_credentials,
            "max_age": text(c.max_age),
        })),
        "compression": s.edge.compression.as_ref().map(|c| json!({ "min_bytes": c.min_bytes })),
        "admin": s.admin.map(|a| a.to_string()),
    })
}

fn upstream(u: &Upstream) -> Value {
    let mut view = upstream_settings(
        u.pool.config(),
        u.timeout,
        u.max_message_bytes,
        u.max_concurrent_calls(),
    );
    let endpoints: Vec<String> = u
        .pool
        .endpoints()
        .iter()
        .map(|e| e.authority().to_string())
        .collect();
    view["current_endpoints"] = json!(endpoints);
    view
}

/// Every upstream of a compiled (not yet started) configuration.
pub fn upstreams(configs: &[UpstreamConfig]) -> Value {
    Value::Array(
        configs
            .iter()
            .map(|c| {
                upstream_settings(
                    &c.pool,
                    c.timeout,
                    c.max_message_bytes,
                    c.max_concurrent_calls,
                )
            })
            .collect(),
    )
}

/// An upstream's settings: what a reload compares.
fn upstream_settings(
    pool: &PoolConfig,
    timeout: Duration,
    max_message_bytes: usize,
    max_concurrent_calls: usize,
) -> Value {
    json!({
        "name": pool.name,
        "source": source(&pool.discovery),
        "tls": pool.tls.is_some(),
        "connections": pool.connections,
        "connect_timeout": text(pool.connect_timeout),
        "keepalive_interval": text(pool.keepalive_interval),
        "health_check": pool.health.as_ref().map(|h| json!({
            "interval": text(h.interval),
            "timeout": text(h.timeout),
            "service": h.service,
        })),
        "timeout": text(timeout),
        "max_message_bytes": max_message_bytes,
        "max_concurrent_calls": max_concurrent_calls,
    })
}

fn source(discovery: &Discovery) -> String {
    match discovery {
        Discovery::Static(list) => {
            let list: Vec<&str> = list.iter().map(|a| a.as_str()).collect();
            format!("endpoints {}", list.join(" "))
        }
        Discovery::Dns(dns) => format!("dns {}:{}", dns.name, dns.port),
        Discovery::Etcd(etcd) => format!("etcd {} {}", etcd.endpoints.join(" "), etcd.prefix),
    }
}

fn names(headers: &[http::HeaderName]) -> Vec<&str> {
    headers.iter().map(http::HeaderName::as_str).collect()
}

fn text(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

/// What changes from `old` to `new`, both `{"routes": [...], "upstreams":
/// [...]}` (as `/config` serves them): one line per binding (keyed by
/// method and template) and per upstream (by name), `+` added, `-`
/// removed, `~` changed with each field that differs. Empty when nothing
/// changes.
pub fn diff(old: &Value, new: &Value) -> String {
    let mut out = diff_by(&old["routes"], &new["routes"], route_key, target);
    out += &diff_by(&old["upstreams"], &new["upstreams"], upstream_key, |u| {
        compact(&u["source"])
    });
    out
}

fn route_key(r: &Value) -> Option<String> {
    Some(format!(
        "{} {}",
        r["method"].as_str()?,
        r["template"].as_str()?
    ))
}

fn upstream_key(u: &Value) -> Option<String> {
    Some(format!("upstream {}", u["name"].as_str()?))
}

fn diff_by(
    old: &Value,
    new: &Value,
    key: fn(&Value) -> Option<String>,
    describe: fn(&Value) -> String,
) -> String {
    let (old, new) = (keyed(old, key), keyed(new, key));
    let mut out = String::new();
    for (key, route) in &new {
        match old.get(key) {
            None => {
                let _ = writeln!(out, "+ {key} → {}", describe(route));
            }
            Some(before) if before != route => {
                let _ = writeln!(out, "~ {key}: {}", changes(before, route).join(", "));
            }
            Some(_) => {}
        }
    }
    for (key, route) in &old {
        if !new.contains_key(key) {
            let _ = writeln!(out, "- {key} → {}", describe(route));
        }
    }
    out
}

/// The entries of a JSON array by their key; changing-by-nature fields
/// (the endpoints discovery has found right now) are left out.
fn keyed(list: &Value, key: fn(&Value) -> Option<String>) -> BTreeMap<String, Value> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let mut entry = entry.clone();
            if let Some(fields) = entry.as_object_mut() {
                fields.remove("current_endpoints");
            }
            Some((key(&entry)?, entry))
        })
        .collect()
}

fn target(route: &Value) -> String {
    format!(
        "{} on {} (auth {})",
        route["grpc_method"].as_str().unwrap_or("?"),
        route["upstream"].as_str().unwrap_or("?"),
        route["auth"].as_str().unwrap_or("?")
    )
}

/// `field: old → new` for each top-level field that differs.
fn changes(before: &Value, after: &Value) -> Vec<String> {
    let fields = after.as_object().into_iter().flatten();
    fields
        .filter(|(name, value)| before.get(name.as_str()) != Some(value))
        .map(|(name, value)| {
            let was = before.get(name.as_str()).cloned().unwrap_or(Value::Null);
            format!("{name}: {} → {}", compact(&was), compact(value))
        })
        .collect()
}

fn compact(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(method: &str, template: &str, auth: &str) -> Value {
        json!({"method": method, "template": template, "grpc_method": "a.B/C", "upstream": "u", "auth": auth})
    }

    #[test]
    fn added_removed_and_changed_bindings_and_upstreams_are_each_one_line() {
        let old = json!({
            "routes": [r("GET", "/v1/a", "none"), r("GET", "/v1/b", "none")],
            "upstreams": [{"name": "u", "source": "dns a:1", "current_endpoints": ["1.2.3.4:1"]}],
        });
        let new = json!({
            "routes": [r("GET", "/v1/a", "corp"), r("POST", "/v1/c", "none")],
            "upstreams": [
                {"name": "u", "source": "dns a:1", "current_endpoints": ["1.2.3.5:1"]},
                {"name": "v", "source": "endpoints 10.0.0.1:1"},
            ],
        });
        assert_eq!(
            diff(&old, &new),
            "~ GET /v1/a: auth: none → corp\n\
             + POST /v1/c → a.B/C on u (auth none)\n\
             - GET /v1/b → a.B/C on u (auth none)\n\
             + upstream v → endpoints 10.0.0.1:1\n"
        );
        assert_eq!(diff(&new, &new), "");
    }
}
