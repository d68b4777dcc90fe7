//! Streaming calls: a request of one message, or of messages sent as the
//! client produces them, and an answer read one message at a time as the
//! upstream sends it.
//!
//! Nothing is queued here: a message is taken off the HTTP/2 stream only
//! when the caller asks for the next one, so the upstream's flow-control
//! window (and the caller's pace) bounds what sits in memory, and dropping
//! a [`MessageStream`] resets the HTTP/2 stream, which the upstream sees as
//! a cancellation.

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http::uri::{Authority, PathAndQuery};
use http_body::Body as _;
use hyper::body::Incoming;

use super::connection::UpstreamBody;
use super::deadline::Deadline;
use super::endpoint::{Endpoint, Lease};
use super::error::{CallError, TransportError};
use super::grpc::{self, CallHead, Failed, PREFIX_LEN};
use super::outlier::Outcome;
use super::{Target, Upstream};
use crate::headers::GRPC_STATUS;

/// A streaming call ready to open.
#[derive(Debug)]
pub struct StreamRequest {
    /// `/package.Service/Method`.
    pub path: PathAndQuery,
    /// What is sent.
    pub body: StreamBody,
    /// Metadata to send (already filtered).
    pub metadata: HeaderMap,
}

/// The request side of a streaming call.
#[derive(Debug)]
pub enum StreamBody {
    /// One framed message (a server-streaming call): sent again on another
    /// connection when the upstream provably did not process it.
    One(Bytes),
    /// Framed messages as the client sends them: sent once, never retried,
    /// since they cannot be replayed.
    Messages(UpstreamBody),
}

/// The answer of a streaming call, read one message at a time.
#[derive(Debug)]
pub struct MessageStream {
    /// `None` once the stream has ended (or for a trailers-only answer).
    body: Option<Incoming>,
    buffer: BytesMut,
    headers: HeaderMap,
    trailers: HeaderMap,
    max_message_bytes: usize,
    upstream: Arc<str>,
    endpoint: Authority,
    /// Counts as a call in flight on its endpoint until the stream ends.
    lease: Option<Lease>,
}

// === impl Upstream ===

impl Upstream {
    /// Opens a streaming call within `deadline`: resolves once the upstream
    /// has answered with its response headers (or a status). Only an
    /// attempt the upstream provably did not process is made again, and
    /// only for a one-message request.
    pub async fn open(
        &self,
        request: StreamRequest,
        target: &Target,
        deadline: Deadline,
    ) -> Result<MessageStream, CallError> {
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        self.budget.deposit();
        let head = Head {
            path: &request.path,
            metadata: &request.metadata,
            deadline,
        };
        let framed = match request.body {
            StreamBody::One(framed) => framed,
            StreamBody::Messages(body) => {
                let opened = self.open_attempt(&head, 0, body, None).await;
                return opened.map_err(|(failed, _)| failed.error);
            }
        };
        let mut avoid: Option<Arc<Endpoint>> = None;
        let mut attempt = 0;
        loop {
            let body = UpstreamBody::new(framed.clone());
            let failed = match self
                .open_attempt(&head, attempt, body, avoid.as_ref())
                .await
            {
                Ok(stream) => return Ok(stream),
                Err((failed, endpoint)) => {
                    avoid = endpoint.or(avoid);
                    failed
                }
            };
            attempt += 1;
            if !failed.unprocessed
                || attempt >= target.retry.attempts
                || deadline.remaining().is_zero()
            {
                return Err(failed.error);
            }
            if !self.spend_retry(&failed) {
                return Err(failed.error);
            }
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn open_attempt(
        &self,
        head: &Head<'_>,
        previous_attempts: u32,
        body: UpstreamBody,
        avoid: Option<&Arc<Endpoint>>,
    ) -> Result<MessageStream, (Failed, Option<Arc<Endpoint>>)> {
        let mut lease = self.pool.lease(avoid).map_err(|reason| {
            let error = CallError::Transport(TransportError::Unreachable {
                upstream: self.name.clone(),
                reason,
            });
            let failed = Failed {
                error,
                unprocessed: true,
            };
            (failed, None)
        })?;
        let endpoint = lease.endpoint().clone();
        let request = CallHead {
            path: head.path,
            metadata: head.metadata,
            scheme: self.pool.scheme(),
            authority: lease.authority(),
            deadline: head.deadline,
            previous_attempts,
        }
        .request(body)
        .map_err(|f| (f, None))?;
        let sent = tokio::time::timeout_at(
            head.deadline.instant(),
            grpc::send(&mut lease, &self.name, request),
        )
        .await
        .unwrap_or(Err(Failed {
            error: CallError::DeadlineExceeded,
            unprocessed: false,
        }));
        let opened = sent.and_then(|response| {
            MessageStream::start(response, &self.name, self.max_message_bytes, lease).map_err(
                |error| Failed {
                    error,
                    unprocessed: false,
                },
            )
        });
        let outcome = match &opened {
            Ok(_) => Some(Outcome::Answered),
            Err(failed) => super::outcome_of(&failed.error),
        };
        if let Some(outcome) = outcome {
            self.pool.record(&endpoint, outcome);
        }
        opened.map_err(|failed| (failed, Some(endpoint)))
    }
}

/// The parts of a streaming call's head that every attempt shares.
struct Head<'a> {
    path: &'a PathAndQuery,
    metadata: &'a HeaderMap,
    deadline: Deadline,
}

// === impl MessageStream ===

impl MessageStream {
    fn start(
        response: http::Response<Incoming>,
        upstream: &str,
        max_message_bytes: usize,
        lease: Lease,
    ) -> Result<MessageStream, CallError> {
        let (parts, body) = response.into_parts();
        grpc::check_head(&parts, upstream)?;
        let endpoint = lease.authority().clone();
        // Trailers-only: the status is in the headers; an OK one is an
        // empty stream.
        let body = if parts.headers.contains_key(GRPC_STATUS) {
            grpc::final_status(&parts.headers, HeaderMap::new(), upstream)?;
            None
        } else {
            Some(body)
        };
        Ok(MessageStream {
            body,
            buffer: BytesMut::new(),
            headers: parts.headers,
            trailers: HeaderMap::new(),
            max_message_bytes,
            upstream: Arc::from(upstream),
            endpoint,
            lease: Some(lease),
        })
    }

    /// The upstream's response headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The trailers, once the stream has ended.
    pub fn trailers(&self) -> &HeaderMap {
        &self.trailers
    }

    /// The endpoint serving the call.
    pub fn endpoint(&self) -> &Authority {
        &self.endpoint
    }

    /// The next message, `None` once the upstream ended the stream with
    /// OK, or why it ended otherwise.
    pub async fn message(&mut self) -> Result<Option<Bytes>, CallError> {
        poll_fn(|cx| self.poll_message(cx)).await
    }

    /// Polls for the next message (see [`MessageStream::message`]).
    pub fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, CallError>> {
        loop {
            if let Some(message) = self.take_buffered().map_err(|e| self.bad(e))? {
                return Poll::Ready(Ok(Some(message)));
            }
            let Some(body) = &mut self.body else {
                return Poll::Ready(Ok(None));
            };
            match ready!(std::pin::Pin::new(body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.buffer.extend_from_slice(&data),
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            self.trailers.extend(trailers);
                        }
                    }
                },
                Some(Err(error)) => {
                    self.finish();
                    let error = grpc::exchange_failed(&error, &self.upstream);
                    return Poll::Ready(Err(CallError::Transport(error)));
                }
                None => return Poll::Ready(self.end()),
            }
        }
    }

    /// A whole message off the front of the buffer, if one has arrived.
    fn take_buffered(&mut self) -> Result<Option<Bytes>, String> {
        if self.buffer.len() < PREFIX_LEN {
            return Ok(None);
        }
        let len = u32::from_be_bytes([
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
            self.buffer[4],
        ]) as usize;
        match self.buffer[0] {
            0 => {}
            1 => return Err("compressed message although none was accepted".into()),
            flag => return Err(format!("invalid gRPC frame flag {flag}")),
        }
        if len > self.max_message_bytes {
            return Err(format!(
                "response message of {len} bytes is over the limit of {}",
                self.max_message_bytes
            ));
        }
        if self.buffer.len() < PREFIX_LEN + len {
            return Ok(None);
        }
        self.buffer.advance(PREFIX_LEN);
        Ok(Some(self.buffer.split_to(len).freeze()))
    }

    /// The stream's end: its status, once every message was taken.
    fn end(&mut self) -> Result<Option<Bytes>, CallError> {
        self.finish();
        if !self.buffer.is_empty() {
            return Err(self.bad("truncated gRPC frame at the end of the stream".into()));
        }
        if !self.trailers.contains_key(GRPC_STATUS) {
            return Err(self.bad("the response has no grpc-status trailer".into()));
        }
        let trailers = std::mem::take(&mut self.trailers);
        self.trailers = grpc::final_status(&HeaderMap::new(), trailers, &self.upstream)?;
        Ok(None)
    }

    /// Stops reading: the HTTP/2 stream is released and the endpoint no
    /// longer counts the call in flight.
    fn finish(&mut self) {
        self.body = None;
        self.lease = None;
    }

    fn bad(&mut self, reason: String) -> CallError {
        self.finish();
        CallError::Transport(grpc::bad_response(&self.upstream, reason))
    }
}
