//! A server stream's body: each upstream message transcoded and written as
//! it arrives, keep-alive comments while idle, the stream's deadline and
//! idle timeout enforced, and a failure after the first message written in
//! the format's own way (see [`super::encode`]).
//!
//! The body pulls the next message only when the client's connection has
//! taken the last one, so a slow reader slows the upstream through HTTP/2
//! flow control instead of queueing; when the client goes away the body is
//! dropped, and with it the upstream stream, which is reset (cancelled).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt as _;
use http_body::Frame;
use prost_reflect::{DynamicMessage, Value};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

use super::Policy;
use super::encode::{Encoder, EventFields, Framing};
use crate::transcode::{self, FieldPath, TranscodeError};
use crate::upstream::{BoxError, CallError, MessageStream};

/// Most messages taken in one go after the one that woke the stream.
const MAX_COALESCED_MESSAGES: usize = 64;

/// Largest write that waiting messages are joined into.
const COALESCE_BYTES: usize = 32 << 10;

/// How a stream failed.
#[derive(Debug)]
pub enum Failure {
    /// The upstream call failed (its status, the network, the deadline).
    Call(CallError),
    /// A message could not be transcoded.
    Transcode(TranscodeError),
    /// No message within the idle timeout.
    Idle(Duration),
    /// The gateway is shutting down.
    ShuttingDown,
}

/// Turns a failure into the google.rpc.Status JSON the client is told;
/// supplied by the stage that maps errors.
pub type RenderFailure = Arc<dyn Fn(Failure) -> serde_json::Value + Send + Sync>;

/// What a finished stream reports, once, for the log and metrics.
#[derive(Debug)]
pub struct StreamEnd {
    /// Messages written to the client.
    pub messages: u64,
    /// Body bytes written to the client.
    pub bytes: u64,
    /// How long the stream lasted after its head was sent.
    pub duration: Duration,
    /// How it ended: `ok`, `client_gone`, or the failure's status JSON.
    pub outcome: Outcome,
}

/// How a stream ended.
#[derive(Debug)]
pub enum Outcome {
    /// The upstream ended it with OK.
    Ok,
    /// The client went away first; the upstream stream was cancelled.
    ClientGone,
    /// It failed with this status.
    Failed(serde_json::Value),
}

/// How the stream starts, before its response head is sent.
#[derive(Debug)]
pub enum Start {
    /// The first message.
    Message(Bytes),
    /// The upstream ended the stream (OK) without a message.
    Ended,
    /// Nothing yet, after the wait: send the head and keep waiting.
    Waiting,
}

/// A server stream ready to be written.
pub struct ServerStream {
    /// The upstream's messages.
    pub messages: MessageStream,
    /// How each message is transcoded.
    pub transcode: transcode::Plan,
    /// The route's streaming options.
    pub policy: Policy,
    /// The framing negotiated.
    pub framing: Framing,
    /// When the stream's budget runs out.
    pub deadline: Instant,
    /// What [`start`] returned.
    pub start: Start,
    /// How failures are told.
    pub render: RenderFailure,
    /// Called once when the stream ends, however it ends.
    pub on_end: Box<dyn FnOnce(StreamEnd) + Send>,
    /// Turns true when the gateway ends its streams (shutdown).
    pub ending: watch::Receiver<bool>,
}

/// Waits for the stream's first message: up to the keep-alive interval (a
/// raw HttpBody stream waits for it, since it carries the content type),
/// bounded by the deadline and the idle timeout.
pub async fn start(
    messages: &mut MessageStream,
    policy: &Policy,
    raw: bool,
    deadline: Instant,
    mut ending: watch::Receiver<bool>,
) -> Result<Start, Failure> {
    let now = Instant::now();
    let idle_at = policy.idle_timeout.map(|idle| now + idle);
    let wait_at = (!raw).then(|| now + policy.keepalive);
    tokio::select! {
        biased;
        message = messages.message() => match message {
            Ok(Some(message)) => Ok(Start::Message(message)),
            Ok(None) => Ok(Start::Ended),
            Err(error) => Err(Failure::Call(error)),
        },
        () = sleep_until(deadline) => Err(Failure::Call(CallError::DeadlineExceeded)),
        () = sleep_until_some(idle_at) => Err(Failure::Idle(policy.idle_timeout.unwrap_or_default())),
        () = sleep_until_some(wait_at) => Ok(Start::Waiting),
        () = until_ending(&mut ending) => Err(Failure::ShuttingDown),
    }
}

/// Resolves when the gateway ends its streams; never if it cannot any more.
pub async fn until_ending(ending: &mut watch::Receiver<bool>) {
    if ending.wait_for(|ending| *ending).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The running stream: the unfold state of the body.
struct Running {
    messages: Option<MessageStream>,
    encoder: Encoder,
    transcode: transcode::Plan,
    policy: Policy,
    deadline: Instant,
    render: RenderFailure,
    /// Frames ready to hand to the connection.
    ready: VecDeque<Frame<Bytes>>,
    /// A raw body's failure: the body errors, so the client sees it cut.
    abort: Option<BoxError>,
    done: bool,
    last_message: Instant,
    last_write: Instant,
    report: Report,
    ending: watch::Receiver<bool>,
}

/// Reports the stream's end once, also when the body is dropped early.
struct Report {
    on_end: Option<Box<dyn FnOnce(StreamEnd) + Send>>,
    started: Instant,
    messages: u64,
    bytes: u64,
}

enum Event {
    Message(Result<Option<Bytes>, CallError>),
    Deadline,
    Idle,
    Keepalive,
    ShuttingDown,
}

// === impl ServerStream ===

impl ServerStream {
    /// The response body.
    pub fn into_body(
        self,
    ) -> impl http_body::Body<Data = Bytes, Error = BoxError> + Send + 'static {
        let now = Instant::now();
        let mut running = Running {
            messages: Some(self.messages),
            encoder: Encoder::new(self.framing),
            transcode: self.transcode,
            deadline: self.deadline,
            render: self.render,
            ready: VecDeque::new(),
            abort: None,
            done: false,
            last_message: now,
            last_write: now,
            report: Report {
                on_end: Some(self.on_end),
                started: now,
                messages: 0,
                bytes: 0,
            },
            policy: self.policy,
            ending: self.ending,
        };
        if let Some(open) = running.encoder.open(running.policy.sse.retry) {
            running.push(open);
        }
        match self.start {
            Start::Message(message) => running.message(message),
            Start::Ended => running.end(),
            Start::Waiting => {}
        }
        let frames = futures_util::stream::unfold(running, |mut running| async move {
            let frame = running.next_frame().await?;
            Some((frame, running))
        });
        http_body_util::StreamBody::new(frames)
    }
}

// === impl Running ===

impl Running {
    async fn next_frame(&mut self) -> Option<Result<Frame<Bytes>, BoxError>> {
        loop {
            if let Some(frame) = self.take_ready() {
                return Some(Ok(frame));
            }
            if let Some(error) = self.abort.take() {
                return Some(Err(error));
            }
            if self.done {
                return None;
            }
            match self.event().await {
                Event::Message(Ok(Some(message))) => {
                    self.message(message);
                    self.take_arrived();
                }
                Event::Message(Ok(None)) => self.end(),
                Event::Message(Err(error)) => self.fail(Failure::Call(error)),
                Event::Deadline => self.fail(Failure::Call(CallError::DeadlineExceeded)),
                Event::Idle => {
                    self.fail(Failure::Idle(self.policy.idle_timeout.unwrap_or_default()))
                }
                Event::ShuttingDown => self.fail(Failure::ShuttingDown),
                Event::Keepalive => {
                    if let Some(comment) = self.encoder.keepalive() {
                        self.push(comment);
                    }
                }
            }
        }
    }

    /// Takes the messages that have already arrived behind the one just
    /// written, so a fast stream goes out in few large writes instead of
    /// one per message; stops at the first that has not arrived.
    fn take_arrived(&mut self) {
        for _ in 0..MAX_COALESCED_MESSAGES {
            let Some(messages) = &mut self.messages else {
                return;
            };
            let Some(next) = messages.message().now_or_never() else {
                return;
            };
            match next {
                Ok(Some(message)) => self.message(message),
                Ok(None) => return self.end(),
                Err(error) => return self.fail(Failure::Call(error)),
            }
            if self.done {
                return;
            }
        }
    }

    /// The next frame for the connection: data frames waiting together are
    /// joined, up to [`COALESCE_BYTES`].
    fn take_ready(&mut self) -> Option<Frame<Bytes>> {
        let first = self.ready.pop_front()?;
        let next_is_data = self.ready.front().is_some_and(Frame::is_data);
        let first = match first.into_data() {
            Ok(data) if next_is_data && data.len() < COALESCE_BYTES => data,
            Ok(data) => return Some(Frame::data(data)),
            Err(frame) => return Some(frame),
        };
        let mut joined = BytesMut::with_capacity(COALESCE_BYTES.max(first.len()));
        joined.extend_from_slice(&first);
        while joined.len() < COALESCE_BYTES
            && let Some(next) = self.ready.front()
            && next.is_data()
        {
            if let Some(Ok(data)) = self.ready.pop_front().map(Frame::into_data) {
                joined.extend_from_slice(&data);
            }
        }
        Some(Frame::data(joined.freeze()))
    }

    async fn event(&mut self) -> Event {
        let idle_at = self
            .policy
            .idle_timeout
            .map(|idle| self.last_message + idle);
        let keepalive_at = self
            .encoder
            .keepalive()
            .map(|_| self.last_write + self.policy.keepalive);
        let Some(messages) = &mut self.messages else {
            return Event::Message(Ok(None));
        };
        tokio::select! {
            biased;
            message = messages.message() => Event::Message(message),
            () = sleep_until(self.deadline) => Event::Deadline,
            () = sleep_until_some(idle_at) => Event::Idle,
            () = sleep_until_some(keepalive_at) => Event::Keepalive,
            () = until_ending(&mut self.ending) => Event::ShuttingDown,
        }
    }

    fn message(&mut self, message: Bytes) {
        self.last_message = Instant::now();
        let fields = event_fields(&self.transcode, &self.policy, &message);
        match transcode::response(&self.transcode, message) {
            Ok(reply) => {
                let encoded = self.encoder.message(&reply.body, &fields);
                self.report.messages += 1;
                self.push(encoded);
            }
            Err(error) => self.fail(Failure::Transcode(error)),
        }
    }

    fn end(&mut self) {
        if let Some(close) = self.encoder.close() {
            self.push(close);
        }
        self.finish(Outcome::Ok);
    }

    fn fail(&mut self, failure: Failure) {
        let status = (self.render)(failure);
        tracing::warn!(%status, messages = self.report.messages, "stream failed after its first message");
        let end = self.encoder.error(&status);
        match (end.data, end.trailers) {
            (None, None) => {
                self.abort = Some(format!("stream failed: {status}").into());
            }
            (data, trailers) => {
                if let Some(data) = data {
                    self.push(data);
                }
                if let Some(trailers) = trailers {
                    self.ready.push_back(Frame::trailers(trailers));
                }
            }
        }
        self.finish(Outcome::Failed(status));
    }

    /// Ends the stream: the upstream call is dropped (a still-open one is
    /// reset) and the end reported.
    fn finish(&mut self, outcome: Outcome) {
        self.messages = None;
        self.done = true;
        self.report.end(outcome);
    }

    fn push(&mut self, data: Bytes) {
        self.last_write = Instant::now();
        self.report.bytes += data.len() as u64;
        self.ready.push_back(Frame::data(data));
    }
}

// === impl Report ===

impl Report {
    fn end(&mut self, outcome: Outcome) {
        if let Some(on_end) = self.on_end.take() {
            on_end(StreamEnd {
                messages: self.messages,
                bytes: self.bytes,
                duration: self.started.elapsed(),
                outcome,
            });
        }
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        self.end(Outcome::ClientGone);
    }
}

/// The SSE `id` and `event` of a message, from the fields the route names.
fn event_fields(plan: &transcode::Plan, policy: &Policy, message: &Bytes) -> EventFields {
    let sse = &policy.sse;
    if sse.id.is_none() && sse.event.is_none() {
        return EventFields::default();
    }
    let Ok(decoded) = DynamicMessage::decode(plan.method.output(), message.clone()) else {
        // The transcoder reports an undecodable message.
        return EventFields::default();
    };
    EventFields {
        id: sse.id.as_ref().and_then(|f| scalar_text(f, &decoded)),
        event: sse.event.as_ref().and_then(|f| scalar_text(f, &decoded)),
    }
}

/// A scalar field's value as text: strings as they are, numbers in decimal,
/// enums by name; nothing for an unset field.
fn scalar_text(field: &FieldPath, message: &DynamicMessage) -> Option<String> {
    let value = field.get(message)?;
    let text = match &*value {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::I32(n) => n.to_string(),
        Value::I64(n) => n.to_string(),
        Value::U32(n) => n.to_string(),
        Value::U64(n) => n.to_string(),
        Value::F32(n) => n.to_string(),
        Value::F64(n) => n.to_string(),
        Value::EnumNumber(n) => match field.leaf().kind() {
            prost_reflect::Kind::Enum(e) => e
                .get_value(*n)
                .map_or_else(|| n.to_string(), |v| v.name().to_string()),
            _ => n.to_string(),
        },
        _ => return None,
    };
    (!text.is_empty()).then_some(text)
}
