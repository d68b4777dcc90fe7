//! The gRPC-Web wire protocol (grpc/grpc PROTOCOL-WEB.md), apart from any
//! call: which requests are gRPC-Web, how their body (binary, or base64 in
//! `-text` mode) is checked and turned into the gRPC frames sent upstream,
//! and how messages and the trailers are written back into the answer's
//! body. Messages are never decoded: the gateway passes them through.

pub mod request;
pub mod response;

use http::{HeaderMap, HeaderValue, Method, header};
use tonic::Code;

pub use request::{Frames, frames};
pub use response::{Trailers, message_chunk, trailer_chunk};

/// How the body is carried on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/grpc-web[+proto]`: frames as bytes.
    Binary,
    /// `application/grpc-web-text[+proto]`: frames in base64, for clients
    /// that cannot read a binary body as it streams.
    Text,
}

/// A gRPC-Web request's content type: its encoding, and the value the
/// answer carries (the request's own, so a client reads what it sent).
#[derive(Debug, Clone)]
pub struct WebContentType {
    /// Binary or base64.
    pub encoding: Encoding,
    /// The answer's `content-type`.
    pub answer: HeaderValue,
}

/// Why a gRPC-Web request was refused before any upstream saw it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrpcWebError {
    /// `/package.Service/Method` names no method the gateway exposes.
    #[error("unknown method {path}: no exposed method has this name")]
    UnknownMethod {
        /// The request path.
        path: String,
    },
    /// A message format other than protobuf (`+json`, say).
    #[error("content type '{0}' is not supported; send application/grpc-web(-text)[+proto]")]
    UnsupportedFormat(String),
    /// The `-text` body is not base64.
    #[error("the request body is not valid base64: {0}")]
    InvalidBase64(String),
    /// The body is not a sequence of gRPC frames.
    #[error("malformed gRPC-Web request: {0}")]
    MalformedFrame(String),
    /// A compressed message: the gateway accepts none.
    #[error("compressed request messages are not accepted (no grpc-accept-encoding)")]
    Compressed,
    /// Not as many messages as the method takes.
    #[error("{method_kind} method takes exactly one request message, the request carried {count}")]
    MessageCount {
        /// "a unary" or "a server-streaming".
        method_kind: &'static str,
        /// How many messages it carried.
        count: usize,
    },
}

impl GrpcWebError {
    /// The gRPC code, as a gRPC server's library would answer the same
    /// bytes (grpc/grpc doc/statuscodes.md): malformed input that the
    /// protocol layer rejects is INTERNAL, an unsupported encoding or
    /// method UNIMPLEMENTED.
    pub fn code(&self) -> Code {
        match self {
            GrpcWebError::UnknownMethod { .. }
            | GrpcWebError::UnsupportedFormat(_)
            | GrpcWebError::Compressed => Code::Unimplemented,
            GrpcWebError::InvalidBase64(_)
            | GrpcWebError::MalformedFrame(_)
            | GrpcWebError::MessageCount { .. } => Code::Internal,
        }
    }
}

/// The gRPC-Web content type of a request, if it is one: a POST whose
/// `content-type` is `application/grpc-web` or `application/grpc-web-text`
/// (either with `+proto`). `Some(Err)` for another message format.
pub fn requested(
    method: &Method,
    headers: &HeaderMap,
) -> Option<Result<WebContentType, GrpcWebError>> {
    if method != Method::POST {
        return None;
    }
    let value = headers.get(header::CONTENT_TYPE)?;
    let text = value.to_str().ok()?;
    let media = text.split(';').next().unwrap_or_default().trim();
    let lower = media.to_ascii_lowercase();
    let rest = lower.strip_prefix("application/grpc-web")?;
    let (encoding, format) = match rest.strip_prefix("-text") {
        Some(format) => (Encoding::Text, format),
        None => (Encoding::Binary, rest),
    };
    let answer = match (encoding, format) {
        (Encoding::Binary, "") => HeaderValue::from_static("application/grpc-web"),
        (Encoding::Binary, "+proto") => HeaderValue::from_static("application/grpc-web+proto"),
        (Encoding::Text, "") => HeaderValue::from_static("application/grpc-web-text"),
        (Encoding::Text, "+proto") => HeaderValue::from_static("application/grpc-web-text+proto"),
        // `application/grpc-webfoo` is some other media type.
        (_, format) if !format.starts_with('+') => return None,
        _ => return Some(Err(GrpcWebError::UnsupportedFormat(media.to_string()))),
    };
    Some(Ok(WebContentType { encoding, answer }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(value: &'static str) -> Option<Result<WebContentType, GrpcWebError>> {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
        requested(&Method::POST, &headers)
    }

    #[test]
    fn recognises_the_four_content_types() {
        for (value, encoding) in [
            ("application/grpc-web", Encoding::Binary),
            ("application/grpc-web+proto", Encoding::Binary),
            ("Application/GRPC-Web-Text; charset=utf-8", Encoding::Text),
            ("application/grpc-web-text+proto", Encoding::Text),
        ] {
            let found = typed(value).expect("grpc-web").expect("supported");
            assert_eq!(found.encoding, encoding, "{value}");
        }
    }

    #[test]
    fn other_types_are_not_grpc_web() {
        assert!(typed("application/json").is_none());
        assert!(typed("application/grpc").is_none());
        assert!(typed("application/grpc-webfoo").is_none());
        assert_eq!(
            typed("application/grpc-web+json").expect("grpc-web").err(),
            Some(GrpcWebError::UnsupportedFormat(
                "application/grpc-web+json".into()
            ))
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc-web"),
        );
        assert!(requested(&Method::GET, &headers).is_none());
    }
}
