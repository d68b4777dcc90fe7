//! Every header name, metadata key and content type the gateway reads or
//! writes, named once.

use http::HeaderName;
use http::header::HeaderValue;

/// Client and upstream deadline header (gRPC over HTTP/2 spec).
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
/// The number of earlier attempts of a retried call (gRPC retry design, A6).
pub const GRPC_PREVIOUS_RPC_ATTEMPTS: HeaderName =
    HeaderName::from_static("grpc-previous-rpc-attempts");
/// gRPC status code, in trailers or a trailers-only response.
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// gRPC status message (percent-encoded).
pub const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// Serialized google.rpc.Status with details.
pub const GRPC_STATUS_DETAILS: HeaderName = HeaderName::from_static("grpc-status-details-bin");
/// Message compression the upstream used.
pub const GRPC_ENCODING: HeaderName = HeaderName::from_static("grpc-encoding");
/// Message compressions the gateway accepts from the upstream.
pub const GRPC_ACCEPT_ENCODING: HeaderName = HeaderName::from_static("grpc-accept-encoding");
/// Sent by gRPC-Web clients to mark their calls (PROTOCOL-WEB.md).
pub const X_GRPC_WEB: HeaderName = HeaderName::from_static("x-grpc-web");
/// A gRPC-Web client's own user agent (browsers own `user-agent`).
pub const X_USER_AGENT: HeaderName = HeaderName::from_static("x-user-agent");
/// Required on gRPC requests (detects proxies that drop trailers).
pub const TE: HeaderName = HeaderName::from_static("te");

/// Correlates one call across the gateway, the upstream and the logs.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// W3C trace context.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// W3C trace context, vendor part.
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
/// Client address chain, as the gateway computed it.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// Scheme the client used to reach the gateway.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// Host the client asked for.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The quota policies of a rate-limited route (IETF
/// draft-ietf-httpapi-ratelimit-headers).
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// What is left of the tightest of those quotas for this caller.
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Where time went, for browser devtools (W3C Server Timing).
pub const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");
/// A client's key for a write it may retry (IETF httpapi idempotency-key draft).
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// `true` on an answer replayed from the idempotency store.
pub const IDEMPOTENCY_REPLAYED: HeaderName = HeaderName::from_static("idempotency-replayed");

/// `application/grpc`, the only content type sent upstream.
pub const CONTENT_TYPE_GRPC: HeaderValue = HeaderValue::from_static("application/grpc");
/// Content type of every JSON answer.
pub const CONTENT_TYPE_JSON: HeaderValue = HeaderValue::from_static("application/json");
/// Media type of raw bytes whose type nobody declared.
pub const OCTET_STREAM: &str = "application/octet-stream";
/// [`OCTET_STREAM`] as a header value.
pub const CONTENT_TYPE_OCTET_STREAM: HeaderValue = HeaderValue::from_static(OCTET_STREAM);
/// `trailers`, the only value of `te` gRPC allows.
pub const TE_TRAILERS: HeaderValue = HeaderValue::from_static("trailers");
/// Message encodings the gateway decodes from upstreams.
pub const IDENTITY: HeaderValue = HeaderValue::from_static("identity");

/// Hop-by-hop headers (RFC 9110 §7.6.1): meaningful for one connection only,
/// never forwarded and never accepted in a forwarding allowlist.
pub const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether a header may be named in a forwarding allowlist: not hop-by-hop,
/// not a gRPC protocol header, and not one the gateway sets itself. The
/// `Access-Control-*` headers are the `[cors]` policy's alone: one from the
/// upstream could grant an origin the policy refuses.
pub fn is_forwardable(name: &str) -> bool {
    let gateway_owned = [
        "host",
        "content-length",
        "content-type",
        "content-encoding",
        "x-request-id",
        "traceparent",
        "tracestate",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        ":authority",
    ];
    !(name.starts_with("grpc-")
        || name.starts_with("access-control-")
        || name.starts_with(':')
        || HOP_BY_HOP.contains(&name)
        || gateway_owned.contains(&name))
}

/// `value`, marked to go out as a never-indexed literal in HTTP/2 (RFC 7541
/// §6.2.3; h2 does so for values marked sensitive). For values new on every
/// message (a request id, a trace parent, a duration, a deadline): indexed,
/// each message would insert them into the connection's HPACK table only to
/// evict the entries every message repeats (content type, cache policy,
/// authority), which would then go out as literals again too. HTTP/1.1
/// ignores the mark.
pub fn per_message(mut value: HeaderValue) -> HeaderValue {
    value.set_sensitive(true);
    value
}
