//! Why a streaming request was refused before anything was sent upstream,
//! or how a stream ended early. No HTTP answers here: [`crate::error`]
//! maps these.

use std::time::Duration;

use crate::transcode::TranscodeError;

/// A streaming stage failure.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The client accepts none of the formats the route can stream in.
    #[error("this route streams {offered}; the request accepts only {accept:?}")]
    NotAcceptable {
        /// The request's Accept header.
        accept: String,
        /// The media types the route can answer with.
        offered: String,
    },
    /// A client stream's body is not NDJSON.
    #[error(
        "unsupported content type {got:?}; this route accepts application/x-ndjson (one JSON message per line)"
    )]
    UnsupportedMediaType {
        /// The request's Content-Type.
        got: String,
    },
    /// A message of a client stream could not be transcoded.
    #[error("message {index} of the request stream: {source}")]
    BadMessage {
        /// Its position in the stream, from 1.
        index: u64,
        /// What was wrong with it.
        source: TranscodeError,
    },
    /// A line of an NDJSON request stream is longer than a message may be.
    #[error("message {index} of the request stream is longer than the limit of {limit} bytes")]
    MessageTooLarge {
        /// Its position in the stream, from 1.
        index: u64,
        /// `[limits] max_body_bytes`, which bounds each message.
        limit: usize,
    },
    /// The route streams client messages but has no body rule: its
    /// messages can only come over a WebSocket.
    #[error("this route takes its messages over a WebSocket; send an upgrade request")]
    WebSocketOnly,
    /// A WebSocket handshake the gateway cannot accept.
    #[error("invalid WebSocket upgrade: {0}")]
    BadUpgrade(String),
    /// A page on an origin `[cors] allow_origins` does not list asked for
    /// a WebSocket.
    #[error("origin {origin:?} may not open a WebSocket here")]
    OriginNotAllowed {
        /// The request's Origin.
        origin: String,
    },
    /// A client message after the client ended its stream, or to a method
    /// that takes none.
    #[error("this call takes no more messages from the client")]
    UnexpectedMessage,
    /// A text frame where bytes were expected, or the other way round.
    #[error("this route takes {expected} WebSocket frames")]
    WrongFrame {
        /// `text` or `binary`.
        expected: &'static str,
    },
    /// The request stream could not be read from the client.
    #[error("the request stream could not be read: {0}")]
    Read(String),
    /// The gateway is shutting down and ended the stream; the client
    /// reconnects (to another instance).
    #[error("the gateway is shutting down; reconnect")]
    ShuttingDown,
    /// No message arrived within the route's `stream_idle_timeout`.
    #[error("no message for {idle:?} (stream_idle_timeout)")]
    IdleTimeout {
        /// The idle timeout.
        idle: Duration,
    },
}
