//! The serde mirror of routes.toml. Every struct denies unknown keys, so a
//! typo is an error, never a silently ignored setting. Values that later
//! checks point at are `Spanned`, so those checks can name the exact line.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

use super::auth::AuthSection;
use super::edge::{
    AdminSection, CompressionSection, CorsSection, GrpcWebSection, ResponseCacheSection,
};
use super::idempotency::IdempotencySection;
use super::rate_limit::RateLimitsSection;
use super::upstream::defaults as upstream_defaults;
use super::upstream::{
    CancelBudgetSection, HealthCheckSection, OutlierSection, RetryBudgetSection,
};

pub use super::route_section::{
    CustomPattern, HttpRuleSection, MethodSection, RouteSection, SseSection,
};

/// The whole routes.toml.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutesFile {
    /// The listener.
    #[serde(default)]
    pub server: ServerSection,
    /// Bounds on what a client may send.
    #[serde(default)]
    pub limits: LimitsSection,
    /// JSON mapping options for every route (routes may override).
    #[serde(default)]
    pub json: JsonOptions,
    /// Headers passed between client and upstream.
    #[serde(default)]
    pub headers: HeadersSection,
    /// Where descriptors come from.
    pub proto: Spanned<ProtoSection>,
    /// Named upstream gRPC services.
    #[serde(default)]
    pub upstreams: BTreeMap<Spanned<String>, Spanned<UpstreamSection>>,
    /// Services exposed over HTTP.
    #[serde(default)]
    pub routes: Vec<Spanned<RouteSection>>,
    /// JWT providers and API keys.
    #[serde(default)]
    pub auth: AuthSection,
    /// Cross-origin requests from browsers.
    pub cors: Option<CorsSection>,
    /// Response compression.
    #[serde(default)]
    pub compression: CompressionSection,
    /// gRPC-Web calls on the public listener.
    #[serde(default)]
    pub grpc_web: GrpcWebSection,
    /// The gateway's own response cache.
    #[serde(default)]
    pub response_cache: ResponseCacheSection,
    /// The admin listener (health, cache purge).
    pub admin: Option<AdminSection>,
    /// Exporting request spans over OTLP.
    #[serde(default)]
    pub tracing: TracingSection,
    /// What every rate limit shares (Redis, memory bounds).
    #[serde(default)]
    pub rate_limits: RateLimitsSection,
    /// The OpenAPI document and the `/docs` page.
    #[serde(default)]
    pub openapi: super::openapi::OpenApiSection,
    /// Where `Idempotency-Key` answers are stored.
    #[serde(default)]
    pub idempotency: IdempotencySection,
}

/// `[tracing]`: each request's span exported over OTLP/gRPC; off without
/// an endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingSection {
    /// The collector, `http://host:4317` (plaintext OTLP/gRPC).
    pub otlp_endpoint: Option<Spanned<String>>,
    /// Finished spans held for export; beyond it new spans are dropped.
    pub max_queued_spans: usize,
    /// `service.name` of the exported spans.
    pub service_name: String,
}

impl Default for TracingSection {
    fn default() -> Self {
        TracingSection {
            otlp_endpoint: None,
            max_queued_spans: 4096,
            service_name: "protogate".into(),
        }
    }
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Address the gateway listens on.
    pub listen: SocketAddr,
    /// How long a client may take to send an HTTP/1 request head.
    #[serde(deserialize_with = "duration")]
    pub header_read_timeout: Duration,
    /// How long in-flight calls may finish after a shutdown signal.
    #[serde(deserialize_with = "duration")]
    pub shutdown_grace: Duration,
    /// After a shutdown signal, how long readiness answers 503 while the
    /// listener still accepts, so load balancers stop sending first.
    #[serde(deserialize_with = "duration")]
    pub drain_delay: Duration,
    /// Concurrent streams per client HTTP/2 connection.
    pub http2_max_concurrent_streams: u32,
    /// How long a new connection may take to complete its first request
    /// head, from accept (covers the HTTP/1-vs-HTTP/2 sniff and the h2 preface).
    #[serde(deserialize_with = "duration")]
    pub first_request_timeout: Duration,
    /// How long a connection with no request in flight is kept open.
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    /// How long a response may go without the client accepting any of it
    /// (a closed HTTP/2 window, an unread socket) before its connection is closed.
    #[serde(deserialize_with = "duration")]
    pub send_timeout: Duration,
    /// Response bytes one connection's unfinished responses may hold; a
    /// response beyond it is reset rather than buffered.
    pub max_buffered_response_bytes: usize,
    /// Connections served at once; above it new connections are closed at accept.
    pub max_connections: usize,
    /// Threads serving client connections, each with its own runtime and
    /// upstream connections; unset: one per CPU; 0: one work-stealing
    /// runtime for everything.
    pub worker_threads: Option<usize>,
    /// Number of proxies in front of the gateway whose `X-Forwarded-For` entries are trusted.
    pub trusted_proxy_hops: usize,
    /// Log one line per request at info level.
    pub access_log: bool,
    /// Continue a client's W3C `traceparent` (else every request starts a
    /// fresh trace and the client's `tracestate` is dropped).
    pub trust_traceparent: bool,
    /// HTTP/2 streams a client may reset before the gateway accepted them
    /// (rapid reset); past it the connection gets GOAWAY (ENHANCE_YOUR_CALM).
    pub http2_max_pending_accept_reset_streams: usize,
    /// HTTP/2 streams the gateway may reset for a client's protocol errors
    /// on one connection; past it the connection gets GOAWAY.
    pub http2_max_local_error_reset_streams: usize,
    /// TLS on the public listener.
    pub tls: Option<Spanned<ServerTlsSection>>,
}

/// `[server] tls = { cert = "server.pem", key = "server.key" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsSection {
    /// PEM certificate chain, leaf first; relative to routes.toml.
    pub cert: Spanned<PathBuf>,
    /// PEM private key of the leaf; relative to routes.toml.
    pub key: Spanned<PathBuf>,
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Largest request body, measured after decompression.
    pub max_body_bytes: usize,
    /// Deepest JSON nesting accepted in a body.
    pub max_json_depth: usize,
    /// Longest request path.
    pub max_path_bytes: usize,
    /// Longest query string.
    pub max_query_bytes: usize,
    /// Most request headers.
    pub max_headers: usize,
    /// Largest request head (HTTP/1) or header list (HTTP/2), in bytes.
    pub max_header_bytes: usize,
    /// Requests in the gateway at once; more are answered 503 at once.
    pub max_concurrent_requests: usize,
    /// Largest part of a `multipart/form-data` body; unset, `max_body_bytes`.
    pub max_multipart_part_bytes: Option<Spanned<usize>>,
    /// Most parts in a `multipart/form-data` body.
    pub max_multipart_parts: usize,
}

/// JSON mapping options; every key optional so a route can override one.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonOptions {
    /// Write proto field names (`page_count`) instead of lowerCamelCase.
    pub use_proto_names: Option<bool>,
    /// Write fields that hold their default value.
    pub emit_unpopulated: Option<bool>,
    /// Write enums as numbers instead of names.
    pub enums_as_numbers: Option<bool>,
    /// Accept and drop unknown fields in JSON bodies instead of answering 400.
    pub ignore_unknown_fields: Option<bool>,
    /// Accept and drop unknown query parameters instead of answering 400.
    pub ignore_unknown_query_parameters: Option<bool>,
}

/// `[headers]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadersSection {
    /// Request headers forwarded upstream as gRPC metadata.
    #[serde(default)]
    pub forward_request: Vec<Spanned<String>>,
    /// Upstream response metadata (headers or trailers) returned as HTTP headers.
    #[serde(default)]
    pub forward_response: Vec<Spanned<String>>,
}

/// `[proto]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtoSection {
    /// .proto files to compile, relative to an include path.
    #[serde(default)]
    pub files: Vec<Spanned<String>>,
    /// Include paths, relative to routes.toml.
    #[serde(default)]
    pub include: Vec<Spanned<PathBuf>>,
    /// A binary FileDescriptorSet (protoc --include_imports, buf build).
    pub descriptor_set: Option<Spanned<PathBuf>>,
}

/// `[upstreams.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    /// `http://host:port` endpoints (gRPC over cleartext HTTP/2).
    #[serde(default)]
    pub endpoints: Vec<Spanned<String>>,
    /// `name:port`: every A/AAAA address of the name is an endpoint.
    pub dns: Option<Spanned<String>>,
    /// Re-resolve `dns` no sooner than this, whatever the answer's TTL.
    #[serde(default = "defaults::dns_refresh_min")]
    pub dns_refresh_min: Spanned<DurationValue>,
    /// Re-resolve `dns` no later than this, whatever the answer's TTL.
    #[serde(default = "defaults::dns_refresh_max")]
    pub dns_refresh_max: Spanned<DurationValue>,
    /// Nameservers (`ip` or `ip:port`) to ask instead of /etc/resolv.conf's.
    #[serde(default)]
    pub dns_servers: Vec<Spanned<String>>,
    /// Endpoints kept under an etcd prefix.
    pub etcd: Option<Spanned<EtcdSection>>,
    /// Long-lived HTTP/2 connections per endpoint; unset: one per worker
    /// thread, at least 2.
    #[serde(default)]
    pub connections: Option<Spanned<usize>>,
    /// Default deadline budget of routes on this upstream.
    #[serde(default = "defaults::timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// How long dialling may take.
    #[serde(default = "defaults::connect_timeout", deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// HTTP/2 PING interval, also while idle.
    #[serde(
        default = "defaults::keepalive_interval",
        deserialize_with = "duration"
    )]
    pub keepalive_interval: Duration,
    /// How long a PING may go unanswered before the connection is dropped.
    #[serde(default = "defaults::keepalive_timeout", deserialize_with = "duration")]
    pub keepalive_timeout: Duration,
    /// First delay before redialling a failed connection.
    #[serde(default = "defaults::backoff_initial", deserialize_with = "duration")]
    pub reconnect_backoff: Duration,
    /// Longest delay between redials.
    #[serde(default = "defaults::backoff_max", deserialize_with = "duration")]
    pub reconnect_backoff_max: Duration,
    /// Largest response message accepted from the upstream.
    #[serde(default = "defaults::max_message_bytes")]
    pub max_message_bytes: usize,
    /// Calls in flight at once; more are answered 503 before any work.
    #[serde(default = "upstream_defaults::max_concurrent_calls")]
    pub max_concurrent_calls: Spanned<usize>,
    /// Active health checks (off unless set).
    pub health_check: Option<Spanned<HealthCheckSection>>,
    /// Passive outlier ejection.
    #[serde(default)]
    pub outlier: OutlierSection,
    /// How many retries the upstream may take.
    #[serde(default)]
    pub retry_budget: RetryBudgetSection,
    /// How calls whose client left are cancelled.
    #[serde(default)]
    pub cancel_budget: CancelBudgetSection,
    /// First delay before a retry that may repeat work.
    #[serde(
        default = "upstream_defaults::retry_backoff",
        deserialize_with = "duration"
    )]
    pub retry_backoff: Duration,
    /// Longest delay before such a retry.
    #[serde(
        default = "upstream_defaults::retry_backoff_max",
        deserialize_with = "duration"
    )]
    pub retry_backoff_max: Duration,
    /// No retry starts with less of the deadline left.
    #[serde(
        default = "upstream_defaults::retry_min_remaining",
        deserialize_with = "duration"
    )]
    pub retry_min_remaining: Duration,
    /// TLS to the endpoints (implied by `https://` endpoints).
    pub tls: Option<Spanned<UpstreamTlsSection>>,
}

/// `[upstreams.NAME] tls = { ca, client_cert, client_key, server_name }`;
/// every key optional, paths relative to routes.toml.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsSection {
    /// PEM CA certificates to trust instead of the system's roots.
    pub ca: Option<Spanned<PathBuf>>,
    /// PEM client certificate chain, for upstreams that require mTLS.
    pub client_cert: Option<Spanned<PathBuf>>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<Spanned<PathBuf>>,
    /// The name certificates are checked against instead of the endpoint's host.
    pub server_name: Option<Spanned<String>>,
}

/// `etcd = { endpoints, prefix }` in `[upstreams.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdSection {
    /// etcd client URLs, `http://host:port`.
    #[serde(default)]
    pub endpoints: Vec<Spanned<String>>,
    /// Every key under this prefix holds one endpoint's address.
    pub prefix: Spanned<String>,
    /// Most keys used; more are ignored.
    #[serde(default = "defaults::etcd_max_endpoints")]
    pub max_endpoints: Spanned<usize>,
    /// Longest value accepted as an address.
    #[serde(default = "defaults::etcd_max_value_bytes")]
    pub max_value_bytes: Spanned<usize>,
    /// Largest answer read from etcd (the initial read, one watch message).
    #[serde(default = "defaults::etcd_max_response_bytes")]
    pub max_response_bytes: Spanned<usize>,
    /// How long connecting, the initial read and creating the watch may take.
    #[serde(default = "defaults::timeout", deserialize_with = "duration")]
    pub timeout: Duration,
}

/// A duration that a later check points at (`Spanned<DurationValue>`).
#[derive(Debug, Clone, Copy)]
pub struct DurationValue(pub Duration);

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        duration(d).map(DurationValue)
    }
}

pub(super) mod defaults {
    use std::time::Duration;
    use toml::Spanned;

    pub(super) fn timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub(super) fn connect_timeout() -> Duration {
        Duration::from_secs(1)
    }
    pub(super) fn keepalive_interval() -> Duration {
        Duration::from_secs(20)
    }
    pub(super) fn keepalive_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub(super) fn backoff_initial() -> Duration {
        Duration::from_millis(100)
    }
    pub(super) fn backoff_max() -> Duration {
        Duration::from_secs(5)
    }
    pub(super) fn max_message_bytes() -> usize {
        4 << 20
    }
    /// A failing lookup is retried no faster than this, too.
    pub(super) fn dns_refresh_min() -> Spanned<super::DurationValue> {
        Spanned::new(0..0, super::DurationValue(Duration::from_secs(1)))
    }
    /// Bounds how long a departed instance stays in the set when a zone
    /// uses long TTLs, at one lookup a minute per upstream.
    pub(super) fn dns_refresh_max() -> Spanned<super::DurationValue> {
        Spanned::new(0..0, super::DurationValue(Duration::from_secs(60)))
    }
    pub(super) fn etcd_max_endpoints() -> Spanned<usize> {
        Spanned::new(0..0, 256)
    }
    /// Room for `http://` + a 253-byte DNS name + `:65535`.
    pub(super) fn etcd_max_value_bytes() -> Spanned<usize> {
        Spanned::new(0..0, 512)
    }
    /// Above etcd's own 1.5 MiB request limit, so any one put fits.
    pub(super) fn etcd_max_response_bytes() -> Spanned<usize> {
        Spanned::new(0..0, 4 << 20)
    }
    pub(in crate::config) fn yes() -> bool {
        true
    }
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            header_read_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
            // Longer than a typical readiness probe period (Kubernetes: 10 s
            // by default, probed more often behind most load balancers).
            drain_delay: Duration::from_secs(5),
            http2_max_concurrent_streams: 200,
            first_request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(30),
            max_buffered_response_bytes: 8 << 20,
            max_connections: 10_000,
            worker_threads: None,
            trusted_proxy_hops: 0,
            access_log: true,
            trust_traceparent: true,
            // h2's own default, made explicit.
            http2_max_pending_accept_reset_streams: 20,
            // hyper's own default (RUSTSEC-2024-0003), made explicit.
            http2_max_local_error_reset_streams: 1024,
            tls: None,
        }
    }
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_body_bytes: 1 << 20,
            max_json_depth: 64,
            max_path_bytes: 2048,
            max_query_bytes: 8192,
            max_headers: 100,
            max_header_bytes: 16 << 10,
            max_concurrent_requests: 4096,
            max_multipart_part_bytes: None,
            max_multipart_parts: 64,
        }
    }
}

/// Parses `"1.5s"`, `"250ms"`, `"2m"` (humantime syntax).
pub(super) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    /// Accepts only strings, and says so when given a bare number.
    struct Text;
    impl serde::de::Visitor<'_> for Text {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a duration string such as \"5s\" or \"250ms\"")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
    }
    let text = d.deserialize_str(Text)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {text:?}: {}",
            duration_problem(&text, &e)
        ))
    })
}

/// What is wrong with a duration, in words: humantime's own text gives a
/// byte offset ("expected number at 7").
fn duration_problem(text: &str, error: &humantime::DurationError) -> String {
    use humantime::DurationError;
    let rest = |at: usize| text.get(at..).unwrap_or("").trim();
    match error {
        DurationError::Empty => "it is empty".to_string(),
        DurationError::InvalidCharacter(at) => match rest(*at).chars().next() {
            Some(c) => format!("unexpected character {c:?}"),
            None => "unexpected character".to_string(),
        },
        DurationError::NumberExpected(at) => format!("expected a number before {:?}", rest(*at)),
        DurationError::UnknownUnit { unit, .. } => {
            format!("unknown unit {unit:?} (use ms, s, m, h or d)")
        }
        DurationError::NumberOverflow => "the number is too large".to_string(),
    }
}

pub(super) fn optional_duration<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}
