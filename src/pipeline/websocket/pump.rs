//! The two directions of one WebSocket call: client frames to upstream
//! messages (each taken only when the upstream has taken the last), and
//! upstream messages to frames, under the deadline and the idle timeout.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use super::super::streaming::failure_error;
use super::{End, Session};
use crate::stream::response::until_ending;
use crate::stream::{Failure, StreamError};
use crate::transcode;
use crate::upstream::{CallError, MessageStream};

/// Moves messages both ways for one call.
pub(super) struct Pump<'a> {
    pub(super) session: &'a Session,
    /// `None` once the client ended its half (or the method takes none).
    pub(super) to_upstream: Option<mpsc::Sender<Option<Bytes>>>,
    /// A message read from the client (or, as `None`, its end of input),
    /// waiting for the upstream to take it.
    pub(super) pending: Option<Option<Bytes>>,
    /// Messages read from the client.
    pub(super) received: u64,
    /// Turns true when the gateway ends its streams (shutdown).
    pub(super) ending: tokio::sync::watch::Receiver<bool>,
}

/// What happened next on the socket.
enum Event {
    Client(Option<Result<Message, axum::Error>>),
    Sent,
    Upstream(Result<Option<Bytes>, CallError>),
    Deadline,
    Idle,
    ShuttingDown,
}

impl Pump<'_> {
    /// Before the upstream's head: forwards the client's messages; resolves
    /// only if the client's side ends the call first.
    pub(super) async fn until_input_ends(
        &mut self,
        incoming: &mut futures_util::stream::SplitStream<WebSocket>,
    ) -> End {
        loop {
            if let Some(message) = self.pending.take() {
                let ends = message.is_none();
                if let Some(tx) = &self.to_upstream
                    && tx.send(message).await.is_err()
                {
                    // The call failed before its head; `open` says why.
                    return std::future::pending().await;
                }
                if ends {
                    self.to_upstream = None;
                }
            }
            match incoming.next().await {
                Some(Ok(message)) => {
                    if let Some(end) = self.take_client_frame(message) {
                        return end;
                    }
                }
                _ => return End::ClientGone,
            }
        }
    }

    pub(super) async fn relay(
        &mut self,
        sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
        incoming: &mut futures_util::stream::SplitStream<WebSocket>,
        messages: &mut MessageStream,
        idle: Option<Duration>,
    ) -> End {
        let mut last = Instant::now();
        loop {
            let idle_at = idle.map(|idle| last + idle);
            let event = {
                let send = async {
                    match (&self.to_upstream, &self.pending) {
                        (Some(tx), Some(message)) => {
                            let _ = tx.send(message.clone()).await;
                        }
                        _ => std::future::pending().await,
                    }
                };
                let reading = self.pending.is_none();
                tokio::select! {
                    biased;
                    () = send => Event::Sent,
                    next = incoming.next(), if reading => Event::Client(next),
                    next = messages.message() => Event::Upstream(next),
                    () = sleep_until(self.session.deadline.instant()) => Event::Deadline,
                    () = sleep_some(idle_at) => Event::Idle,
                    () = until_ending(&mut self.ending) => Event::ShuttingDown,
                }
            };
            match event {
                Event::Sent => {
                    if let Some(None) = self.pending.take() {
                        self.to_upstream = None;
                    }
                }
                Event::Client(Some(Ok(message))) => {
                    last = Instant::now();
                    if let Some(end) = self.take_client_frame(message) {
                        return end;
                    }
                }
                Event::Client(_) => return End::ClientGone,
                Event::Upstream(Ok(Some(message))) => {
                    last = Instant::now();
                    if let Some(end) = self.send_to_client(sink, message).await {
                        return end;
                    }
                }
                Event::Upstream(Ok(None)) => return End::Ok,
                Event::Upstream(Err(error)) => return self.failed(Failure::Call(error)),
                Event::Deadline => return self.failed(Failure::Call(CallError::DeadlineExceeded)),
                Event::Idle => return self.failed(Failure::Idle(idle.unwrap_or_default())),
                Event::ShuttingDown => return End::GoingAway,
            }
        }
    }

    /// Takes one client frame; `Some` when it ends the call.
    fn take_client_frame(&mut self, message: Message) -> Option<End> {
        let (body, raw) = match message {
            Message::Text(text) if text.is_empty() && self.to_upstream.is_some() => {
                // The client's half is done; the upstream sees end of stream.
                self.pending = Some(None);
                return None;
            }
            Message::Text(text) => (Bytes::copy_from_slice(text.as_bytes()), false),
            Message::Binary(data) => (data, true),
            Message::Close(_) => return Some(End::ClientGone),
            Message::Ping(_) | Message::Pong(_) => return None,
        };
        if self.to_upstream.is_none() {
            return Some(End::Failed(StreamError::UnexpectedMessage.into()));
        }
        let raw_input = self.session.frames.takes_http_body();
        if raw != raw_input {
            let error = if raw_input {
                StreamError::WrongFrame { expected: "binary" }
            } else {
                StreamError::WrongFrame { expected: "text" }
            };
            return Some(End::Failed(error.into()));
        }
        self.received += 1;
        match self.session.encode(&self.session.frames, body, raw) {
            Ok(framed) => {
                self.pending = Some(Some(framed));
                None
            }
            Err(source) => {
                let index = self.received;
                Some(End::Failed(
                    StreamError::BadMessage { index, source }.into(),
                ))
            }
        }
    }

    /// Sends one upstream message to the client; `Some` when that fails.
    async fn send_to_client(
        &self,
        sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
        message: Bytes,
    ) -> Option<End> {
        let plan = &self
            .session
            .snapshot
            .plans
            .get(self.session.binding)
            .transcode;
        let reply = match transcode::response(plan, message) {
            Ok(reply) => reply,
            Err(error) => return Some(self.failed(Failure::Transcode(error))),
        };
        let frame = if reply.content_type == crate::headers::CONTENT_TYPE_JSON {
            match String::from_utf8(reply.body.to_vec()) {
                Ok(text) => Message::Text(text.into()),
                Err(_) => Message::Binary(reply.body),
            }
        } else {
            Message::Binary(reply.body)
        };
        let sent = sink.send(frame).await;
        if sent.is_ok() {
            self.session
                .sent
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        sent.err().map(|_| End::ClientGone)
    }

    pub(super) fn failed(&self, failure: Failure) -> End {
        let session = self.session;
        let plan = session.snapshot.plans.get(session.binding);
        End::Failed(failure_error(
            &session.snapshot,
            plan,
            session.deadline,
            failure,
        ))
    }
}

async fn sleep_some(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}
