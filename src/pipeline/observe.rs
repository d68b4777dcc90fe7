//! What a request leaves behind: the facts the stages learnt about it
//! ([`Observed`]), its metrics and its access log line.

use axum::response::Response;
use http::{HeaderValue, Method, StatusCode};
use std::time::Duration;

use crate::metrics::{Metrics, Observation, RouteMetrics};
use crate::response_cache::CacheStatus;
use crate::route::BindingId;
use crate::snapshot::Snapshot;
use crate::trace::Trace;

/// What the stages learnt about a request, for its metrics and access log.
#[derive(Debug, Default)]
pub(super) struct Observed {
    /// The binding, once the route matched.
    pub(super) binding: Option<BindingId>,
    /// Time on the upstream call, when this request made one.
    pub(super) upstream: Option<std::time::Duration>,
    /// The endpoint that answered this request's call.
    pub(super) endpoint: Option<http::uri::Authority>,
    /// Attempts after the first on this request's call.
    pub(super) retries: u32,
    /// Request body bytes read.
    pub(super) request_bytes: u64,
    /// Where the gateway cache answered from, if the route uses it.
    pub(super) cache: Option<CacheStatus>,
    /// The API key's consumer or the token's `sub` (never the credential).
    pub(super) consumer: Option<String>,
    /// A gRPC-Web call: the content type its answer carries (an error is
    /// then answered trailers-only), and its route is the gRPC method.
    pub(super) grpc_web: Option<HeaderValue>,
    /// The status counted in metrics when the HTTP one says nothing (a
    /// gRPC-Web answer is a 200 whatever its gRPC status).
    pub(super) answered_as: Option<StatusCode>,
    /// `RateLimit-Policy` / `RateLimit` for the answer, whatever it is.
    pub(super) rate_limit: Vec<(http::HeaderName, HeaderValue)>,
    /// A cluster-wide limit was decided locally: Redis did not answer.
    pub(super) rate_limit_fell_back: bool,
}

/// The access log line (target `protogate::access`): who asked what, how it
/// went, and where the time went. Never a credential: the caller is named
/// by its API key's consumer or its token's `sub`.
#[allow(clippy::too_many_arguments)]
pub(super) fn access_log(
    snapshot: &Snapshot,
    request_id: &HeaderValue,
    trace: &Trace,
    method: &Method,
    uri: &http::Uri,
    observed: &Observed,
    response: &Response,
    total: Duration,
) {
    let upstream = observed.upstream.unwrap_or_default();
    let plan = observed.binding.map(|b| snapshot.plans.get(b));
    tracing::info!(
        target: "protogate::access",
        request_id = request_id.to_str().unwrap_or_default(),
        trace_id = %trace.trace_id(),
        span_id = %trace.span_id(),
        %method,
        route = %route_name(snapshot, observed),
        path = uri.path(),
        status = response.status().as_u16(),
        request_bytes = observed.request_bytes,
        response_bytes = http_body::Body::size_hint(response.body()).exact(),
        total_us = total.as_micros() as u64,
        upstream_us = observed.upstream.map(|u| u.as_micros() as u64),
        gateway_us = total.saturating_sub(upstream).as_micros() as u64,
        upstream = plan.map(|p| &*p.upstream.upstream_name),
        endpoint = observed.endpoint.as_ref().map(|e| e.as_str()),
        retries = observed.retries,
        consumer = observed.consumer.as_deref(),
        cache = observed.cache.map(CacheStatus::as_str),
        "request"
    );
}

/// The matched binding's path template (its gRPC method for a gRPC-Web
/// call), or `unmatched`.
pub(super) fn route_name(snapshot: &Snapshot, observed: &Observed) -> String {
    observed.binding.map_or_else(
        || crate::metrics::UNMATCHED.to_string(),
        |b| {
            let plan = snapshot.plans.get(b);
            match observed.grpc_web {
                Some(_) => plan.upstream.grpc_path.path().to_string(),
                None => plan.template.to_string(),
            }
        },
    )
}

/// Records an answered request's metrics.
pub(super) fn record(
    metrics: &Metrics,
    routes: &RouteMetrics,
    method: &Method,
    observed: &Observed,
    response: &Response,
    total: Duration,
) {
    let status = observed.answered_as.unwrap_or(response.status());
    if let Some(cache) = observed.cache {
        metrics.cache_lookup(cache);
    }
    if status == StatusCode::NOT_MODIFIED {
        metrics.not_modified();
    }
    routes.record(
        method,
        &Observation {
            binding: observed.binding.map(BindingId::index),
            grpc_web: observed.grpc_web.is_some(),
            status,
            total,
            upstream: observed.upstream,
            request_bytes: observed.request_bytes,
            response_bytes: http_body::Body::size_hint(response.body())
                .exact()
                .unwrap_or(0),
        },
    );
}
