//! The request path of a streaming method, after authentication: negotiate
//! the answer's format, send the request (one message, or the client's
//! NDJSON/HttpBody stream), wait for the first message, then hand the rest
//! to the streaming body. Everything that fails before the response head is
//! an ordinary error answer; after it, the format says how it ends.

use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};
use tokio::time::Instant;

use super::{Observed, call_failed, deadline_exceeded};
use crate::auth::Identity;
use crate::error::GatewayError;
use crate::headers::SERVER_TIMING;
use crate::limits::LimitError;
use crate::metadata;
use crate::metrics::{StreamMetrics, StreamOutcome};
use crate::plan::MethodPlan;
use crate::route::RouteMatch;
use crate::snapshot::Snapshot;
use crate::stream::encode::{Framing, TRAILER_MESSAGE, TRAILER_STATUS};
use crate::stream::request::{self as stream_request, MessageSource};
use crate::stream::response::{self as stream_response, Outcome, RenderFailure, Start};
use crate::stream::{
    self, FailedInput, Failure, ServerStream, StreamEnd, StreamError, Streamed, format,
};
use crate::trace::Trace;
use crate::transcode::{self, BodyRule, request::HttpInput};
use crate::upstream::{Deadline, MessageStream, StreamBody, StreamRequest};

/// One streaming request, authenticated.
pub(super) struct Call<'a> {
    pub snapshot: &'a Arc<Snapshot>,
    pub streams: &'a StreamMetrics,
    pub ending: &'a tokio::sync::watch::Sender<bool>,
    pub plan: &'a MethodPlan,
    pub policy: &'a stream::Policy,
    pub found: &'a RouteMatch,
    pub parts: &'a Parts,
    pub identity: &'a Identity,
    pub request_id: &'a HeaderValue,
    pub deadline: Deadline,
    pub trace: &'a Trace,
}

impl Call<'_> {
    /// Serves the request; `slots` (its admission and upstream call slot)
    /// are held until the stream ends, not just until its head is sent: a
    /// stream is a call in flight for as long as it lasts.
    pub(super) async fn serve(
        self,
        body: Body,
        slots: Box<dyn std::any::Any + Send>,
        observed: &mut Observed,
    ) -> Result<Response, GatewayError> {
        let framing = self.framing()?;
        let (request_body, failed_input) = self.request_body(body, observed).await?;
        let upstream = &self.snapshot.upstreams[self.plan.upstream.upstream];
        let request = StreamRequest {
            path: self.plan.upstream.grpc_path.clone(),
            body: request_body,
            metadata: self.upstream_metadata(),
        };
        let called = Instant::now();
        let opened = upstream
            .open(request, &self.plan.upstream, self.deadline)
            .await;
        observed.upstream = Some(called.elapsed());
        let mut messages = opened.map_err(|e| self.failed(&failed_input, Failure::Call(e)))?;
        observed.endpoint = Some(messages.endpoint().clone());
        let Some(framing) = framing else {
            return self.single_answer(messages, &failed_input, called).await;
        };
        let raw = framing == Framing::Raw;
        let ending = self.ending.subscribe();
        let start = stream_response::start(
            &mut messages,
            self.policy,
            raw,
            self.deadline.instant(),
            ending.clone(),
        )
        .await
        .map_err(|failure| self.failed(&failed_input, failure))?;
        observed.upstream = Some(called.elapsed());
        let content_type = match (&start, framing) {
            (Start::Message(first), Framing::Raw) => self.http_body_type(first),
            (_, Framing::Raw) => HeaderValue::from_static("application/octet-stream"),
            (_, Framing::Json(format)) => format.content_type(),
        };
        let mut headers = HeaderMap::new();
        metadata::downstream(
            &[messages.headers()],
            &self.snapshot.settings.forwarding.response,
            &mut headers,
        );
        let stream = ServerStream {
            messages,
            transcode: self.plan.transcode.clone(),
            policy: self.policy.clone(),
            framing,
            deadline: self.deadline.instant(),
            start,
            render: self.render(),
            on_end: self.on_end(slots),
            ending,
        };
        Ok(streamed(
            Body::new(stream.into_body()),
            headers,
            content_type,
            framing,
            called,
        ))
    }

    /// The metadata the upstream call carries: the forwarded headers, the
    /// caller's identity and the trace context.
    pub(super) fn upstream_metadata(&self) -> HeaderMap {
        let mut metadata = metadata::upstream(
            self.parts,
            &self.snapshot.settings.forwarding,
            self.request_id,
            self.identity,
            self.plan.auth.forward_authorization,
        );
        self.trace.propagate(&mut metadata);
        metadata
    }

    /// How the answer is framed: `None` for a single response message, raw
    /// bytes for `google.api.HttpBody`, else the negotiated JSON format.
    fn framing(&self) -> Result<Option<Framing>, StreamError> {
        if !self.policy.server_streaming {
            return Ok(None);
        }
        if self.plan.transcode.answers_http_body() {
            return Ok(Some(Framing::Raw));
        }
        let accept = self.parts.headers.get(header::ACCEPT);
        format::negotiate(accept, self.policy.format).map(|f| Some(Framing::Json(f)))
    }

    /// The upstream request: the client's stream of messages, or the one
    /// message a server-streaming call starts from.
    async fn request_body(
        &self,
        body: Body,
        observed: &mut Observed,
    ) -> Result<(StreamBody, FailedInput), GatewayError> {
        let settings = &self.snapshot.settings;
        let content_type = self.parts.headers.get(header::CONTENT_TYPE);
        if self.policy.client_streaming {
            if matches!(self.plan.transcode.body, BodyRule::None) {
                return Err(StreamError::WebSocketOnly.into());
            }
            if !self.plan.transcode.takes_http_body() {
                stream_request::check_content_type(content_type)?;
            }
            let source = MessageSource {
                plan: self.plan.transcode.clone(),
                captures: self.found.captures.clone(),
                query: self.parts.uri.query().map(str::to_string),
                content_type: content_type.cloned(),
                max_message_bytes: settings.limits.max_body_bytes,
                max_json_depth: settings.limits.max_json_depth,
            };
            let (messages, failed) = stream::messages(body, source);
            return Ok((StreamBody::Messages(messages), failed));
        }
        let body = settings
            .limits
            .read_body(body, &self.parts.headers, self.deadline)
            .await
            .map_err(|e| match e {
                LimitError::BodyTimeout => deadline_exceeded(self.deadline),
                other => other.into(),
            })?;
        observed.request_bytes = body.len() as u64;
        let framed = transcode::request(
            &self.plan.transcode,
            HttpInput {
                captures: &self.found.captures,
                query: self.parts.uri.query(),
                content_type,
                body,
                max_json_depth: settings.limits.max_json_depth,
                multipart: Some(transcode::MultipartLimits {
                    max_part_bytes: settings.limits.max_multipart_part_bytes,
                    max_parts: settings.limits.max_multipart_parts,
                }),
            },
        )?;
        Ok((StreamBody::One(framed), FailedInput::default()))
    }

    /// A client stream's one response message, answered like a unary call's.
    async fn single_answer(
        &self,
        mut messages: MessageStream,
        failed_input: &FailedInput,
        called: Instant,
    ) -> Result<Response, GatewayError> {
        let read = async {
            let message = messages.message().await?;
            let end = messages.message().await?;
            Ok((message, end))
        };
        let read = tokio::time::timeout_at(self.deadline.instant(), read)
            .await
            .unwrap_or(Err(crate::upstream::CallError::DeadlineExceeded));
        let (message, end) = read.map_err(|e| self.failed(failed_input, Failure::Call(e)))?;
        let (Some(message), None) = (message, end) else {
            return Err(GatewayError::Transport(
                crate::upstream::TransportError::BadResponse {
                    upstream: self.plan.upstream.upstream_name.to_string(),
                    reason: "a client-streaming call must answer exactly one message".into(),
                },
            ));
        };
        let reply = transcode::response(&self.plan.transcode, message)?;
        let mut headers = HeaderMap::new();
        metadata::downstream(
            &[messages.headers(), messages.trailers()],
            &self.snapshot.settings.forwarding.response,
            &mut headers,
        );
        let mut response = Response::new(Body::from(reply.body));
        *response.headers_mut() = headers;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, reply.content_type);
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(
            SERVER_TIMING,
            super::server_timing("upstream", called.elapsed()),
        );
        Ok(response)
    }

    /// A failure before the head: the client's bad input if its stream
    /// broke the call, else the failure itself.
    fn failed(&self, failed_input: &FailedInput, failure: Failure) -> GatewayError {
        if let Some(input) = failed_input.take() {
            return input.into();
        }
        failure_error(self.snapshot, self.plan, self.deadline, failure)
    }

    /// The content type of an HttpBody stream, from its first message.
    fn http_body_type(&self, first: &Bytes) -> HeaderValue {
        transcode::response(&self.plan.transcode, first.clone()).map_or(
            HeaderValue::from_static("application/octet-stream"),
            |reply| reply.content_type,
        )
    }

    fn render(&self) -> RenderFailure {
        let snapshot = self.snapshot.clone();
        let binding = self.found.binding;
        let deadline = self.deadline;
        Arc::new(move |failure: Failure| {
            let plan = snapshot.plans.get(binding);
            failure_error(&snapshot, plan, deadline, failure).body()
        })
    }

    fn on_end(&self, slots: Box<dyn std::any::Any + Send>) -> Box<dyn FnOnce(StreamEnd) + Send> {
        let request_id = self.request_id.clone();
        let route = self.plan.template.to_string();
        let open = self.streams.opened(&route, "http");
        Box::new(move |end: StreamEnd| {
            let (outcome, counted) = match &end.outcome {
                Outcome::Ok => ("ok".to_string(), StreamOutcome::Ok),
                Outcome::ClientGone => ("client_gone".to_string(), StreamOutcome::ClientGone),
                Outcome::Failed(status) => (status.to_string(), StreamOutcome::Failed),
            };
            open.ended(counted, end.messages);
            drop(slots);
            tracing::info!(
                target: "protogate::access",
                request_id = request_id.to_str().unwrap_or_default(),
                route,
                messages = end.messages,
                response_bytes = end.bytes,
                stream_us = end.duration.as_micros() as u64,
                outcome,
                "stream ended"
            );
        })
    }
}

/// A failure as the gateway answers it.
pub(super) fn failure_error(
    snapshot: &Snapshot,
    plan: &MethodPlan,
    deadline: Deadline,
    failure: Failure,
) -> GatewayError {
    match failure {
        Failure::Call(error) => call_failed(snapshot, plan, deadline, error),
        Failure::Transcode(error) => error.into(),
        Failure::Idle(idle) => StreamError::IdleTimeout { idle }.into(),
        Failure::ShuttingDown => StreamError::ShuttingDown.into(),
    }
}

/// The head of a streamed answer: never stored by any cache, not
/// buffered by proxies that honour `X-Accel-Buffering`, trailers announced
/// for a JSON array.
fn streamed(
    body: Body,
    mut headers: HeaderMap,
    content_type: HeaderValue,
    framing: Framing,
    called: Instant,
) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        http::HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    headers.insert(
        SERVER_TIMING,
        super::server_timing("upstream-first", called.elapsed()),
    );
    if framing == Framing::Json(stream::Format::JsonArray) {
        let announced = format!("{TRAILER_STATUS}, {TRAILER_MESSAGE}");
        if let Ok(value) = HeaderValue::from_str(&announced) {
            headers.insert(header::TRAILER, value);
        }
    }
    *response.headers_mut() = headers;
    response.extensions_mut().insert(Streamed);
    response
}
