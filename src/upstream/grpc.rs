//! One attempt of a unary gRPC call on a leased connection: frame the
//! message, send it with the remaining deadline, read exactly one message
//! and the status.
//!
//! The framing is done here rather than through tonic's client so that each
//! failure keeps its layer: a transport failure (no connection, reset,
//! GOAWAY), a protocol failure (not gRPC, bad frame, oversize message) and a
//! gRPC status from the service come back as different errors. The status,
//! message and details are read by [`super::status`], which never trusts them.

use std::error::Error;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::uri::{Authority, Scheme};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Limited};
use hyper::client::conn::TrySendError;

use super::cancel::{AnswerBody, IfAbandoned, PendingAnswer};
use super::connection::{MAX_METADATA_BYTES, UpstreamBody};
use super::deadline::Deadline;
use super::endpoint::Lease;
use super::error::{CallError, TransportError};
use super::status::{self, StatusError};
use crate::headers::{
    CONTENT_TYPE_GRPC, GRPC_PREVIOUS_RPC_ATTEMPTS, GRPC_STATUS, GRPC_TIMEOUT, TE, TE_TRAILERS,
    TRACEPARENT, X_REQUEST_ID,
};

/// Length of the gRPC message prefix: 1 flag byte + 4 length bytes.
pub(super) const PREFIX_LEN: usize = 5;

/// An encoded request ready to send.
#[derive(Debug)]
pub struct UnaryRequest {
    /// `/package.Service/Method`.
    pub path: http::uri::PathAndQuery,
    /// The framed message (see [`frame`]).
    pub framed: Bytes,
    /// Metadata to send (already filtered).
    pub metadata: HeaderMap,
    /// Whether the call may be left to finish if its caller stops waiting.
    pub if_abandoned: IfAbandoned,
}

/// A successful (grpc-status 0) answer.
#[derive(Debug)]
pub struct UnaryReply {
    /// The one response message, unframed.
    pub message: Bytes,
    /// Response headers.
    pub headers: HeaderMap,
    /// Trailers.
    pub trailers: HeaderMap,
    /// The endpoint that answered, for the access log.
    pub endpoint: Option<Authority>,
    /// Attempts made before the one that answered.
    pub retries: u32,
}

/// Frames an encoded message: uncompressed flag, big-endian length, bytes.
pub fn frame(encode: impl FnOnce(&mut BytesMut), size_hint: usize) -> Bytes {
    let mut buf = BytesMut::with_capacity(PREFIX_LEN + size_hint);
    buf.put_bytes(0, PREFIX_LEN);
    encode(&mut buf);
    let len = u32::try_from(buf.len() - PREFIX_LEN).unwrap_or(u32::MAX);
    buf[1..PREFIX_LEN].copy_from_slice(&len.to_be_bytes());
    buf.freeze()
}

/// Frames a message whose encoder may give up (`None`), as [`frame`].
pub fn try_frame(
    encode: impl FnOnce(&mut BytesMut) -> Option<()>,
    size_hint: usize,
) -> Option<Bytes> {
    let mut buf = BytesMut::with_capacity(PREFIX_LEN + size_hint);
    buf.put_bytes(0, PREFIX_LEN);
    encode(&mut buf)?;
    let len = u32::try_from(buf.len() - PREFIX_LEN).ok()?;
    buf[1..PREFIX_LEN].copy_from_slice(&len.to_be_bytes());
    Some(buf.freeze())
}

/// How one attempt failed, and whether the upstream provably did not
/// process it (so that trying again cannot repeat its work).
#[derive(Debug)]
pub struct Failed {
    /// What went wrong.
    pub error: CallError,
    /// Never sent, refused with REFUSED_STREAM, or above a GOAWAY's last
    /// stream id.
    pub unprocessed: bool,
}

impl Failed {
    /// The error, in words, for logs.
    pub fn describe(&self) -> String {
        match &self.error {
            CallError::Status { status, .. } => {
                format!("status {:?}: {}", status.code(), status.message())
            }
            CallError::Transport(e) => e.to_string(),
            CallError::DeadlineExceeded => "deadline exceeded".to_string(),
        }
    }
}

impl UnaryRequest {
    /// The HTTP/2 request for one attempt, carrying the budget remaining
    /// now as `grpc-timeout` and, on a retry, `grpc-previous-rpc-attempts`.
    pub fn to_http(
        &self,
        scheme: &Scheme,
        authority: &Authority,
        deadline: Deadline,
        previous_attempts: u32,
    ) -> Result<Request<UpstreamBody>, Failed> {
        let head = CallHead {
            path: &self.path,
            metadata: &self.metadata,
            scheme,
            authority,
            deadline,
            previous_attempts,
        };
        head.request(UpstreamBody::new(self.framed.clone()))
    }
}

/// Metadata whose value is new on every call; with `grpc-timeout` it goes
/// out never-indexed ([`crate::headers::per_message`]).
const PER_CALL: [http::HeaderName; 2] = [X_REQUEST_ID, TRACEPARENT];

/// What every gRPC request's head carries, unary or streaming.
pub(super) struct CallHead<'a> {
    pub(super) path: &'a http::uri::PathAndQuery,
    pub(super) metadata: &'a HeaderMap,
    pub(super) scheme: &'a Scheme,
    pub(super) authority: &'a Authority,
    pub(super) deadline: Deadline,
    pub(super) previous_attempts: u32,
}

impl CallHead<'_> {
    /// The HTTP/2 request with `body`, carrying the budget remaining now as
    /// `grpc-timeout` and, on a retry, `grpc-previous-rpc-attempts`.
    pub(super) fn request(&self, body: UpstreamBody) -> Result<Request<UpstreamBody>, Failed> {
        let timeout = self.deadline.to_grpc_timeout().ok_or(Failed {
            error: CallError::DeadlineExceeded,
            unprocessed: true,
        })?;
        let timeout = crate::headers::per_message(timeout);
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(self.path.clone())
            .build()
            .map_err(|e| Failed {
                error: CallError::Transport(bad_response(
                    self.authority.as_str(),
                    format!("cannot build request URI: {e}"),
                )),
                unprocessed: true,
            })?;
        let mut request = Request::new(body);
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        *request.version_mut() = http::Version::HTTP_2;
        let headers = request.headers_mut();
        *headers = self.metadata.clone();
        for name in PER_CALL {
            if let Some(value) = headers.get_mut(name) {
                value.set_sensitive(true);
            }
        }
        headers.insert(header::CONTENT_TYPE, CONTENT_TYPE_GRPC);
        headers.insert(TE, TE_TRAILERS);
        headers.insert(GRPC_TIMEOUT, timeout);
        if self.previous_attempts > 0 {
            headers.insert(
                GRPC_PREVIOUS_RPC_ATTEMPTS,
                HeaderValue::from(self.previous_attempts),
            );
        }
        Ok(request)
    }
}

/// One attempt on a leased connection, bounded by `deadline`. Dropping the
/// returned future at the deadline resets the HTTP/2 stream, which the
/// upstream sees as a cancellation; dropping it before (the client left)
/// abandons the call, reset or left to finish as [`super::cancel`] says.
pub async fn attempt(
    lease: &mut Lease,
    upstream: &str,
    request: Request<UpstreamBody>,
    if_abandoned: IfAbandoned,
    deadline: Deadline,
    max_message_bytes: usize,
) -> Result<UnaryReply, Failed> {
    let call = async {
        let response = PendingAnswer::send(lease, request, deadline, if_abandoned)
            .await
            .map_err(|e| send_failed(e, upstream))?;
        read_reply(response, upstream, max_message_bytes)
            .await
            .map_err(|error| Failed {
                error,
                unprocessed: false,
            })
    };
    match tokio::time::timeout_at(deadline.instant(), call).await {
        Ok(result) => result,
        Err(_elapsed) => Err(Failed {
            error: CallError::DeadlineExceeded,
            unprocessed: false,
        }),
    }
}

/// Sends a request on the leased connection and waits for the response
/// head; a failure says whether the upstream provably did not process it.
pub(super) async fn send(
    lease: &mut Lease,
    upstream: &str,
    request: Request<UpstreamBody>,
) -> Result<http::Response<hyper::body::Incoming>, Failed> {
    (lease.sender.try_send_request(request).await).map_err(|e| send_failed(e, upstream))
}

/// A request that got no response head: whether the upstream provably did
/// not process it decides whether a retry is safe.
fn send_failed(mut e: TrySendError<Request<UpstreamBody>>, upstream: &str) -> Failed {
    let never_sent = e.take_message().is_some();
    let error = e.into_error();
    Failed {
        unprocessed: never_sent || refused_unprocessed(&error),
        error: CallError::Transport(exchange_failed(&error, upstream)),
    }
}

/// Whether the upstream refused the stream without processing it: it
/// reset it with REFUSED_STREAM, or its GOAWAY's last stream id is below
/// it (h2 fails exactly those streams with the remote GOAWAY; streams the
/// server had accepted and then lost fail with an I/O error instead).
fn refused_unprocessed(error: &hyper::Error) -> bool {
    h2_cause(error).is_some_and(|h2| {
        h2.is_remote()
            && (h2.is_go_away()
                || (h2.is_reset() && h2.reason() == Some(h2::Reason::REFUSED_STREAM)))
    })
}

/// Checks a response head is gRPC's: 200 and an `application/grpc`
/// content type. A trailers-only answer (the status in the headers, no
/// body) is then recognised by its `grpc-status` header.
pub(super) fn check_head(parts: &http::response::Parts, upstream: &str) -> Result<(), CallError> {
    let bad = |reason: String| CallError::Transport(bad_response(upstream, reason));
    if parts.status != StatusCode::OK {
        return Err(bad(format!(
            "HTTP status {} instead of 200 (not a gRPC server?)",
            parts.status
        )));
    }
    let is_grpc = parts
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"));
    if !is_grpc {
        return Err(bad("response content-type is not application/grpc".into()));
    }
    Ok(())
}

async fn read_reply(
    response: http::Response<AnswerBody<'_>>,
    upstream: &str,
    max_message_bytes: usize,
) -> Result<UnaryReply, CallError> {
    let (parts, mut body) = response.into_parts();
    let read = read_message(&parts, &mut body, upstream, max_message_bytes).await;
    // Read to its end or refused: nothing of it is left to run on.
    body.discard();
    let (message, trailers) = read?;
    Ok(UnaryReply {
        message,
        headers: parts.headers,
        trailers,
        endpoint: None,
        retries: 0,
    })
}

/// The one message and the trailers of an OK answer.
async fn read_message(
    parts: &http::response::Parts,
    body: &mut AnswerBody<'_>,
    upstream: &str,
    max_message_bytes: usize,
) -> Result<(Bytes, HeaderMap), CallError> {
    let bad = |reason: String| CallError::Transport(bad_response(upstream, reason));
    check_head(parts, upstream)?;
    // Trailers-only: the status is in the headers and there is no body (so
    // an OK status this way is a bad response: see `status_error`).
    if parts.headers.contains_key(GRPC_STATUS) {
        return Err(status_error(&parts.headers, HeaderMap::new(), upstream));
    }
    let collected = Limited::new(body, max_message_bytes + PREFIX_LEN)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                bad(format!(
                    "response message is larger than the limit of {max_message_bytes} bytes"
                ))
            } else {
                CallError::Transport(exchange_failed(e.as_ref(), upstream))
            }
        })?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let mut data = collected.to_bytes();
    if !trailers.contains_key(GRPC_STATUS) {
        return Err(bad("the response has no grpc-status trailer".into()));
    }
    if trailers.get(GRPC_STATUS).map(|v| v.as_bytes()) != Some(b"0") {
        return Err(status_error(&parts.headers, trailers, upstream));
    }
    let message = unframe(&mut data, max_message_bytes).map_err(bad)?;
    if !data.is_empty() {
        return Err(bad("a unary response carried more than one message".into()));
    }
    Ok((message, trailers))
}

/// Takes exactly one uncompressed message off the front of `data`.
fn unframe(data: &mut Bytes, max_message_bytes: usize) -> Result<Bytes, String> {
    if data.len() < PREFIX_LEN {
        return Err(if data.is_empty() {
            "an OK response carried no message".into()
        } else {
            "truncated gRPC frame".into()
        });
    }
    let compressed = data[0];
    let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
    match compressed {
        0 => {}
        // The gateway never advertises grpc-accept-encoding, so a
        // compressed message is a protocol violation.
        1 => return Err("compressed message although none was accepted".into()),
        flag => return Err(format!("invalid gRPC frame flag {flag}")),
    }
    if len > max_message_bytes {
        return Err(format!(
            "response message of {len} bytes is over the limit of {max_message_bytes}"
        ));
    }
    data.advance(PREFIX_LEN);
    if data.len() < len {
        return Err("truncated gRPC frame".into());
    }
    Ok(data.split_to(len))
}

fn status_error(headers: &HeaderMap, trailers: HeaderMap, upstream: &str) -> CallError {
    match final_status(headers, trailers, upstream) {
        // A unary call must carry one message; an OK status without one
        // (trailers-only, or any spelling of 0) is not a valid answer.
        Ok(_) => CallError::Transport(bad_response(
            upstream,
            "an OK response carried no message".into(),
        )),
        Err(error) => error,
    }
}

/// A call's final status from its headers and trailers: the merged
/// metadata when it is OK, the status (or why it is unreadable) otherwise.
pub(super) fn final_status(
    headers: &HeaderMap,
    trailers: HeaderMap,
    upstream: &str,
) -> Result<HeaderMap, CallError> {
    let mut metadata = headers.clone();
    metadata.extend(trailers);
    match status::read(&metadata) {
        Ok(status) if status.code() == tonic::Code::Ok => Ok(metadata),
        Ok(status) => Err(CallError::Status { status, metadata }),
        Err(StatusError::BadDetails {
            code,
            message,
            reason,
        }) => Err(CallError::Transport(TransportError::BadStatusDetails {
            upstream: upstream.to_string(),
            code,
            message,
            reason,
        })),
        Err(unreadable) => Err(CallError::Transport(bad_response(
            upstream,
            unreadable.to_string(),
        ))),
    }
}

/// Why an HTTP/2 exchange with the upstream failed: a violation the
/// gateway's HTTP/2 layer detected in what the upstream sent is the
/// upstream's bad response (502), anything else a lost connection (503).
pub(super) fn exchange_failed(error: &(dyn Error + 'static), upstream: &str) -> TransportError {
    let reason = error_chain(error);
    let upstream = upstream.to_string();
    match h2_cause(error) {
        Some(h2) if is_oversize_header_block(h2) => TransportError::MetadataTooLarge {
            upstream,
            limit: MAX_METADATA_BYTES,
            reason,
        },
        Some(h2) if h2.is_library() => TransportError::BadResponse { upstream, reason },
        _ => TransportError::ConnectionLost { upstream, reason },
    }
}

/// Whether h2 refused a header block (headers or trailers) for its size:
/// over the ignorable limit (COMPRESSION_ERROR), or too many CONTINUATION
/// frames or bytes for one (ENHANCE_YOUR_CALM, told apart from h2's other
/// ENHANCE_YOUR_CALM causes only by its debug data).
fn is_oversize_header_block(h2: &h2::Error) -> bool {
    if !h2.is_library() {
        return false;
    }
    match h2.reason() {
        Some(h2::Reason::COMPRESSION_ERROR) => true,
        Some(h2::Reason::ENHANCE_YOUR_CALM) => {
            let text = h2.to_string();
            text.contains("too_many_continuations") || text.contains("header_list_way_too_large")
        }
        _ => false,
    }
}

fn h2_cause<'a>(error: &'a (dyn Error + 'static)) -> Option<&'a h2::Error> {
    std::iter::successors(Some(error), |&e| e.source()).find_map(|e| e.downcast_ref::<h2::Error>())
}

/// "outer: inner: ...", since hyper's own text ("http2 error") says little.
fn error_chain(error: &(dyn Error + 'static)) -> String {
    std::iter::successors(Some(error), |&e| e.source())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

pub(super) fn bad_response(upstream: &str, reason: String) -> TransportError {
    TransportError::BadResponse {
        upstream: upstream.to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let framed = frame(|b| b.put_slice(b"hello"), 5);
        assert_eq!(&framed[..5], &[0, 0, 0, 0, 5]);
        let mut data = framed;
        assert_eq!(unframe(&mut data, 100).as_deref(), Ok(&b"hello"[..]));
        assert!(data.is_empty());
    }

    #[test]
    fn values_new_on_every_call_are_never_indexed() {
        let mut metadata = HeaderMap::new();
        metadata.insert(X_REQUEST_ID, HeaderValue::from_static("4bf92f3577b34da6"));
        metadata.insert(
            TRACEPARENT,
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        metadata.insert(
            crate::headers::X_FORWARDED_PROTO,
            HeaderValue::from_static("http"),
        );
        let path = http::uri::PathAndQuery::from_static("/p.S/M");
        let authority = Authority::from_static("upstream:50051");
        let head = CallHead {
            path: &path,
            metadata: &metadata,
            scheme: &Scheme::HTTP,
            authority: &authority,
            deadline: Deadline::start(std::time::Duration::from_secs(5), None),
            previous_attempts: 0,
        };
        let request = head.request(UpstreamBody::new(Bytes::new())).expect("head");
        let headers = request.headers();
        for name in ["x-request-id", "traceparent", "grpc-timeout"] {
            assert!(headers[name].is_sensitive(), "{name} is never indexed");
        }
        for name in ["x-forwarded-proto", "content-type", "te"] {
            assert!(!headers[name].is_sensitive(), "{name} repeats: indexed");
        }
        assert!(
            !metadata[X_REQUEST_ID].is_sensitive(),
            "the caller's copy is untouched"
        );
    }

    #[test]
    fn rejects_bad_frames() {
        let mut truncated = Bytes::from_static(&[0, 0, 0, 0, 9, 1]);
        assert!(unframe(&mut truncated, 100).is_err());
        let mut compressed = Bytes::from_static(&[1, 0, 0, 0, 0]);
        assert!(unframe(&mut compressed, 100).is_err());
        let mut big = Bytes::from_static(&[0, 0, 0, 1, 0]);
        assert!(unframe(&mut big, 100).is_err());
    }
}
