//! Why an upstream call did not produce a message, by layer: the service's
//! own gRPC status, the network or protocol, or the deadline. No HTTP
//! answers here: [`crate::error`] maps these.

use http::HeaderMap;

/// Why a call did not produce a message.
#[derive(Debug)]
pub enum CallError {
    /// The service answered with a non-OK status.
    Status {
        /// The status, with its details bytes.
        status: tonic::Status,
        /// Response headers merged with trailers, for metadata forwarding.
        metadata: HeaderMap,
    },
    /// The network or protocol failed.
    Transport(TransportError),
    /// The deadline ran out; the call was cancelled.
    DeadlineExceeded,
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
    /// The upstream answered a readable status whose
    /// `grpc-status-details-bin` is unreadable.
    #[error("upstream '{upstream}' sent status {} ({message:?}) whose {reason}", *.code as i32)]
    BadStatusDetails {
        /// Upstream name from routes.toml.
        upstream: String,
        /// The status code it sent, kept in the answer.
        code: tonic::Code,
        /// The status message it sent, kept in the answer.
        message: String,
        /// What was wrong with the details.
        reason: String,
    },
    /// The upstream's response headers or trailers are larger than the
    /// gateway accepts.
    #[error("upstream '{upstream}' sent metadata over the limit of {limit} bytes: {reason}")]
    MetadataTooLarge {
        /// Upstream name from routes.toml.
        upstream: String,
        /// The limit, in bytes.
        limit: u32,
        /// What the HTTP/2 layer said.
        reason: String,
    },
}
