//! A failure answered the gRPC-Web way: HTTP 200 and a trailers-only
//! answer (the status in the headers, no body), which every gRPC-Web
//! client reads. The gRPC code follows gRPC's own conventions where they
//! differ from the REST mapping: an unknown method is UNIMPLEMENTED and a
//! request over a size limit RESOURCE_EXHAUSTED. The gateway's ErrorInfo
//! (reason, domain) goes in `grpc-status-details-bin`, as the REST body's
//! `details` carry it.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use http::{HeaderValue, StatusCode, header};
use prost::Message as _;
use tonic::Code;

use super::{ERROR_DOMAIN, ERROR_INFO_TYPE, GatewayError};
use crate::grpc_web::Trailers;
use crate::headers::GRPC_STATUS_DETAILS;
use crate::limits::LimitError;
use crate::upstream::status::RpcStatus;

/// Response headers of the HTTP answer that still mean something in a
/// trailers-only one.
const KEPT: [header::HeaderName; 4] = [
    header::WWW_AUTHENTICATE,
    header::RETRY_AFTER,
    header::CACHE_CONTROL,
    header::CONNECTION,
];

/// google.rpc.ErrorInfo.
#[derive(Clone, PartialEq, prost::Message)]
struct ErrorInfo {
    #[prost(string, tag = "1")]
    reason: String,
    #[prost(string, tag = "2")]
    domain: String,
}

impl GatewayError {
    /// The gRPC code a gRPC-Web client gets for this failure.
    pub fn grpc_web_code(&self) -> Code {
        match self {
            GatewayError::GrpcWeb(e) => e.code(),
            GatewayError::Limit(
                LimitError::BodyTooLarge { .. } | LimitError::HeadersTooLarge { .. },
            ) => Code::ResourceExhausted,
            other => other.code(),
        }
    }

    /// The status a gRPC-Web client gets for this failure: code, message
    /// and the gateway's ErrorInfo in `grpc-status-details-bin`.
    pub fn grpc_web_trailers(&self) -> Trailers {
        let code = self.grpc_web_code();
        let body = self.body();
        let message = body["message"].as_str().unwrap_or_default();
        let mut trailers = Trailers::status(code, message);
        if let Some(reason) = self.reason() {
            let info = ErrorInfo {
                reason: reason.to_string(),
                domain: ERROR_DOMAIN.to_string(),
            };
            let status = RpcStatus {
                code: code as i32,
                message: message.to_string(),
                details: vec![prost_types::Any {
                    type_url: ERROR_INFO_TYPE.to_string(),
                    value: info.encode_to_vec(),
                }],
            };
            let details = STANDARD_NO_PAD.encode(status.encode_to_vec());
            if let Ok(value) = HeaderValue::from_str(&details) {
                trailers.0.insert(GRPC_STATUS_DETAILS, value);
            }
        }
        trailers
    }

    /// The trailers-only gRPC-Web answer, in `content_type`.
    pub fn into_grpc_web(self, content_type: HeaderValue) -> Response {
        let trailers = self.grpc_web_trailers();
        let http = self.into_response();
        let mut answer = Response::new(Body::empty());
        *answer.status_mut() = StatusCode::OK;
        let headers = answer.headers_mut();
        for name in KEPT {
            for value in http.headers().get_all(&name) {
                headers.append(name.clone(), value.clone());
            }
        }
        headers.insert(header::CONTENT_TYPE, content_type);
        headers.extend(trailers.0);
        answer
    }
}
