//! Every failure of a call, grouped by whose fault it is, and the one place
//! that turns a failure into an HTTP answer.
//!
//! The body is always shaped like `google.rpc.Status`:
//! `{"code": <google.rpc.Code>, "message": "...", "details": [...]}`. Errors
//! the gateway raises itself carry a `google.rpc.ErrorInfo` detail with
//! `domain = "protogate"` and a stable `reason`, so a client can tell "the
//! network failed" (transport), "the service said no" (upstream status) and
//! "my request was wrong" (client) apart without parsing messages.

use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};
use tonic::Code;

use crate::auth::AuthError;
use crate::headers::CONTENT_TYPE_JSON;

/// The `domain` of every ErrorInfo the gateway writes.
pub const ERROR_DOMAIN: &str = "protogate";
const ERROR_INFO_TYPE: &str = "type.googleapis.com/google.rpc.ErrorInfo";

/// Every way a call can fail.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The caller's request was wrong; nothing was sent upstream.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The caller is not authenticated or not allowed; nothing was sent upstream.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
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

/// A request the gateway refuses before calling anyone.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No route has this path.
    #[error("no route for {method} {path}")]
    NotFound {
        /// Request method.
        method: Method,
        /// Normalised request path.
        path: String,
    },
    /// The path exists, with other methods.
    #[error("method {method} is not allowed for {path}")]
    MethodNotAllowed {
        /// Request method.
        method: Method,
        /// Normalised request path.
        path: String,
        /// Methods the path does accept.
        allowed: Vec<Method>,
    },
    /// The path cannot be normalised or decoded safely.
    #[error("invalid path: {0}")]
    InvalidPath(String),
    /// The path or query string is longer than the configured limit.
    #[error("{what} is {len} bytes, over the limit of {limit}")]
    UriTooLong {
        /// "path" or "query string".
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The body is not well-formed JSON.
    #[error("malformed JSON at line {line} column {column}: {message}")]
    MalformedJson {
        /// What the parser said.
        message: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
    },
    /// The JSON nests deeper than the configured limit.
    #[error("JSON nesting is deeper than the limit of {limit}")]
    JsonTooDeep {
        /// The limit.
        limit: usize,
    },
    /// A field value is of the wrong type, out of range, or otherwise invalid.
    #[error("invalid value for field '{field}': {reason}")]
    InvalidField {
        /// Dotted field path as the client named it.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A JSON body or the query string names a field the message does not have.
    #[error("unknown field '{field}'{context}")]
    UnknownField {
        /// The name the client sent.
        field: String,
        /// Where it was found, e.g. " in the query string".
        context: &'static str,
    },
    /// The decompressed body is larger than the configured limit.
    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The body's content type is not one this route accepts.
    #[error("unsupported content type {got:?}; this route accepts {expected}")]
    UnsupportedMediaType {
        /// The content type the client sent.
        got: String,
        /// What the route accepts.
        expected: &'static str,
    },
    /// The body could not be read (a framing error, a bad compression stream).
    #[error("could not read the request body: {0}")]
    UnreadableBody(String),
    /// Too many request headers, or too many bytes of them.
    #[error("request {what} is {size}, over the limit of {limit}")]
    HeadersTooLarge {
        /// "header count" or "header bytes".
        what: &'static str,
        /// What the request has.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A header the gateway interprets is malformed.
    #[error("invalid header '{name}': {reason}")]
    InvalidHeader {
        /// Header name.
        name: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// A non-OK gRPC status from the upstream, with its details already rendered
/// as JSON (rendering needs the descriptor pool, which the caller has).
#[derive(Debug, Clone)]
pub struct UpstreamStatus {
    /// The gRPC code.
    pub code: Code,
    /// The service's message.
    pub message: String,
    /// `google.protobuf.Any` details, as proto3 JSON with `@type`.
    pub details: Vec<Value>,
    /// From a `google.rpc.RetryInfo` detail, if any.
    pub retry_after: Option<Duration>,
    /// Allowlisted upstream metadata to return as response headers.
    pub headers: http::HeaderMap,
}

/// The network or the upstream's protocol failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// No connection to the upstream could be used (refused, unreachable, not yet dialled).
    #[error("upstream '{upstream}' is unreachable: {reason}")]
    Unreachable {
        /// Upstream name from routes.toml.
        upstream: String,
        /// Why.
        reason: String,
    },
    /// The connection failed during the call (reset, GOAWAY, closed).
    #[error("connection to upstream '{upstream}' failed during the call: {reason}")]
    ConnectionLost {
        /// Upstream name from routes.toml.
        upstream: String,
        /// Why.
        reason: String,
    },
    /// The upstream answered something that is not a valid gRPC response.
    #[error("upstream '{upstream}' sent an invalid response: {reason}")]
    BadResponse {
        /// Upstream name from routes.toml.
        upstream: String,
        /// What was wrong with it.
        reason: String,
    },
}

// === impl GatewayError ===

impl GatewayError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::Client(e) => e.status(),
            GatewayError::Auth(AuthError::Forbidden { .. }) => StatusCode::FORBIDDEN,
            GatewayError::Auth(AuthError::KeysUnavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::Auth(_) => StatusCode::UNAUTHORIZED,
            GatewayError::Upstream(s) => http_status_for(s.code),
            GatewayError::Transport(TransportError::BadResponse { .. }) => StatusCode::BAD_GATEWAY,
            GatewayError::Transport(_) => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::DeadlineExceeded { .. } => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The google.rpc.Code written in the body.
    pub fn code(&self) -> Code {
        match self {
            GatewayError::Client(e) => e.code(),
            GatewayError::Auth(AuthError::Forbidden { .. }) => Code::PermissionDenied,
            GatewayError::Auth(AuthError::KeysUnavailable(_)) => Code::Unavailable,
            GatewayError::Auth(_) => Code::Unauthenticated,
            GatewayError::Upstream(s) => s.code,
            // A gRPC client would see INTERNAL for a response it cannot parse.
            GatewayError::Transport(TransportError::BadResponse { .. }) => Code::Internal,
            GatewayError::Transport(_) => Code::Unavailable,
            GatewayError::DeadlineExceeded { .. } => Code::DeadlineExceeded,
            GatewayError::Internal(_) => Code::Internal,
        }
    }

    /// The stable ErrorInfo reason for errors the gateway raises itself.
    pub fn reason(&self) -> Option<&'static str> {
        Some(match self {
            GatewayError::Client(e) => e.reason(),
            GatewayError::Auth(AuthError::Missing) => "CREDENTIALS_MISSING",
            GatewayError::Auth(AuthError::Invalid(_)) => "CREDENTIALS_INVALID",
            GatewayError::Auth(AuthError::Forbidden { .. }) => "PERMISSION_DENIED",
            GatewayError::Auth(AuthError::KeysUnavailable(_)) => "AUTH_KEYS_UNAVAILABLE",
            GatewayError::Upstream(_) => return None,
            GatewayError::Transport(TransportError::Unreachable { .. }) => "UPSTREAM_UNREACHABLE",
            GatewayError::Transport(TransportError::ConnectionLost { .. }) => {
                "UPSTREAM_CONNECTION_LOST"
            }
            GatewayError::Transport(TransportError::BadResponse { .. }) => "UPSTREAM_BAD_RESPONSE",
            GatewayError::DeadlineExceeded { .. } => "DEADLINE_EXHAUSTED",
            GatewayError::Internal(_) => "INTERNAL",
        })
    }

    /// The `google.rpc.Status` JSON body.
    pub fn body(&self) -> Value {
        match self {
            GatewayError::Upstream(s) => json!({
                "code": s.code as i32,
                "message": s.message,
                "details": s.details,
            }),
            // Internal details stay in the log.
            GatewayError::Internal(_) => status_json(Code::Internal, "internal error", "INTERNAL"),
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
                };
                status_json(self.code(), message, self.reason().unwrap_or("UNKNOWN"))
            }
            other => status_json(
                other.code(),
                &other.to_string(),
                other.reason().unwrap_or("UNKNOWN"),
            ),
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
        if let GatewayError::Upstream(status) = &self {
            for (name, value) in &status.headers {
                if name == header::CACHE_CONTROL {
                    // A route's negative-cache policy replaces the default no-store.
                    headers.insert(name.clone(), value.clone());
                } else {
                    headers.append(name.clone(), value.clone());
                }
            }
        }
        if let GatewayError::Auth(auth) = &self
            && let Some(challenge) = www_authenticate(auth)
        {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        match &self {
            GatewayError::Client(ClientError::MethodNotAllowed { allowed, .. }) => {
                let allow = allowed
                    .iter()
                    .map(Method::as_str)
                    .collect::<Vec<_>>()
                    .join(", ");
                if let Ok(value) = HeaderValue::from_str(&allow) {
                    headers.insert(header::ALLOW, value);
                }
            }
            GatewayError::Upstream(upstream) if upstream.retry_after.is_some() => {
                let delay = upstream.retry_after.unwrap_or_default();
                // Retry-After takes whole seconds; round up so clients never retry early.
                let secs = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
                headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
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

/// The RFC 6750 challenge for an auth failure.
fn www_authenticate(error: &AuthError) -> Option<HeaderValue> {
    // RFC 6750 §3 allows only %x20-21 / %x23-5B / %x5D-7E in these values:
    // quotes and backslashes become `'`, anything else outside printable
    // ASCII (from a token's kid, say) `?`; long reasons are cut short.
    let quote = |text: &str| {
        text.chars()
            .take(200)
            .map(|c| match c {
                '"' | '\\' => '\'',
                ' '..='~' => c,
                _ => '?',
            })
            .collect::<String>()
    };
    let value = match error {
        AuthError::Missing => {
            "Bearer realm=\"protogate\", error=\"invalid_token\", error_description=\"no credentials\"".to_string()
        }
        AuthError::Invalid(reason) => format!(
            "Bearer realm=\"protogate\", error=\"invalid_token\", error_description=\"{}\"",
            quote(reason)
        ),
        // A route that requires only claim values names no scope.
        AuthError::Forbidden { reason, scopes } if scopes.is_empty() => format!(
            "Bearer realm=\"protogate\", error=\"insufficient_scope\", error_description=\"{}\"",
            quote(reason)
        ),
        AuthError::Forbidden { reason, scopes } => format!(
            "Bearer realm=\"protogate\", error=\"insufficient_scope\", error_description=\"{}\", scope=\"{}\"",
            quote(reason),
            quote(scopes)
        ),
        AuthError::KeysUnavailable(_) => return None,
    };
    HeaderValue::from_str(&value).ok()
}

/// gRPC code → HTTP status, per google.rpc.Code's documented mapping.
pub fn http_status_for(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        // 499 "Client Closed Request" (nginx): the caller gave up, not the server.
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        // 400, not 412: FAILED_PRECONDITION is about the system's state, not
        // about HTTP conditional headers (If-Match), which 412 is reserved for.
        Code::FailedPrecondition => StatusCode::BAD_REQUEST,
        // 409: a concurrency conflict the client may retry at a higher level.
        Code::Aborted => StatusCode::CONFLICT,
        Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
    }
}

// === impl ClientError ===

impl ClientError {
    fn status(&self) -> StatusCode {
        match self {
            ClientError::NotFound { .. } => StatusCode::NOT_FOUND,
            ClientError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ClientError::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            ClientError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ClientError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ClientError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ClientError::InvalidPath(_)
            | ClientError::MalformedJson { .. }
            | ClientError::JsonTooDeep { .. }
            | ClientError::InvalidField { .. }
            | ClientError::UnknownField { .. }
            | ClientError::UnreadableBody(_)
            | ClientError::InvalidHeader { .. } => StatusCode::BAD_REQUEST,
        }
    }

    fn code(&self) -> Code {
        match self {
            ClientError::NotFound { .. } => Code::NotFound,
            ClientError::MethodNotAllowed { .. } => Code::Unimplemented,
            _ => Code::InvalidArgument,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            ClientError::NotFound { .. } => "ROUTE_NOT_FOUND",
            ClientError::MethodNotAllowed { .. } => "METHOD_NOT_ALLOWED",
            ClientError::InvalidPath(_) => "INVALID_PATH",
            ClientError::UriTooLong { .. } => "URI_TOO_LONG",
            ClientError::MalformedJson { .. } => "MALFORMED_JSON",
            ClientError::JsonTooDeep { .. } => "JSON_TOO_DEEP",
            ClientError::InvalidField { .. } => "INVALID_FIELD",
            ClientError::UnknownField { .. } => "UNKNOWN_FIELD",
            ClientError::BodyTooLarge { .. } => "BODY_TOO_LARGE",
            ClientError::UnsupportedMediaType { .. } => "UNSUPPORTED_MEDIA_TYPE",
            ClientError::UnreadableBody(_) => "UNREADABLE_BODY",
            ClientError::HeadersTooLarge { .. } => "HEADERS_TOO_LARGE",
            ClientError::InvalidHeader { .. } => "INVALID_HEADER",
        }
    }
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
