//! Streaming methods: server streams written to the client as NDJSON,
//! Server-Sent Events or one JSON array as each message arrives; client
//! streams read from an NDJSON (or raw `google.api.HttpBody`) request body
//! as the client sends it. Each binding's [`Policy`] is compiled at load
//! time; the bodies here hold one message at a time, so a stream's memory
//! is bounded by the HTTP/2 windows and the socket buffers, not its length.

pub mod encode;
pub mod error;
pub mod format;
pub mod request;
pub mod response;

use std::time::Duration;

use crate::transcode::FieldPath;

pub use error::StreamError;
pub use format::Format;
pub use request::{FailedInput, messages};
pub use response::{Failure, ServerStream, StreamEnd};

/// The streaming piece of a method plan: `None` in the plan for a unary
/// method.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The client sends a stream of messages.
    pub client_streaming: bool,
    /// The upstream answers with a stream of messages.
    pub server_streaming: bool,
    /// The format the route pins, whatever the client accepts.
    pub format: Option<Format>,
    /// The longest gap between two messages before the stream is ended
    /// with DEADLINE_EXCEEDED.
    pub idle_timeout: Option<Duration>,
    /// How often an idle Server-Sent Events stream gets a comment line, and
    /// how long the gateway waits for the first message before it sends
    /// the response head anyway.
    pub keepalive: Duration,
    /// Server-Sent Events options.
    pub sse: SseOptions,
}

/// Which message fields become an event's `id` and `event` lines, and the
/// reconnection delay announced to the browser.
#[derive(Debug, Clone, Default)]
pub struct SseOptions {
    /// A scalar field of the streamed message written as `id:`.
    pub id: Option<FieldPath>,
    /// A scalar field of the streamed message written as `event:`.
    pub event: Option<FieldPath>,
    /// Written once as `retry:` (milliseconds) at the start.
    pub retry: Option<Duration>,
}

/// Marks a streamed answer: compression passes it by, since a compressor
/// holds bytes back and a stream's messages must reach the client as they
/// are written.
#[derive(Debug, Clone, Copy)]
pub struct Streamed;
