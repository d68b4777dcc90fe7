//! How each stage's error is answered: HTTP status, google.rpc.Code and the
//! stable ErrorInfo reason. One table per stage, so a new variant fails to
//! compile until it is classified here.

use http::StatusCode;
use tonic::Code;

use crate::auth::AuthError;
use crate::grpc_web::GrpcWebError;
use crate::idempotency::IdempotencyError;
use crate::limits::LimitError;
use crate::route::RouteError;
use crate::stream::StreamError;
use crate::transcode::TranscodeError;
use crate::upstream::TransportError;

/// An error's HTTP status, gRPC code and ErrorInfo reason.
pub(super) struct Class {
    pub status: StatusCode,
    pub code: Code,
    pub reason: &'static str,
}

const fn class(status: StatusCode, code: Code, reason: &'static str) -> Class {
    Class {
        status,
        code,
        reason,
    }
}

const BAD_REQUEST: StatusCode = StatusCode::BAD_REQUEST;
const INVALID: Code = Code::InvalidArgument;

pub(super) fn route(error: &RouteError) -> Class {
    match error {
        RouteError::NotFound { .. } => {
            class(StatusCode::NOT_FOUND, Code::NotFound, "ROUTE_NOT_FOUND")
        }
        RouteError::MethodNotAllowed { .. } => class(
            StatusCode::METHOD_NOT_ALLOWED,
            Code::Unimplemented,
            "METHOD_NOT_ALLOWED",
        ),
        RouteError::InvalidPath(_) => class(BAD_REQUEST, INVALID, "INVALID_PATH"),
    }
}

pub(super) fn limit(error: &LimitError) -> Class {
    match error {
        LimitError::UriTooLong { .. } => class(StatusCode::URI_TOO_LONG, INVALID, "URI_TOO_LONG"),
        LimitError::HeadersTooLarge { .. } => class(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            INVALID,
            "HEADERS_TOO_LARGE",
        ),
        LimitError::BodyTooLarge { .. } => {
            class(StatusCode::PAYLOAD_TOO_LARGE, INVALID, "BODY_TOO_LARGE")
        }
        LimitError::UnreadableBody(_) => class(BAD_REQUEST, INVALID, "UNREADABLE_BODY"),
        LimitError::AmbiguousFraming(_) => class(BAD_REQUEST, INVALID, "INVALID_HEADER"),
        LimitError::Overloaded { .. } => class(
            StatusCode::SERVICE_UNAVAILABLE,
            Code::Unavailable,
            "OVERLOADED",
        ),
        LimitError::BodyTimeout => class(
            StatusCode::GATEWAY_TIMEOUT,
            Code::DeadlineExceeded,
            "DEADLINE_EXHAUSTED",
        ),
    }
}

pub(super) fn transcode(error: &TranscodeError) -> Class {
    match error {
        TranscodeError::MalformedJson { .. } => class(BAD_REQUEST, INVALID, "MALFORMED_JSON"),
        TranscodeError::JsonTooDeep { .. } => class(BAD_REQUEST, INVALID, "JSON_TOO_DEEP"),
        TranscodeError::InvalidField { .. } => class(BAD_REQUEST, INVALID, "INVALID_FIELD"),
        TranscodeError::UnknownField { .. } => class(BAD_REQUEST, INVALID, "UNKNOWN_FIELD"),
        TranscodeError::DuplicateKey { .. } => class(BAD_REQUEST, INVALID, "DUPLICATE_KEY"),
        TranscodeError::MalformedMultipart(_) => class(BAD_REQUEST, INVALID, "MALFORMED_MULTIPART"),
        // 413, as for a body over max_body_bytes: the content is larger than
        // the gateway accepts, however well-formed.
        TranscodeError::PartTooLarge { .. } => {
            class(StatusCode::PAYLOAD_TOO_LARGE, INVALID, "PART_TOO_LARGE")
        }
        TranscodeError::TooManyParts { .. } => {
            class(StatusCode::PAYLOAD_TOO_LARGE, INVALID, "TOO_MANY_PARTS")
        }
        // The query is part of the request target, as the path is.
        TranscodeError::InvalidQuery(_) => class(BAD_REQUEST, INVALID, "INVALID_PATH"),
        TranscodeError::UnsupportedMediaType { .. } => class(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            INVALID,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        // The upstream's fault, as a transport-level bad response is: a gRPC
        // client would see INTERNAL for a message it cannot parse.
        TranscodeError::UndecodableResponse { .. } => class(
            StatusCode::BAD_GATEWAY,
            Code::Internal,
            "UPSTREAM_BAD_RESPONSE",
        ),
        TranscodeError::Render(_) => class(
            StatusCode::INTERNAL_SERVER_ERROR,
            Code::Internal,
            "INTERNAL",
        ),
    }
}

pub(super) fn auth(error: &AuthError) -> Class {
    match error {
        AuthError::Missing(_) => class(
            StatusCode::UNAUTHORIZED,
            Code::Unauthenticated,
            "CREDENTIALS_MISSING",
        ),
        AuthError::Invalid(..) | AuthError::InvalidKey(..) => class(
            StatusCode::UNAUTHORIZED,
            Code::Unauthenticated,
            "CREDENTIALS_INVALID",
        ),
        // RFC 6750 §3.1 `invalid_request`: two credentials in one request.
        AuthError::Malformed(..) => class(
            StatusCode::BAD_REQUEST,
            Code::InvalidArgument,
            "CREDENTIALS_AMBIGUOUS",
        ),
        AuthError::Forbidden { .. } => class(
            StatusCode::FORBIDDEN,
            Code::PermissionDenied,
            "PERMISSION_DENIED",
        ),
        AuthError::KeysUnavailable(_) => class(
            StatusCode::SERVICE_UNAVAILABLE,
            Code::Unavailable,
            "AUTH_KEYS_UNAVAILABLE",
        ),
    }
}

pub(super) fn transport(error: &TransportError) -> Class {
    match error {
        TransportError::Unreachable { .. } => class(
            StatusCode::SERVICE_UNAVAILABLE,
            Code::Unavailable,
            "UPSTREAM_UNREACHABLE",
        ),
        TransportError::ConnectionLost { .. } => class(
            StatusCode::SERVICE_UNAVAILABLE,
            Code::Unavailable,
            "UPSTREAM_CONNECTION_LOST",
        ),
        // A gRPC client would see INTERNAL for a response it cannot parse.
        TransportError::BadResponse { .. } => class(
            StatusCode::BAD_GATEWAY,
            Code::Internal,
            "UPSTREAM_BAD_RESPONSE",
        ),
        // The status itself was readable: the service's code is kept.
        TransportError::BadStatusDetails { code, .. } => class(
            StatusCode::BAD_GATEWAY,
            *code,
            "UPSTREAM_BAD_STATUS_DETAILS",
        ),
        TransportError::MetadataTooLarge { .. } => class(
            StatusCode::BAD_GATEWAY,
            Code::Internal,
            "UPSTREAM_METADATA_TOO_LARGE",
        ),
    }
}

pub(super) fn stream(error: &StreamError) -> Class {
    match error {
        StreamError::NotAcceptable { .. } => {
            class(StatusCode::NOT_ACCEPTABLE, INVALID, "NOT_ACCEPTABLE")
        }
        StreamError::UnsupportedMediaType { .. } => class(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            INVALID,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        StreamError::BadMessage { source, .. } => transcode(source),
        StreamError::MessageTooLarge { .. } => {
            class(StatusCode::PAYLOAD_TOO_LARGE, INVALID, "MESSAGE_TOO_LARGE")
        }
        StreamError::Read(_) => class(BAD_REQUEST, INVALID, "UNREADABLE_BODY"),
        StreamError::BadUpgrade(_) => class(BAD_REQUEST, INVALID, "INVALID_UPGRADE"),
        StreamError::OriginNotAllowed { .. } => class(
            StatusCode::FORBIDDEN,
            Code::PermissionDenied,
            "ORIGIN_NOT_ALLOWED",
        ),
        StreamError::UnexpectedMessage => class(BAD_REQUEST, INVALID, "UNEXPECTED_MESSAGE"),
        StreamError::WrongFrame { .. } => class(BAD_REQUEST, INVALID, "WRONG_FRAME_TYPE"),
        StreamError::WebSocketOnly => class(
            StatusCode::UPGRADE_REQUIRED,
            Code::FailedPrecondition,
            "WEBSOCKET_REQUIRED",
        ),
        StreamError::ShuttingDown => class(
            StatusCode::SERVICE_UNAVAILABLE,
            Code::Unavailable,
            "SHUTTING_DOWN",
        ),
        StreamError::IdleTimeout { .. } => class(
            StatusCode::GATEWAY_TIMEOUT,
            Code::DeadlineExceeded,
            "STREAM_IDLE_TIMEOUT",
        ),
    }
}

/// The HTTP status is what the same mistake would get over REST (it names
/// the class in metrics); the gRPC code is the one a gRPC server gives.
pub(super) fn grpc_web(error: &GrpcWebError) -> Class {
    let code = error.code();
    match error {
        GrpcWebError::UnknownMethod { .. } => {
            class(StatusCode::NOT_FOUND, code, "GRPC_METHOD_NOT_FOUND")
        }
        GrpcWebError::UnsupportedFormat(_) => class(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code,
            "UNSUPPORTED_MESSAGE_FORMAT",
        ),
        GrpcWebError::Compressed => class(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code,
            "UNSUPPORTED_MESSAGE_ENCODING",
        ),
        GrpcWebError::InvalidBase64(_) => class(BAD_REQUEST, code, "INVALID_BASE64"),
        GrpcWebError::MalformedFrame(_) => class(BAD_REQUEST, code, "MALFORMED_FRAME"),
        GrpcWebError::MessageCount { .. } => class(BAD_REQUEST, code, "WRONG_MESSAGE_COUNT"),
    }
}

/// The draft's statuses: 400 for a missing or malformed key, 422 for a key
/// reused with another request, 409 while the first is in flight.
pub(super) fn idempotency(error: &IdempotencyError) -> Class {
    match error {
        IdempotencyError::MissingKey => class(BAD_REQUEST, INVALID, "IDEMPOTENCY_KEY_MISSING"),
        IdempotencyError::MalformedKey(_) => {
            class(BAD_REQUEST, INVALID, "IDEMPOTENCY_KEY_MALFORMED")
        }
        IdempotencyError::KeyReused => class(
            StatusCode::UNPROCESSABLE_ENTITY,
            INVALID,
            "IDEMPOTENCY_KEY_REUSED",
        ),
        // ABORTED: a concurrency conflict the client resolves by retrying later.
        IdempotencyError::InFlight => class(
            StatusCode::CONFLICT,
            Code::Aborted,
            "IDEMPOTENCY_KEY_IN_FLIGHT",
        ),
    }
}
