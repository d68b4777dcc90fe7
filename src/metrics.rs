//! Prometheus metrics, served on the admin listener at `/metrics`.
//!
//! One [`Metrics`] per running gateway owns the registry. The request path
//! records through [`RouteMetrics`]: one slot per binding of the installed
//! snapshot, whose handles are looked up on the binding's first request;
//! from then on recording a request is a few atomic adds — no label
//! formatting, no map lookup. What the upstream pools, the
//! response cache and the process already count is read at scrape time by
//! [`scrape::Live`] instead of being counted twice.
//!
//! Labels are bounded: a route is its path template (never the raw path),
//! a method one of the standard ones (or `OTHER`), a status its class.

mod rate_limits;
mod scrape;
mod streams;

pub use rate_limits::RateLimitMetrics;
pub use streams::{OpenStream, StreamMetrics, StreamOutcome};

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::{Method, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::auth::AuthError;
use crate::response_cache::CacheStatus;
use crate::snapshot::Snapshot;

/// The `Content-Type` of `/metrics` (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The route label of requests that matched no binding (or were refused
/// before routing: a limit, a malformed path).
pub const UNMATCHED: &str = "unmatched";

/// Latency buckets, in seconds: 100 µs to ~13 s, doubling.
const LATENCY_BUCKETS: (f64, f64, u16) = (0.0001, 2.0, 18);

/// Labels of a request count.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Arc<str>,
    method: &'static str,
    status: &'static str,
}

/// Labels of a per-route family.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: Arc<str>,
}

/// Why a request was refused (auth).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// What came of an operation (cache lookup, reload).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

type HistogramFamily = Family<RouteLabel, Histogram, fn() -> Histogram>;

/// Every metric family of one gateway.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    request_families: RequestFamilies,
    in_flight: Gauge,
    auth_rejections: Family<ReasonLabel, Counter>,
    cache_lookups: Family<ResultLabel, Counter>,
    not_modified: Counter,
    reloads: Family<ResultLabel, Counter>,
    generation: Gauge,
    streams: StreamMetrics,
    rate_limits: RateLimitMetrics,
    live: Arc<scrape::Live>,
}

/// The families recorded per request (handles share their values).
#[derive(Debug, Clone)]
struct RequestFamilies {
    requests: Family<RequestLabels, Counter>,
    total_time: HistogramFamily,
    upstream_time: HistogramFamily,
    gateway_time: HistogramFamily,
    request_bytes: Family<RouteLabel, Counter>,
    response_bytes: Family<RouteLabel, Counter>,
}

/// One binding's request metrics. Each handle is looked up in its family
/// on first use only (so series the gateway never served are not
/// exported as zeros), then is an atomic add.
#[derive(Debug)]
struct BindingMetrics {
    route: Arc<str>,
    method: &'static str,
    /// Request counts by status class: 1xx … 5xx.
    by_class: [OnceLock<Counter>; 5],
    per_route: OnceLock<RouteHandles>,
}

/// A route's time and byte handles.
#[derive(Debug)]
struct RouteHandles {
    total_time: Histogram,
    upstream_time: Histogram,
    gateway_time: Histogram,
    request_bytes: Counter,
    response_bytes: Counter,
}

/// The request metrics of one snapshot's bindings, indexed like its plans.
#[derive(Debug)]
pub struct RouteMetrics {
    families: RequestFamilies,
    bindings: Vec<BindingMetrics>,
    /// The same bindings called over gRPC-Web: the route is the gRPC method.
    grpc_methods: Vec<BindingMetrics>,
    /// Unmatched requests, per standard method (and `OTHER`).
    unmatched: Vec<(&'static str, BindingMetrics)>,
}

/// What the pipeline learnt about one request, for its metrics.
#[derive(Debug, Clone, Copy)]
pub struct Observation {
    /// The binding's index, if one matched.
    pub binding: Option<usize>,
    /// A gRPC-Web call of the binding's method (counted under its name).
    pub grpc_web: bool,
    /// The status answered.
    pub status: StatusCode,
    /// From the head's arrival to the answer.
    pub total: Duration,
    /// Spent waiting on the upstream, if it was called.
    pub upstream: Option<Duration>,
    /// Request body bytes read.
    pub request_bytes: u64,
    /// Response body bytes, when known before sending.
    pub response_bytes: u64,
}

/// Counts a request as in flight until dropped (a cancelled request too).
#[derive(Debug)]
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

// === impl Metrics ===

impl Metrics {
    /// Registers every family; `snapshot` is the one served first.
    pub fn new(snapshot: Arc<Snapshot>) -> Metrics {
        let histogram: fn() -> Histogram = || {
            let (start, factor, count) = LATENCY_BUCKETS;
            Histogram::new(exponential_buckets(start, factor, count))
        };
        let metrics = Metrics {
            registry: Registry::with_prefix("protogate"),
            request_families: RequestFamilies {
                requests: Family::default(),
                total_time: Family::new_with_constructor(histogram),
                upstream_time: Family::new_with_constructor(histogram),
                gateway_time: Family::new_with_constructor(histogram),
                request_bytes: Family::default(),
                response_bytes: Family::default(),
            },
            in_flight: Gauge::default(),
            auth_rejections: Family::default(),
            cache_lookups: Family::default(),
            not_modified: Counter::default(),
            reloads: Family::default(),
            generation: Gauge::default(),
            streams: StreamMetrics::default(),
            rate_limits: RateLimitMetrics::default(),
            live: Arc::new(scrape::Live::new(snapshot)),
        };
        metrics.generation.set(1);
        metrics.registered()
    }

    /// Itself, with every family in its registry.
    fn registered(mut self) -> Metrics {
        let r = &mut self.registry;
        let f = &self.request_families;
        r.register(
            "requests",
            "Requests answered, by route template, method and status class",
            f.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Whole request time, from the head's arrival to the answer",
            f.total_time.clone(),
        );
        r.register(
            "upstream_duration_seconds",
            "Time spent on the upstream call, all attempts",
            f.upstream_time.clone(),
        );
        r.register(
            "gateway_duration_seconds",
            "The gateway's own time: the whole request minus the upstream call",
            f.gateway_time.clone(),
        );
        r.register(
            "request_bytes",
            "Request body bytes read",
            f.request_bytes.clone(),
        );
        r.register(
            "response_bytes",
            "Response body bytes, before compression",
            f.response_bytes.clone(),
        );
        r.register(
            "requests_in_flight",
            "Requests being served now",
            self.in_flight.clone(),
        );
        r.register(
            "auth_rejections",
            "Requests refused by authentication or authorisation, by reason",
            self.auth_rejections.clone(),
        );
        r.register(
            "cache_lookups",
            "Gateway response cache lookups, by result (hit, miss, stale)",
            self.cache_lookups.clone(),
        );
        r.register(
            "not_modified",
            "304 Not Modified answers sent",
            self.not_modified.clone(),
        );
        r.register(
            "config_reloads",
            "Configuration reloads, by result (ok, error)",
            self.reloads.clone(),
        );
        r.register(
            "config_generation",
            "Snapshots installed since start (1 = the first)",
            self.generation.clone(),
        );
        self.streams.register(r);
        self.rate_limits.register(r);
        r.register_collector(Box::new(self.live.clone()));
        self
    }

    /// The request metrics of `snapshot`'s bindings, resolved once when it
    /// is installed.
    pub fn routes(&self, snapshot: &Snapshot) -> RouteMetrics {
        let bindings = snapshot
            .plans
            .iter()
            .map(|plan| {
                let route: Arc<str> = plan.template.to_string().into();
                BindingMetrics::new(&route, method_label(&plan.http_method))
            })
            .collect();
        let grpc_methods = snapshot
            .plans
            .iter()
            .map(|plan| {
                let route: Arc<str> = plan.upstream.grpc_path.path().into();
                BindingMetrics::new(&route, "POST")
            })
            .collect();
        let unmatched: Arc<str> = UNMATCHED.into();
        let unmatched = METHODS
            .iter()
            .map(|&m| (m, BindingMetrics::new(&unmatched, m)))
            .collect();
        RouteMetrics {
            families: self.request_families.clone(),
            bindings,
            grpc_methods,
            unmatched,
        }
    }

    /// Installs a new snapshot: the scrape reads its upstreams and cache,
    /// and the generation goes up. Returns its route metrics.
    pub fn installed(&self, snapshot: Arc<Snapshot>) -> RouteMetrics {
        let routes = self.routes(&snapshot);
        self.live.install(snapshot);
        self.generation.inc();
        routes
    }

    /// Counts a configuration reload: `ok` when the new snapshot was
    /// installed, not when it was refused (the old one keeps serving).
    pub fn config_reloaded(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reloads.get_or_create(&ResultLabel { result }).inc();
        self.live.reloaded(ok);
    }

    /// Counts a request in flight until the guard is dropped.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// The stream families, for the streaming paths.
    pub fn streams(&self) -> &StreamMetrics {
        &self.streams
    }

    /// The rate-limit families.
    pub fn rate_limits(&self) -> &RateLimitMetrics {
        &self.rate_limits
    }

    /// Counts a request refused by authentication, by reason.
    pub fn auth_rejected(&self, error: &AuthError) {
        let reason = auth_reason(error);
        self.auth_rejections
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts a gateway cache lookup and what it found.
    pub fn cache_lookup(&self, status: CacheStatus) {
        let result = status.as_str();
        self.cache_lookups
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// Counts a 304 answer.
    pub fn not_modified(&self) {
        self.not_modified.inc();
    }

    /// The Prometheus text of every metric, as scraped now.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail; an encoder error would be a bug
        // in a collector, and a partial page is still worth serving.
        if let Err(error) =
            prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
        {
            tracing::error!(%error, "metrics encoding failed");
        }
        text
    }
}

// === impl BindingMetrics ===

impl BindingMetrics {
    /// Empty slots; handles are looked up on first use.
    fn new(route: &Arc<str>, method: &'static str) -> BindingMetrics {
        BindingMetrics {
            route: route.clone(),
            method,
            by_class: Default::default(),
            per_route: OnceLock::new(),
        }
    }
}

// === impl RouteMetrics ===

impl RouteMetrics {
    /// Records one answered request.
    pub fn record(&self, method: &Method, observed: &Observation) {
        let bindings = match observed.grpc_web {
            true => &self.grpc_methods,
            false => &self.bindings,
        };
        let binding = observed
            .binding
            .and_then(|i| bindings.get(i))
            .unwrap_or_else(|| self.unmatched(method));
        let class = usize::from(observed.status.as_u16() / 100).clamp(1, 5) - 1;
        binding.by_class[class]
            .get_or_init(|| {
                self.families.requests.get_or_create_owned(&RequestLabels {
                    route: binding.route.clone(),
                    method: binding.method,
                    status: STATUS_CLASSES[class],
                })
            })
            .inc();
        let route = binding.per_route.get_or_init(|| {
            let label = RouteLabel {
                route: binding.route.clone(),
            };
            let f = &self.families;
            RouteHandles {
                total_time: f.total_time.get_or_create_owned(&label),
                upstream_time: f.upstream_time.get_or_create_owned(&label),
                gateway_time: f.gateway_time.get_or_create_owned(&label),
                request_bytes: f.request_bytes.get_or_create_owned(&label),
                response_bytes: f.response_bytes.get_or_create_owned(&label),
            }
        });
        route.total_time.observe(observed.total.as_secs_f64());
        if let Some(upstream) = observed.upstream {
            route.upstream_time.observe(upstream.as_secs_f64());
        }
        let own = observed
            .total
            .saturating_sub(observed.upstream.unwrap_or_default());
        route.gateway_time.observe(own.as_secs_f64());
        route.request_bytes.inc_by(observed.request_bytes);
        route.response_bytes.inc_by(observed.response_bytes);
    }

    fn unmatched(&self, method: &Method) -> &BindingMetrics {
        let label = method_label(method);
        // `METHODS` ends with OTHER, which `method_label` falls back to.
        self.unmatched
            .iter()
            .find(|(m, _)| *m == label)
            .map(|(_, b)| b)
            .unwrap_or(&self.unmatched[self.unmatched.len() - 1].1)
    }
}

/// The status class labels, indexed by the status's first digit minus one.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Method labels: the standard methods, and OTHER for any extension method.
const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "OTHER",
];

/// A method's bounded label.
fn method_label(method: &Method) -> &'static str {
    METHODS
        .iter()
        .find(|m| **m == method.as_str())
        .copied()
        .unwrap_or("OTHER")
}

/// Why authentication refused, as a bounded label.
fn auth_reason(error: &AuthError) -> &'static str {
    match error {
        AuthError::Missing(_) => "missing",
        AuthError::Invalid(_, problem) => problem.as_str(),
        AuthError::InvalidKey(..) => "invalid_key",
        AuthError::Malformed(..) => "malformed",
        AuthError::Forbidden { .. } => "scope",
        AuthError::KeysUnavailable(_) => "keys_unavailable",
    }
}
