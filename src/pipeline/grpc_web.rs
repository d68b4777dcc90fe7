//! A gRPC-Web call (`POST /package.Service/Method`): the same stages as a
//! REST call of the method's first binding — admission, head limits, its
//! auth policy, its deadline (a client's `grpc-timeout` capped by the
//! budget), the body limit, the upstream's pool, retries and call slots,
//! the forwarding rules — but the messages pass through as bytes, and the
//! status travels in a trailers frame at the end of the body. A failure
//! before the upstream answers is a trailers-only answer
//! ([`GatewayError::into_grpc_web`], chosen by `handle` from
//! [`Observed::grpc_web`]).

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};
use tokio::time::Instant;

use super::{Observed, call_failed, client_timeout, deadline_exceeded, read_body};
use crate::error::{GatewayError, http_status_for};
use crate::grpc_web::{self, Encoding, GrpcWebError, Trailers, WebContentType};
use crate::limits::Limits;
use crate::metadata;
use crate::route::BindingId;
use crate::snapshot::Snapshot;
use crate::stream::{StreamError, Streamed};
use crate::trace::Trace;
use crate::upstream::{
    CallError, Deadline, IfAbandoned, MessageStream, StreamBody, StreamRequest, UnaryRequest,
};

/// One gRPC-Web request, as the pipeline received it.
pub(super) struct WebCall<'a> {
    pub snapshot: &'a Arc<Snapshot>,
    pub ending: &'a tokio::sync::watch::Sender<bool>,
    pub content_type: WebContentType,
    pub request_id: &'a HeaderValue,
    pub received: Instant,
    pub trace: &'a Trace,
}

impl WebCall<'_> {
    /// Serves the call; an error is answered trailers-only by the caller.
    pub(super) async fn serve(
        self,
        parts: Parts,
        body: Body,
        observed: &mut Observed,
    ) -> Result<Response, GatewayError> {
        let snapshot = self.snapshot;
        let limits = &snapshot.settings.limits;
        let admitted = limits.admit()?;
        limits.check_head(&parts)?;
        let path = parts.uri.path();
        let binding = snapshot
            .plans
            .by_grpc_path(path)
            .ok_or_else(|| GrpcWebError::UnknownMethod { path: path.into() })?;
        let plan = snapshot.plans.get(binding);
        observed.binding = Some(binding);
        let call_slot = Limits::admit_call(&snapshot.upstreams[plan.upstream.upstream])?;
        let deadline = Deadline::started_at(
            self.received,
            plan.upstream.timeout,
            client_timeout(&parts.headers)?,
        );
        let identity = tokio::time::timeout_at(deadline.instant(), plan.auth.check(&parts))
            .await
            .map_err(|_| deadline_exceeded(deadline))??;
        observed.consumer = identity.consumer.clone().or(identity.subject.clone());
        let body = read_body(limits, body, &parts.headers, deadline).await?;
        observed.request_bytes = body.len() as u64;
        let frames = grpc_web::frames(body, self.content_type.encoding)?;
        let method = &plan.transcode.method;
        if !method.is_client_streaming() && frames.count != 1 {
            let method_kind = match method.is_server_streaming() {
                true => "a server-streaming",
                false => "a unary",
            };
            return Err(GrpcWebError::MessageCount {
                method_kind,
                count: frames.count,
            }
            .into());
        }
        let mut metadata = metadata::upstream(
            &parts,
            &snapshot.settings.forwarding,
            self.request_id,
            &identity,
            plan.auth.forward_authorization,
        );
        self.trace.propagate(&mut metadata);
        if method.is_client_streaming() || method.is_server_streaming() {
            let request = StreamRequest {
                path: plan.upstream.grpc_path.clone(),
                body: StreamBody::One(frames.framed),
                metadata,
            };
            let slots = Box::new((admitted, call_slot));
            return self
                .stream(binding, request, deadline, slots, observed)
                .await;
        }
        let request = UnaryRequest {
            path: plan.upstream.grpc_path.clone(),
            framed: frames.framed,
            metadata,
            if_abandoned: IfAbandoned::FollowBudget,
        };
        self.unary(binding, request, deadline, observed).await
    }

    /// A unary call, with the binding's retry policy; the answer is whole.
    async fn unary(
        &self,
        binding: BindingId,
        request: UnaryRequest,
        deadline: Deadline,
        observed: &mut Observed,
    ) -> Result<Response, GatewayError> {
        let (snapshot, plan) = (self.snapshot, self.snapshot.plans.get(binding));
        let allowlist = &snapshot.settings.forwarding.response;
        let encoding = self.content_type.encoding;
        let called = Instant::now();
        let reply = snapshot.upstreams[plan.upstream.upstream]
            .call(request, &plan.upstream, deadline)
            .await;
        observed.upstream = Some(called.elapsed());
        let (headers, body) = match reply {
            Ok(reply) => {
                observed.endpoint.clone_from(&reply.endpoint);
                observed.retries = reply.retries;
                let mut headers = HeaderMap::new();
                metadata::downstream(&[&reply.headers], allowlist, &mut headers);
                let trailers = Trailers::upstream(&reply.trailers, allowlist);
                let mut body = grpc_web::message_chunk(encoding, &reply.message).to_vec();
                body.extend_from_slice(&grpc_web::trailer_chunk(encoding, &trailers));
                (headers, Body::from(body))
            }
            Err(CallError::Status { status, metadata }) => {
                observed.answered_as = Some(http_status_for(status.code()));
                let trailers = Trailers::upstream(&metadata, allowlist);
                let body = grpc_web::trailer_chunk(encoding, &trailers);
                (HeaderMap::new(), Body::from(body))
            }
            Err(other) => return Err(call_failed(snapshot, plan, deadline, other)),
        };
        Ok(self.answer(headers, body))
    }

    /// A streaming call: the answer's head goes out once the upstream's
    /// has arrived, then each message as it is read, then the trailers.
    async fn stream(
        &self,
        binding: BindingId,
        request: StreamRequest,
        deadline: Deadline,
        slots: Box<dyn std::any::Any + Send>,
        observed: &mut Observed,
    ) -> Result<Response, GatewayError> {
        let (snapshot, plan) = (self.snapshot, self.snapshot.plans.get(binding));
        let allowlist = &snapshot.settings.forwarding.response;
        let called = Instant::now();
        let opened = snapshot.upstreams[plan.upstream.upstream]
            .open(request, &plan.upstream, deadline)
            .await;
        observed.upstream = Some(called.elapsed());
        let messages = match opened {
            Ok(messages) => messages,
            Err(CallError::Status { status, metadata }) => {
                observed.answered_as = Some(http_status_for(status.code()));
                let trailers = Trailers::upstream(&metadata, allowlist);
                let body = grpc_web::trailer_chunk(self.content_type.encoding, &trailers);
                return Ok(self.answer(HeaderMap::new(), Body::from(body)));
            }
            Err(other) => return Err(call_failed(snapshot, plan, deadline, other)),
        };
        observed.endpoint = Some(messages.endpoint().clone());
        let mut headers = HeaderMap::new();
        metadata::downstream(&[messages.headers()], allowlist, &mut headers);
        let stream = WebStream {
            messages,
            encoding: self.content_type.encoding,
            snapshot: self.snapshot.clone(),
            binding,
            deadline,
            ending: self.ending.subscribe(),
            _slots: slots,
            done: false,
        };
        let chunks = futures_util::stream::unfold(stream, WebStream::next_chunk);
        let mut response = self.answer(headers, Body::from_stream(chunks));
        response.extensions_mut().insert(Streamed);
        Ok(response)
    }

    /// The answer's head: 200, the request's content type, never stored.
    fn answer(&self, mut headers: HeaderMap, body: Body) -> Response {
        headers.insert(header::CONTENT_TYPE, self.content_type.answer.clone());
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(
            http::HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        );
        let mut response = Response::new(body);
        *response.status_mut() = StatusCode::OK;
        *response.headers_mut() = headers;
        response
    }
}

/// The body of a streamed answer. A message is read from the upstream
/// only when the client's connection has taken the previous chunk, so a
/// slow reader holds the upstream back through HTTP/2 flow control
/// instead of making the gateway buffer.
struct WebStream {
    messages: MessageStream,
    encoding: Encoding,
    snapshot: Arc<Snapshot>,
    binding: BindingId,
    deadline: Deadline,
    ending: tokio::sync::watch::Receiver<bool>,
    /// The admission and upstream call slots, held until the stream ends.
    _slots: Box<dyn std::any::Any + Send>,
    done: bool,
}

impl WebStream {
    async fn next_chunk(mut self) -> Option<(Result<Bytes, Infallible>, WebStream)> {
        if self.done {
            return None;
        }
        let next = tokio::select! {
            next = self.messages.message() => Some(next),
            () = tokio::time::sleep_until(self.deadline.instant()) => {
                Some(Err(CallError::DeadlineExceeded))
            }
            _ = self.ending.wait_for(|ending| *ending) => None,
        };
        let Some(next) = next else {
            // The listener stopped accepting: UNAVAILABLE, which clients
            // retry elsewhere, rather than a cut at the shutdown grace.
            self.done = true;
            let ending = GatewayError::from(StreamError::ShuttingDown).grpc_web_trailers();
            return Some((Ok(grpc_web::trailer_chunk(self.encoding, &ending)), self));
        };
        let allowlist = &self.snapshot.settings.forwarding.response;
        let trailers = match next {
            Ok(Some(message)) => {
                return Some((Ok(grpc_web::message_chunk(self.encoding, &message)), self));
            }
            Ok(None) => Trailers::upstream(self.messages.trailers(), allowlist),
            Err(CallError::Status { metadata, .. }) => Trailers::upstream(&metadata, allowlist),
            Err(other) => {
                let plan = self.snapshot.plans.get(self.binding);
                call_failed(&self.snapshot, plan, self.deadline, other).grpc_web_trailers()
            }
        };
        self.done = true;
        Some((Ok(grpc_web::trailer_chunk(self.encoding, &trailers)), self))
    }
}
