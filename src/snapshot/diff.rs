//! What a new configuration changes against a running or an older one:
//! routes added, removed and changed, upstreams, auth, and the settings
//! that take a restart. `protogate check --diff` prints it; a reload (SIGHUP
//! or admin `POST /reload`) logs and answers it.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Settings;
use crate::plan::{MethodPlan, Plans};
use crate::upstream::UpstreamConfig;

/// One side of a comparison: a compiled config or a running snapshot.
#[derive(Debug, Clone)]
pub struct Side<'a> {
    /// Every binding's plan.
    pub plans: &'a Plans,
    /// Every upstream's compiled settings.
    pub upstreams: Vec<&'a UpstreamConfig>,
    /// The gateway-wide settings.
    pub settings: &'a Settings,
}

/// The changes from one configuration to another, each list sorted.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigDiff {
    /// Bindings (`METHOD /template`) only the new config has.
    pub routes_added: Vec<String>,
    /// Bindings only the old config has.
    pub routes_removed: Vec<String>,
    /// Bindings in both whose plan differs (gRPC method, transcoding,
    /// auth, cache policy, timeout, retries, upstream, streaming options).
    pub routes_changed: Vec<String>,
    /// Bindings whose auth policy changed: `METHOD /template: old → new`.
    pub auth_changed: Vec<String>,
    /// Upstreams only the new config has.
    pub upstreams_added: Vec<String>,
    /// Upstreams only the old config has.
    pub upstreams_removed: Vec<String>,
    /// Upstreams whose settings changed: a reload dials them anew.
    pub upstreams_changed: Vec<String>,
    /// Changed settings a reload cannot apply (listener, admin address).
    pub restart_needed: Vec<String>,
}

// === impl ConfigDiff ===

impl ConfigDiff {
    /// Compares `old` with `new`.
    pub fn between(old: &Side<'_>, new: &Side<'_>) -> ConfigDiff {
        let mut diff = ConfigDiff::default();
        let (before, after) = (bindings(old.plans), bindings(new.plans));
        for (name, plan) in &after {
            match before.get(name) {
                None => diff.routes_added.push(name.clone()),
                Some(was) => {
                    if fingerprint(was) != fingerprint(plan) {
                        diff.routes_changed.push(name.clone());
                    }
                    let (was, is) = (was.auth.summary(), plan.auth.summary());
                    if was != is {
                        diff.auth_changed.push(format!("{name}: {was} → {is}"));
                    }
                }
            }
        }
        diff.routes_removed = (before.keys())
            .filter(|name| !after.contains_key(*name))
            .cloned()
            .collect();
        let named = |side: &Side<'_>| -> BTreeMap<String, UpstreamConfig> {
            (side.upstreams.iter())
                .map(|u| (u.pool.name.clone(), (*u).clone()))
                .collect()
        };
        let (before, after) = (named(old), named(new));
        for (name, config) in &after {
            match before.get(name) {
                None => diff.upstreams_added.push(name.clone()),
                Some(was) if was != config => diff.upstreams_changed.push(name.clone()),
                Some(_) => {}
            }
        }
        diff.upstreams_removed = (before.keys())
            .filter(|name| !after.contains_key(*name))
            .cloned()
            .collect();
        diff.restart_needed = restart_only_changes(old.settings, new.settings)
            .into_iter()
            .map(str::to_owned)
            .collect();
        diff
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self == &ConfigDiff::default()
    }

    /// One line per change, for `protogate check --diff` and logs.
    pub fn lines(&self) -> Vec<String> {
        let sections: [(&str, &[String]); 8] = [
            ("route added", &self.routes_added),
            ("route removed", &self.routes_removed),
            ("route changed", &self.routes_changed),
            ("auth changed", &self.auth_changed),
            ("upstream added", &self.upstreams_added),
            ("upstream removed", &self.upstreams_removed),
            ("upstream changed", &self.upstreams_changed),
            ("needs a restart", &self.restart_needed),
        ];
        (sections.iter())
            .flat_map(|(what, items)| items.iter().map(move |item| format!("{what}: {item}")))
            .collect()
    }
}

/// Every binding by its name, `METHOD /template`.
fn bindings(plans: &Plans) -> BTreeMap<String, &MethodPlan> {
    (plans.iter())
        .map(|plan| (format!("{} {}", plan.http_method, plan.template), plan))
        .collect()
}

/// A plan rendered in full (method, template, auth rule, transcoding with
/// its request and response fields, cache policy, target): two plans that
/// render alike answer alike. Left out: the upstream's index (another
/// upstream's change can move it; its name is in), the providers' key
/// material (live key sets change by themselves; authenticated answers are
/// never in the gateway cache), and message types nested deeper than the
/// request and response fields (a reload that changes protos purges the
/// whole cache, see [`super::Snapshot::purge_changed_routes`]).
pub(super) fn fingerprint(plan: &MethodPlan) -> String {
    let auth = &plan.auth;
    format!(
        "{:?} {:?} {} {:?} {:?} {} {:?} {:?} {} {:?} {:?} {:?} {:?} {:?} {:?} {}",
        plan.http_method,
        plan.template,
        auth.description,
        auth.scopes,
        auth.claims,
        auth.forward_authorization,
        plan.transcode,
        plan.cache,
        plan.upstream.upstream_name,
        plan.upstream.grpc_path,
        plan.upstream.timeout,
        plan.upstream.retry,
        plan.stream,
        plan.rate_limit.describe(),
        plan.idempotency,
        plan.documented,
    )
}

/// The settings a reload cannot apply, by their routes.toml names: the
/// listener is bound and its connections are configured once.
pub fn restart_only_changes(live: &Settings, next: &Settings) -> Vec<&'static str> {
    let (a, b) = (&live.listener, &next.listener);
    let listener = [
        ("[server] listen", a.listen != b.listen),
        (
            "[server] header_read_timeout",
            a.header_read_timeout != b.header_read_timeout,
        ),
        (
            "[server] shutdown_grace",
            a.shutdown_grace != b.shutdown_grace,
        ),
        (
            "[server] http2_max_concurrent_streams",
            a.http2_max_concurrent_streams != b.http2_max_concurrent_streams,
        ),
        (
            "[server] first_request_timeout",
            a.first_request_timeout != b.first_request_timeout,
        ),
        ("[server] idle_timeout", a.idle_timeout != b.idle_timeout),
        ("[server] send_timeout", a.send_timeout != b.send_timeout),
        (
            "[server] max_buffered_response_bytes",
            a.max_buffered_response_bytes != b.max_buffered_response_bytes,
        ),
        (
            "[server] max_connections",
            a.max_connections != b.max_connections,
        ),
        (
            "[server] worker_threads",
            a.worker_threads != b.worker_threads,
        ),
        (
            "[server] http2_max_pending_accept_reset_streams",
            a.http2_max_pending_accept_reset_streams != b.http2_max_pending_accept_reset_streams,
        ),
        (
            "[server] http2_max_local_error_reset_streams",
            a.http2_max_local_error_reset_streams != b.http2_max_local_error_reset_streams,
        ),
        (
            "[server] tls (added or removed)",
            a.tls.is_some() != b.tls.is_some(),
        ),
        ("[admin] listen", live.admin != next.admin),
    ];
    // Heads are parsed within the start-up limits; the configured ones are
    // checked per request, so only a raise needs the parser's bound raised.
    let (a, b) = (&live.limits, &next.limits);
    let parser = [
        (
            "[limits] max_headers (raised)",
            b.max_headers > a.max_headers,
        ),
        (
            "[limits] max_header_bytes (raised)",
            b.max_header_bytes > a.max_header_bytes,
        ),
        (
            "[limits] max_path_bytes (raised)",
            b.max_path_bytes > a.max_path_bytes,
        ),
        (
            "[limits] max_query_bytes (raised)",
            b.max_query_bytes > a.max_query_bytes,
        ),
    ];
    (listener.into_iter().chain(parser))
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect()
}
