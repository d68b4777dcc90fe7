//! A streaming method over a WebSocket: one JSON message per text frame
//! each way (raw `google.api.HttpBody` bytes as binary frames), the
//! upgrade request authenticated like any request and its `Origin` checked
//! against `[cors] allow_origins`, the stream's deadline and idle timeout
//! applied, and the close code taken from the gRPC status: 1000 for OK,
//! 4000 + the code otherwise, after a last `{"error": status}` frame.
//!
//! The client ends its half of the stream with an empty text frame (never
//! a JSON message), after which the upstream's remaining messages still
//! come; a Close frame ends the whole call, which cancels the upstream.

use axum::body::Bytes;
use axum::extract::FromRequestParts as _;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt as _, StreamExt as _};
use http::header;
use http::request::Parts;
use tokio::sync::mpsc;

use super::streaming::Call;

mod pump;

use crate::error::GatewayError;
use crate::metrics::{OpenStream, StreamOutcome};
use crate::snapshot::Snapshot;
use crate::stream::{Failure, StreamError};
use crate::transcode::{self, request::HttpInput};
use crate::upstream::{BoxError, Deadline, StreamBody, StreamRequest, UpstreamBody};
use pump::Pump;

/// Close code of a call that ended OK (RFC 6455 §7.4.1).
const NORMAL: u16 = 1000;
/// Close code of a call the gateway ends because it is shutting down.
const GOING_AWAY: u16 = 1001;
/// Close codes 4000–4999 are the application's: 4000 + the gRPC code.
const STATUS_BASE: u16 = 4000;
/// How long the gateway waits for the client's Close after sending its own.
const CLOSE_HANDSHAKE: std::time::Duration = std::time::Duration::from_secs(2);
/// Longest close reason a control frame can carry (125 bytes less the code).
const MAX_REASON: usize = 123;

/// Whether the request asks to become a WebSocket.
pub(super) fn is_upgrade(parts: &Parts) -> bool {
    parts
        .headers
        .get(header::UPGRADE)
        .is_some_and(|u| u.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// Takes the upgrade out of a WebSocket request, before the request is
/// shared with the stages; a malformed handshake is refused.
pub(super) async fn take_upgrade(parts: &mut Parts) -> Result<WebSocketUpgrade, StreamError> {
    WebSocketUpgrade::from_request_parts(parts, &())
        .await
        .map_err(|rejection| StreamError::BadUpgrade(rejection.body_text()))
}

/// The streaming binding a WebSocket upgrade (always a GET) stands for
/// when its path is bound to another method: a client-streaming method is
/// usually bound to POST.
pub(super) fn find(
    snapshot: &Snapshot,
    path: &crate::route::path::NormalizedPath,
    allowed: &[http::Method],
) -> Option<crate::route::RouteMatch> {
    allowed.iter().find_map(|method| {
        let found = snapshot.routes.find(method, path).ok()?;
        snapshot
            .plans
            .get(found.binding)
            .stream
            .is_some()
            .then_some(found)
    })
}

/// Answers the upgrade (or refuses it) and runs the call on the socket.
/// `guards` (admission and the upstream call slot) are held until the
/// socket closes, since an upgraded connection is outside the listener's
/// connection bound.
pub(super) fn upgrade<G: Send + 'static>(
    call: Call<'_>,
    upgrade: WebSocketUpgrade,
    guards: G,
) -> Result<Response, GatewayError> {
    check_origin(call.snapshot, call.parts)?;
    let limit = call.snapshot.settings.limits.max_body_bytes;
    let session = Session::new(&call);
    let response = upgrade
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| async move {
            session.run(socket).await;
            drop(guards);
        });
    Ok(response.into_response())
}

/// A page's upgrade must come from an allowed origin: a WebSocket is not
/// covered by CORS, so without this any site could open one with the
/// visitor's cookies. Clients that send no `Origin` (not browsers) pass.
fn check_origin(snapshot: &Snapshot, parts: &Parts) -> Result<(), StreamError> {
    let Some(origin) = parts.headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("");
    let allowed = snapshot
        .settings
        .edge
        .cors
        .as_ref()
        .is_some_and(|cors| cors.allows_origin(origin));
    let same_origin = parts.headers.get(header::HOST).is_some_and(|host| {
        let host = host.to_str().unwrap_or("\u{0}");
        origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            == Some(host)
    });
    if allowed || same_origin {
        Ok(())
    } else {
        Err(StreamError::OriginNotAllowed {
            origin: origin.to_string(),
        })
    }
}

/// Everything the socket's task needs, owned.
struct Session {
    snapshot: std::sync::Arc<Snapshot>,
    binding: crate::route::BindingId,
    captures: Vec<(usize, String)>,
    query: Option<String>,
    metadata: http::HeaderMap,
    deadline: Deadline,
    /// Turns true when the gateway ends its streams (shutdown).
    ending: tokio::sync::watch::Receiver<bool>,
    /// Counts the call among the open streams until it ends.
    open: Option<OpenStream>,
    /// Messages written to the client.
    sent: std::sync::atomic::AtomicU64,
    /// How a client frame becomes a message: the binding's plan, except
    /// that a binding without a body rule (a GET) takes each frame as the
    /// whole message.
    frames: transcode::Plan,
}

/// How a call over the socket ended.
enum End {
    /// The upstream ended with OK.
    Ok,
    /// It failed; the client is told.
    Failed(GatewayError),
    /// The client closed or went away; nothing more to say.
    ClientGone,
    /// The gateway is shutting down: close 1001, the client reconnects.
    GoingAway,
}

impl Session {
    fn new(call: &Call<'_>) -> Session {
        let metadata = call.upstream_metadata();
        let mut frames = call.plan.transcode.clone();
        if matches!(frames.body, transcode::BodyRule::None) {
            frames.body = transcode::BodyRule::Whole;
        }
        let route = call.plan.template.to_string();
        Session {
            ending: call.ending.subscribe(),
            open: Some(call.streams.opened(&route, "websocket")),
            sent: std::sync::atomic::AtomicU64::new(0),
            frames,
            snapshot: call.snapshot.clone(),
            binding: call.found.binding,
            captures: call.found.captures.clone(),
            query: call.parts.uri.query().map(str::to_string),
            metadata,
            deadline: call.deadline,
        }
    }

    async fn run(mut self, socket: WebSocket) {
        let (mut sink, mut incoming) = socket.split();
        let end = self.call(&mut sink, &mut incoming).await;
        if let Some(open) = self.open.take() {
            let outcome = match &end {
                End::Ok => StreamOutcome::Ok,
                End::Failed(_) | End::GoingAway => StreamOutcome::Failed,
                End::ClientGone => StreamOutcome::ClientGone,
            };
            open.ended(outcome, *self.sent.get_mut());
        }
        let (code, reason) = match end {
            End::Ok => (NORMAL, String::new()),
            End::ClientGone => return,
            End::GoingAway => (GOING_AWAY, StreamError::ShuttingDown.to_string()),
            End::Failed(error) => {
                let status = error.body();
                let last = serde_json::json!({ "error": status });
                let _ = sink.send(Message::Text(last.to_string().into())).await;
                (STATUS_BASE + error.code() as u16, close_reason(&error))
            }
        };
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from(reason),
        };
        let _ = sink.send(Message::Close(Some(frame))).await;
        // The closing handshake (RFC 6455 §7.1.1): the client answers with
        // its own Close before the connection goes, or the browser reports
        // the close as unclean. A client that never answers is not waited
        // for long.
        let answered = async {
            while let Some(Ok(message)) = incoming.next().await {
                if matches!(message, Message::Close(_)) {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_HANDSHAKE, answered).await;
    }

    async fn call(
        &self,
        sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
        incoming: &mut futures_util::stream::SplitStream<WebSocket>,
    ) -> End {
        let plan = self.snapshot.plans.get(self.binding);
        let Some(policy) = &plan.stream else {
            return End::Failed(GatewayError::Internal("not a streaming binding".into()));
        };
        // `None` on the channel is the client's end of input.
        let (to_upstream, from_client) = mpsc::channel::<Option<Bytes>>(1);
        let body = if policy.client_streaming {
            StreamBody::Messages(UpstreamBody::messages(http_body_util::StreamBody::new(
                futures_util::stream::unfold(Some(from_client), |rx| async move {
                    let mut rx = rx?;
                    match rx.recv().await {
                        Some(Some(message)) => {
                            Some((Ok(http_body::Frame::data(message)), Some(rx)))
                        }
                        Some(None) => None,
                        // Dropped before the client's end: the call was
                        // abandoned, and the upstream must see a reset,
                        // never a complete stream it might act on.
                        None => {
                            let abandoned: BoxError = "the WebSocket call was abandoned".into();
                            Some((Err(abandoned), None))
                        }
                    }
                }),
            )))
        } else {
            // No client messages: the one request message comes from the
            // upgrade request's path and query, as for an HTTP request.
            match self.encode(&plan.transcode, Bytes::new(), false) {
                Ok(framed) => StreamBody::One(framed),
                Err(error) => return End::Failed(error.into()),
            }
        };
        let upstream = &self.snapshot.upstreams[plan.upstream.upstream];
        let request = StreamRequest {
            path: plan.upstream.grpc_path.clone(),
            body,
            metadata: self.metadata.clone(),
        };
        let mut pump = Pump {
            to_upstream: policy.client_streaming.then_some(to_upstream),
            pending: None,
            session: self,
            received: 0,
            ending: self.ending.clone(),
        };
        // The upstream answers its head only once it has started; meanwhile
        // the client's first messages must already flow to it.
        let opened = tokio::select! {
            opened = upstream.open(request, &plan.upstream, self.deadline) => opened,
            end = pump.until_input_ends(incoming) => return end,
        };
        let mut messages = match opened {
            Ok(messages) => messages,
            Err(error) => return pump.failed(Failure::Call(error)),
        };
        pump.relay(sink, incoming, &mut messages, policy.idle_timeout)
            .await
    }

    /// One client frame as a framed request message.
    fn encode(
        &self,
        plan: &transcode::Plan,
        body: Bytes,
        raw: bool,
    ) -> Result<Bytes, transcode::TranscodeError> {
        let json = crate::headers::CONTENT_TYPE_JSON;
        let octets = http::HeaderValue::from_static("application/octet-stream");
        let input = HttpInput {
            captures: &self.captures,
            query: self.query.as_deref(),
            content_type: Some(if raw { &octets } else { &json }),
            body,
            max_json_depth: self.snapshot.settings.limits.max_json_depth,
            multipart: None,
        };
        transcode::request(plan, input)
    }
}

/// The close frame's reason: the status message, cut to what fits.
fn close_reason(error: &GatewayError) -> String {
    let body = error.body();
    let message = body["message"].as_str().unwrap_or("").to_string();
    if message.len() <= MAX_REASON {
        return message;
    }
    let mut end = MAX_REASON;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message[..end].to_string()
}
