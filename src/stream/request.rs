//! A client stream's request body: NDJSON lines (or, for a
//! `google.api.HttpBody` body, the raw bytes in chunks) turned into framed
//! request messages as the client sends them. Each message gets the path
//! variables and query parameters, like a unary request does.
//!
//! The body is polled by the upstream connection only when the HTTP/2
//! stream has send window, so the client is read at the upstream's pace and
//! at most one message is held. A message that cannot be transcoded fails
//! the body, which resets the upstream stream; [`FailedInput`] keeps why,
//! for the client's 400.

use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use http::HeaderValue;
use http_body::{Body, Frame};
use http_body_util::BodyExt as _;

use super::StreamError;
use crate::headers::CONTENT_TYPE_JSON;
use crate::transcode::{self, request::HttpInput};
use crate::upstream::{BoxError, UpstreamBody};

/// What every message of one client stream is built with.
#[derive(Debug)]
pub struct MessageSource {
    /// The binding's transcoding plan.
    pub plan: transcode::Plan,
    /// Decoded path variables.
    pub captures: Vec<(usize, String)>,
    /// The raw query string.
    pub query: Option<String>,
    /// The request's Content-Type (an HttpBody's content type).
    pub content_type: Option<HeaderValue>,
    /// Largest message (NDJSON line or raw chunk), `[limits] max_body_bytes`.
    pub max_message_bytes: usize,
    /// Deepest JSON nesting accepted.
    pub max_json_depth: usize,
}

/// Why a client stream's body failed, kept for the answer.
#[derive(Debug, Clone, Default)]
pub struct FailedInput(Arc<Mutex<Option<StreamError>>>);

// === impl FailedInput ===

impl FailedInput {
    /// The failure, if the body failed.
    pub fn take(&self) -> Option<StreamError> {
        self.0.lock().ok().and_then(|mut slot| slot.take())
    }

    fn set(&self, error: StreamError) -> BoxError {
        let text = error.to_string();
        if let Ok(mut slot) = self.0.lock() {
            slot.get_or_insert(error);
        }
        text.into()
    }
}

/// Checks an NDJSON stream's Content-Type before anything is sent.
pub fn check_content_type(content_type: Option<&HeaderValue>) -> Result<(), StreamError> {
    let text = content_type.and_then(|v| v.to_str().ok()).unwrap_or("");
    match transcode::request::essence(text).as_str() {
        "application/x-ndjson" | "application/jsonl" | "application/json" => Ok(()),
        _ => Err(StreamError::UnsupportedMediaType {
            got: text.to_string(),
        }),
    }
}

/// The request messages of a client stream read from `body`.
pub fn messages<B>(body: B, source: MessageSource) -> (UpstreamBody, FailedInput)
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::fmt::Display,
{
    let failed = FailedInput::default();
    let reader = Reader {
        raw: source.plan.takes_http_body(),
        body,
        source,
        buffer: BytesMut::new(),
        scanned: 0,
        index: 0,
        eof: false,
        failed: failed.clone(),
    };
    let frames = futures_util::stream::unfold(reader, |mut reader| async move {
        let frame = reader.next().await?;
        Some((frame, reader))
    });
    let body = UpstreamBody::messages(http_body_util::StreamBody::new(frames));
    (body, failed)
}

struct Reader<B> {
    body: B,
    source: MessageSource,
    raw: bool,
    buffer: BytesMut,
    /// How much of `buffer` is known to hold no line break.
    scanned: usize,
    /// Messages produced so far.
    index: u64,
    eof: bool,
    failed: FailedInput,
}

impl<B> Reader<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::fmt::Display,
{
    async fn next(&mut self) -> Option<Result<Frame<Bytes>, BoxError>> {
        loop {
            if let Some(message) = self.take_message() {
                return Some(message.map(Frame::data));
            }
            if self.eof {
                return None;
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
                Some(Err(error)) => {
                    return Some(Err(self.failed.set(StreamError::Read(error.to_string()))));
                }
                None => self.eof = true,
            }
        }
    }

    /// The next whole message in the buffer, if there is one.
    fn take_message(&mut self) -> Option<Result<Bytes, BoxError>> {
        let max = self.source.max_message_bytes;
        if self.raw {
            // Each chunk goes on as it came (split at the message limit).
            let ready = !self.buffer.is_empty();
            // An empty upload still sends one message: it carries the
            // path variables and the content type.
            let empty_upload = self.eof && self.index == 0;
            if !ready && !empty_upload {
                return None;
            }
            let take = self.buffer.len().min(max);
            let chunk = self.buffer.split_to(take).freeze();
            return Some(self.encode(chunk));
        }
        loop {
            let newline = self.buffer[self.scanned..]
                .iter()
                .position(|b| *b == b'\n')
                .map(|at| self.scanned + at);
            let line = match newline {
                Some(at) => {
                    self.scanned = 0;
                    self.buffer.split_to(at + 1).freeze()
                }
                None if self.buffer.len() > max => {
                    let error = StreamError::MessageTooLarge {
                        index: self.index + 1,
                        limit: max,
                    };
                    return Some(Err(self.failed.set(error)));
                }
                None if self.eof && !self.buffer.is_empty() => {
                    self.scanned = 0;
                    self.buffer.split().freeze()
                }
                None => {
                    self.scanned = self.buffer.len();
                    return None;
                }
            };
            if line.len() > max + 2 {
                let error = StreamError::MessageTooLarge {
                    index: self.index + 1,
                    limit: max,
                };
                return Some(Err(self.failed.set(error)));
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Some(self.encode(line));
        }
    }

    fn encode(&mut self, body: Bytes) -> Result<Bytes, BoxError> {
        self.index += 1;
        let json = CONTENT_TYPE_JSON;
        let content_type = if self.raw {
            self.source.content_type.as_ref()
        } else {
            Some(&json)
        };
        let input = HttpInput {
            captures: &self.source.captures,
            query: self.source.query.as_deref(),
            content_type,
            body,
            max_json_depth: self.source.max_json_depth,
            // A raw upload's chunks go on as they are, a form included.
            multipart: None,
        };
        transcode::request(&self.source.plan, input).map_err(|source| {
            self.failed.set(StreamError::BadMessage {
                index: self.index,
                source,
            })
        })
    }
}
