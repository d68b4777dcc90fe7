//! Every failure of a call, grouped by the stage that raised it, and the
//! one place that turns a failure into an HTTP answer. Each stage has its
//! own error type with no HTTP in it; [`classify`] gives each variant its
//! status, code and reason.
//!
//! The body is always shaped like `google.rpc.Status`:
//! `{"code": <google.rpc.Code>, "message": "...", "details": [...]}`. Errors
//! the gateway raises itself carry a `google.rpc.ErrorInfo` detail with
//! `domain = "protogate"` and a stable `reason`, so a client can tell "the
//! network failed" (transport), "the service said no" (upstream status) and
//! "my request was wrong" (client) apart without parsing messages.

mod challenge;
mod classify;
mod grpc_http;
mod grpc_web;

use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};
use tonic::Code;

pub use grpc_http::http_status_for;

use crate::auth::AuthError;
use crate::grpc_web::GrpcWebError;
use crate::headers::CONTENT_TYPE_JSON;
use crate::idempotency::IdempotencyError;
use crate::limits::LimitError;
use crate::ratelimit::RateLimitError;
use crate::response_cache::FetchFailure;
use crate::route::RouteError;
use crate::stream::StreamError;
use crate::transcode::{TranscodeError, UpstreamStatus};
use crate::upstream::TransportError;
use crate::upstream::deadline::InvalidTimeout;
use classify::Class;

/// The `domain` of every ErrorInfo the gateway writes.
pub const ERROR_DOMAIN: &str = "protogate";
const ERROR_INFO_TYPE: &str = "type.googleapis.com/google.rpc.ErrorInfo";
const BAD_REQUEST_TYPE: &str = "type.googleapis.com/google.rpc.BadRequest";

/// Every way a call can fail, by the stage that failed.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No binding matches the request; nothing was sent upstream.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// The request is over a limit, or its body could not be read.
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// The client's `grpc-timeout` is malformed.
    #[error("invalid header 'grpc-timeout': {0}")]
    Timeout(#[from] InvalidTimeout),
    /// The caller is not authenticated or not allowed; nothing was sent upstream.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The caller is over one of the route's rate limits; nothing was sent upstream.
    #[error(transparent)]
    RateLimit(#[from] RateLimitError),
    /// The request could not be transcoded (the caller's fault), or the
    /// answer could not be (the upstream's, or a gateway bug).
    #[error(transparent)]
    Transcode(#[from] TranscodeError),
    /// An `Idempotency-Key` is missing, malformed, reused for another
    /// request, or its first request is still in flight.
    #[error(transparent)]
    Idempotency(#[from] IdempotencyError),
    /// A streaming request was refused, or its stream failed.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// A gRPC-Web request was refused before any upstream saw it.
    #[error(transparent)]
    GrpcWeb(#[from] GrpcWebError),
    /// The upstream service answered with a non-OK gRPC status.
    #[error("upstream status {}: {}", .0.code as i32, .0.message)]
    Upstream(Box<UpstreamStatus>),
    /// The network or the upstream's protocol failed; the service never answered.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The request's deadline ran out before the upstream answered.
    #[error("deadline of {budget:?} exceeded")]
    DeadlineExceeded {
        /// The whole budget the request had.
        budget: Duration,
    },
    /// A bug or an impossible state in the gateway; details are logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

// === impl GatewayError ===

impl GatewayError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::Upstream(s) => http_status_for(s.code),
            other => other.class().status,
        }
    }

    /// The google.rpc.Code written in the body.
    pub fn code(&self) -> Code {
        match self {
            GatewayError::Upstream(s) => s.code,
            other => other.class().code,
        }
    }

    /// The stable ErrorInfo reason for errors the gateway raises itself.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            GatewayError::Upstream(_) => None,
            other => Some(other.class().reason),
        }
    }

    fn class(&self) -> Class {
        let invalid = |reason| Class {
            status: StatusCode::BAD_REQUEST,
            code: Code::InvalidArgument,
            reason,
        };
        match self {
            GatewayError::Route(e) => classify::route(e),
            GatewayError::Limit(e) => classify::limit(e),
            GatewayError::Timeout(_) => invalid("INVALID_HEADER"),
            GatewayError::Auth(e) => classify::auth(e),
            GatewayError::RateLimit(_) => Class {
                status: StatusCode::TOO_MANY_REQUESTS,
                code: Code::ResourceExhausted,
                reason: "RATE_LIMITED",
            },
            GatewayError::Transcode(e) => classify::transcode(e),
            GatewayError::Stream(e) => classify::stream(e),
            GatewayError::GrpcWeb(e) => classify::grpc_web(e),
            GatewayError::Idempotency(e) => classify::idempotency(e),
            GatewayError::Transport(e) => classify::transport(e),
            GatewayError::DeadlineExceeded { .. } => Class {
                status: StatusCode::GATEWAY_TIMEOUT,
                code: Code::DeadlineExceeded,
                reason: "DEADLINE_EXHAUSTED",
            },
            GatewayError::Upstream(_) | GatewayError::Internal(_) => Class {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                code: Code::Internal,
                reason: "INTERNAL",
            },
        }
    }

    /// The `google.rpc.Status` JSON body.
    pub fn body(&self) -> Value {
        let reason = self.reason().unwrap_or("UNKNOWN");
        match self {
            GatewayError::Upstream(s) => json!({
                "code": s.code as i32,
                "message": s.message,
                "details": s.details,
            }),
            // Internal details stay in the log.
            GatewayError::Internal(_) | GatewayError::Transcode(TranscodeError::Render(_)) => {
                status_json(Code::Internal, "internal error", reason)
            }
            // So do the upstream's: its address, the OS error, what exactly
            // it sent. The log line carries them under the same request id.
            GatewayError::Transport(t) => {
                let message = match t {
                    TransportError::Unreachable { .. } => "the upstream service is unreachable",
                    TransportError::ConnectionLost { .. } => {
                        "the connection to the upstream service failed during the call"
                    }
                    TransportError::BadResponse { .. } => {
                        "the upstream service sent an invalid response"
                    }
                    // The service's own message, as for any upstream status;
                    // what was wrong with its details stays in the log.
                    TransportError::BadStatusDetails { message, .. } => message.as_str(),
                    TransportError::MetadataTooLarge { .. } => {
                        "the upstream service sent more metadata than the gateway accepts"
                    }
                };
                status_json(self.code(), message, reason)
            }
            GatewayError::RateLimit(limited) => rate_limited(limited),
            GatewayError::Transcode(TranscodeError::UndecodableResponse { .. }) => status_json(
                self.code(),
                "the upstream service sent an invalid response",
                reason,
            ),
            other => {
                let mut body = status_json(other.code(), &other.to_string(), reason);
                if let (Some(violation), Some(details)) =
                    (other.field_violation(), body["details"].as_array_mut())
                {
                    details.push(violation);
                }
                body
            }
        }
    }

    /// A `google.rpc.BadRequest` detail naming the field a 400 is about
    /// (as the client named it: JSON names, dotted), so a client can show
    /// the error next to its input.
    fn field_violation(&self) -> Option<Value> {
        let error = match self {
            GatewayError::Transcode(e) => e,
            GatewayError::Stream(StreamError::BadMessage { source, .. }) => source,
            _ => return None,
        };
        let field = match error {
            TranscodeError::InvalidField { field, .. }
            | TranscodeError::UnknownField { field, .. } => field.clone(),
            TranscodeError::DuplicateKey { field, .. } => field.clone(),
            TranscodeError::PartTooLarge { part, .. } => part.clone(),
            _ => return None,
        };
        let description = match error {
            TranscodeError::InvalidField { reason, .. } => reason.clone(),
            other => other.to_string(),
        };
        Some(json!({
            "@type": BAD_REQUEST_TYPE,
            "fieldViolations": [{"field": field, "description": description}],
        }))
    }
}

impl FetchFailure for GatewayError {
    fn allows_stale_answer(&self) -> bool {
        match self {
            GatewayError::Transport(_) | GatewayError::DeadlineExceeded { .. } => true,
            GatewayError::Upstream(status) => http_status_for(status.code).is_server_error(),
            _ => false,
        }
    }
}

fn status_json(code: Code, message: &str, reason: &str) -> Value {
    json!({
        "code": code as i32,
        "message": message,
        "details": [{"@type": ERROR_INFO_TYPE, "reason": reason, "domain": ERROR_DOMAIN}],
    })
}

/// RESOURCE_EXHAUSTED with what google.rpc says a quota refusal carries:
/// when to retry (RetryInfo) and which quota, whose (QuotaFailure).
fn rate_limited(limited: &RateLimitError) -> Value {
    let delay = limited.retry_after;
    json!({
        "code": Code::ResourceExhausted as i32,
        "message": limited.to_string(),
        "details": [
            {
                "@type": ERROR_INFO_TYPE,
                "reason": "RATE_LIMITED",
                "domain": ERROR_DOMAIN,
                "metadata": {"limit": limited.limit, "key": limited.key},
            },
            {
                "@type": RETRY_INFO_TYPE,
                // proto3 JSON of a Duration: seconds, with 3 decimals here.
                "retryDelay": format!("{}.{:03}s", delay.as_secs(), delay.subsec_millis()),
            },
            {
                "@type": QUOTA_FAILURE_TYPE,
                "violations": [{
                    "subject": limited.subject,
                    "description": format!("{} (limit '{}')", limited.quota, limited.limit),
                }],
            },
        ],
    })
}

const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";
const QUOTA_FAILURE_TYPE: &str = "type.googleapis.com/google.rpc.QuotaFailure";

/// Retry-After takes whole seconds; rounded up so clients never retry early.
fn retry_after(delay: Duration) -> HeaderValue {
    HeaderValue::from(delay.as_secs() + u64::from(delay.subsec_nanos() > 0))
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::to_vec(&self.body()).unwrap_or_default();
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, CONTENT_TYPE_JSON);
        // An error is never cached: an attacker must not get one stored in a CDN.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match &self {
            GatewayError::Upstream(status) => {
                for (name, value) in &status.headers {
                    if name == header::CACHE_CONTROL {
                        // A route's negative-cache policy replaces the default no-store.
                        headers.insert(name.clone(), value.clone());
                    } else {
                        headers.append(name.clone(), value.clone());
                    }
                }
                if let Some(delay) = status.retry_after {
                    headers.insert(header::RETRY_AFTER, retry_after(delay));
                }
            }
            GatewayError::Auth(auth) => {
                for challenge in challenge::www_authenticate(auth) {
                    headers.append(header::WWW_AUTHENTICATE, challenge);
                }
            }
            GatewayError::RateLimit(limited) => {
                headers.insert(header::RETRY_AFTER, retry_after(limited.retry_after));
            }
            GatewayError::Limit(LimitError::Overloaded { .. }) => {
                // Shedding lasts as long as the burst: a second is plenty.
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            GatewayError::Limit(LimitError::AmbiguousFraming(_)) => {
                // A proxy in front may have framed this request otherwise:
                // nothing after it on this connection can be trusted.
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            GatewayError::Route(RouteError::MethodNotAllowed { allowed, .. }) => {
                let allow = allowed
                    .iter()
                    .map(Method::as_str)
                    .collect::<Vec<_>>()
                    .join(", ");
                if let Ok(value) = HeaderValue::from_str(&allow) {
                    headers.insert(header::ALLOW, value);
                }
            }
            _ => {}
        }
        response
    }
}

/// Gives a JSON body to an error answered by an edge layer (e.g. request
/// decompression answering 415 to an unknown Content-Encoding), which would
/// otherwise go out bodiless.
pub fn edge_layer_error(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || response.headers().contains_key(header::CONTENT_TYPE)
    {
        return response;
    }
    let (code, reason, message) = match status {
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            Code::InvalidArgument,
            "UNSUPPORTED_CONTENT_ENCODING",
            "unsupported Content-Encoding; send gzip, br, zstd or identity",
        ),
        s if s.is_client_error() => (
            Code::InvalidArgument,
            "BAD_REQUEST",
            "the request was rejected",
        ),
        _ => (Code::Internal, "INTERNAL", "internal error"),
    };
    let (mut parts, _) = response.into_parts();
    parts
        .headers
        .insert(header::CONTENT_TYPE, CONTENT_TYPE_JSON);
    parts
        .headers
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = serde_json::to_vec(&status_json(code, message, reason)).unwrap_or_default();
    Response::from_parts(parts, Body::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_precondition_is_400_not_412() {
        assert_eq!(
            http_status_for(Code::FailedPrecondition),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn cancelled_is_499() {
        assert_eq!(http_status_for(Code::Cancelled).as_u16(), 499);
    }

    #[test]
    fn transport_errors_are_not_business_errors() {
        let unreachable = GatewayError::Transport(TransportError::Unreachable {
            upstream: "u".into(),
            reason: "refused".into(),
        });
        assert_eq!(unreachable.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            unreachable.body()["details"][0]["reason"],
            "UPSTREAM_UNREACHABLE"
        );
        let garbage = GatewayError::Transport(TransportError::BadResponse {
            upstream: "u".into(),
            reason: "bad frame".into(),
        });
        assert_eq!(garbage.status(), StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn upstream_internals_are_not_sent() {
        let unreachable = GatewayError::Transport(TransportError::Unreachable {
            upstream: "payments".into(),
            reason: "connect to 10.1.2.3:50051: Connection refused (os error 111)".into(),
        });
        let body = unreachable.body().to_string();
        assert!(
            !body.contains("10.1.2.3") && !body.contains("os error"),
            "{body}"
        );
        assert!(
            unreachable.to_string().contains("10.1.2.3"),
            "the log keeps it"
        );
    }

    #[test]
    fn internal_details_are_not_sent() {
        let err = GatewayError::Internal("secret stack".into());
        assert!(!err.body().to_string().contains("secret"));
    }
}
