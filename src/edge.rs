//! The edge layers every request passes before the pipeline, outermost
//! first: CORS (preflights are answered here, never forwarded), the request
//! id and a panic turned into that request's 500, JSON bodies for errors
//! raised by the layers below, the coding-dependent `ETag` and
//! `Vary` for bodiless answers (HEAD, 304), response compression per
//! Accept-Encoding, request decompression (so the body limit counts
//! decompressed bytes), then the pipeline, which owns routing.
//!
//! These layers follow the current snapshot: the pipeline's router rebuilds
//! them from the new [`EdgePolicy`] after a reload, so `[cors]` and
//! `[compression]` changes need no restart.

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::FutureExt as _;
use http::header::{
    ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, ETAG, IF_NONE_MATCH, VARY,
};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body::{Frame, SizeHint};
use tower::util::{BoxCloneSyncService, Either};
use tower::{Layer as _, Service, ServiceBuilder, ServiceExt as _};
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tower_http::decompression::{DecompressionBody, RequestDecompressionLayer};

use crate::error::GatewayError;
use crate::headers::X_REQUEST_ID;

pub mod cors;

pub use cors::Cors;

/// The edge layers' settings, compiled from `[cors]` and `[compression]`.
#[derive(Debug, Clone, Default)]
pub struct EdgePolicy {
    /// CORS, when `[cors]` is present.
    pub cors: Option<Cors>,
    /// Response compression, unless `[compression] enabled = false`.
    pub compression: Option<Compression>,
    /// gRPC-Web calls are served (`[grpc_web] enabled`): CORS then also
    /// allows and exposes the headers gRPC-Web clients use.
    pub grpc_web: bool,
}

/// Response compression settings.
#[derive(Debug, Clone)]
pub struct Compression {
    /// Smallest body worth compressing.
    pub min_bytes: u16,
}

/// The edge layers around the pipeline, as one service: boxed once, so a
/// request pays one allocation for the stack rather than one per layer (as
/// an axum `Router::layer` stack would).
pub type EdgeService = BoxCloneSyncService<Request, Response, Infallible>;

/// Wraps `pipeline` in the edge layers, per `policy`, outermost first:
/// CORS, panics, last touches, bodyless representations, compression,
/// request decompression.
pub fn layers<S>(pipeline: S, policy: &EdgePolicy) -> EdgeService
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    let decompressing = ServiceBuilder::new()
        .layer(RequestDecompressionLayer::new())
        .map_request(|request: http::Request<DecompressionBody<Body>>| request.map(Body::new))
        .service(pipeline)
        .map_response(IntoResponse::into_response);
    let compressing = match &policy.compression {
        Some(compression) => {
            let layer = compression_layer(compression);
            Either::Left(
                ServiceBuilder::new()
                    .layer(axum::middleware::from_fn_with_state(
                        layer.clone(),
                        bodyless_representation,
                    ))
                    .layer(layer)
                    .service(decompressing),
            )
        }
        None => Either::Right(decompressing),
    };
    let contained =
        axum::middleware::from_fn(contain_panics).layer(compressing.map_response(finish));
    match &policy.cors {
        Some(cors) => BoxCloneSyncService::new(
            ServiceBuilder::new()
                .map_response(cors::strip_for_other_origins)
                .layer(cors.layer(policy.grpc_web))
                .service(contained),
        ),
        None => BoxCloneSyncService::new(contained),
    }
}

/// Longest accepted client-supplied `x-request-id`.
const MAX_REQUEST_ID_LEN: usize = 128;

/// The client's request id if it is sane, else a fresh random one.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(id) = headers.get(X_REQUEST_ID)
        && !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id.as_bytes().iter().all(|b| b.is_ascii_graphic())
    {
        return id.clone();
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bits: u128 = rand::random();
    let mut text = [0u8; 32];
    for (i, digit) in text.iter_mut().enumerate() {
        *digit = HEX[((bits >> (124 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&text).unwrap_or(HeaderValue::from_static("0"))
}

/// A panic while serving one request becomes that request's 500 (JSON
/// google.rpc.Status, details only in the log, with the request id) instead
/// of a dropped connection. The request id is fixed here, before anything
/// can panic, so the log line, the answer and the upstream metadata agree.
async fn contain_panics(mut request: Request, next: Next) -> Response {
    let request_id = request_id(request.headers());
    request
        .headers_mut()
        .insert(X_REQUEST_ID, request_id.clone());
    // The URI is reference-counted: kept for the log line of a panic
    // without copying the path on every request.
    let (method, uri) = (request.method().clone(), request.uri().clone());
    match AssertUnwindSafe(next.run(request)).catch_unwind().await {
        Ok(response) => response,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(request_id = ?request_id, %method, path = uri.path(), panic = %what, "request handler panicked");
            let mut response = GatewayError::Internal(what).into_response();
            response.headers_mut().insert(X_REQUEST_ID, request_id);
            response
        }
    }
}

/// Last touches on every answer leaving the gateway.
fn finish(response: Response) -> Response {
    let mut response = crate::error::edge_layer_error(response);
    response.headers_mut().remove(crate::cache::REPRESENTATION);
    tag_content_coding(&mut response);
    response
}

/// A HEAD answer or a 304 has no body for the compression layer to judge,
/// yet must carry the `ETag` and `Vary` of the 200 GET it stands for (RFC
/// 9110 §9.3.2, §15.4.5), which depend on the coding that 200 would get.
/// Asks the same compression layer about a body of the 200's length and
/// type, and applies its answer: `Vary: accept-encoding`, the coding's
/// `ETag` suffix and, for HEAD, `Content-Encoding` (without a length).
async fn bodyless_representation<P>(
    State(compression): State<CompressionLayer<P>>,
    request: Request,
    next: Next,
) -> Response
where
    P: Predicate + Send + Sync + 'static,
{
    let head = request.method() == Method::HEAD;
    // Only a HEAD, or a GET that may become a 304, needs the probe below;
    // others pass through without copying their Accept-Encoding.
    let probe_later = head || request.headers().contains_key(IF_NONE_MATCH);
    let accept: Vec<HeaderValue> = match probe_later {
        true => request
            .headers()
            .get_all(ACCEPT_ENCODING)
            .iter()
            .cloned()
            .collect(),
        false => Vec::new(),
    };
    let mut response = next.run(request).await;
    let status = response.status();
    let headers = response.headers_mut();
    let (length, content_type) = match status {
        StatusCode::NOT_MODIFIED => match crate::cache::take_representation(headers) {
            Some(representation) => representation,
            None => return response,
        },
        StatusCode::OK if head && !headers.contains_key(CONTENT_ENCODING) => {
            let Some(length) = headers
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
            else {
                return response;
            };
            (length, headers.get(CONTENT_TYPE).cloned())
        }
        _ => return response,
    };
    let would_be = |_: http::Request<()>| {
        let mut answer = http::Response::new(Announced(length));
        answer.headers_mut().insert(CONTENT_LENGTH, length.into());
        if let Some(content_type) = &content_type {
            answer
                .headers_mut()
                .insert(CONTENT_TYPE, content_type.clone());
        }
        std::future::ready(Ok::<_, Infallible>(answer))
    };
    let mut probe = http::Request::new(());
    for value in accept {
        probe.headers_mut().append(ACCEPT_ENCODING, value);
    }
    let Ok(probed) = compression
        .layer(tower::service_fn(would_be))
        .oneshot(probe)
        .await;
    if probed.status() != StatusCode::OK {
        return response;
    }
    let headers = response.headers_mut();
    if varies_on_accept_encoding(probed.headers()) && !varies_on_accept_encoding(headers) {
        headers.append(VARY, HeaderValue::from(ACCEPT_ENCODING));
    }
    if let Some(coding) = probed.headers().get(CONTENT_ENCODING) {
        if head {
            // `finish` gives the ETag the coding's suffix, as for GET.
            headers.insert(CONTENT_ENCODING, coding.clone());
            headers.remove(CONTENT_LENGTH);
        } else if let Ok(coding) = coding.to_str() {
            suffix_etag(headers, coding);
        }
    }
    response
}

fn varies_on_accept_encoding(headers: &HeaderMap) -> bool {
    headers.get_all(VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("accept-encoding") || t.trim() == "*")
        })
    })
}

/// A body that announces `len` bytes and holds none: what the compression
/// predicates judge a HEAD or 304 answer's 200 by.
struct Announced(u64);

impl http_body::Body for Announced {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(None)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0)
    }
}

/// A strong ETag names one representation: once compressed, the bytes
/// differ, so the tag gets the coding as a suffix (`"abc-gzip"`), which
/// If-None-Match still matches against the identity tag.
fn tag_content_coding(response: &mut Response) {
    let headers = response.headers_mut();
    let Some(coding) = headers.get(CONTENT_ENCODING).cloned() else {
        return;
    };
    if let Ok(coding) = coding.to_str() {
        suffix_etag(headers, coding);
    }
}

/// `"abc"` → `"abc-gzip"`; weak tags are left alone.
fn suffix_etag(headers: &mut HeaderMap, coding: &str) {
    let Some(tag) = headers.get(ETAG).and_then(|t| t.to_str().ok()) else {
        return;
    };
    if tag.starts_with("W/") || !tag.ends_with('"') {
        return;
    }
    let tagged = format!("{}-{coding}\"", &tag[..tag.len() - 1]);
    if let Ok(value) = HeaderValue::from_str(&tagged) {
        headers.insert(ETAG, value);
    }
}

fn compression_layer(compression: &Compression) -> CompressionLayer<impl Predicate + use<>> {
    // Already-compressed formats gain nothing and cost CPU.
    let predicate = SizeAbove::new(u64::from(compression.min_bytes))
        .and(NotForContentType::GRPC)
        .and(NotForContentType::IMAGES)
        .and(NotForContentType::SSE)
        .and(NotForContentType::const_new("application/zip"))
        .and(NotForContentType::const_new("application/gzip"))
        .and(NotForContentType::const_new("application/zstd"))
        .and(NotForContentType::const_new("video/"))
        .and(NotForContentType::const_new("audio/"))
        .and(NotForContentType::const_new("font/woff"))
        // A stream's messages must reach the client as they are written.
        .and(|_, _, _: &HeaderMap, extensions: &http::Extensions| {
            extensions.get::<crate::stream::Streamed>().is_none()
        });
    CompressionLayer::new()
        .gzip(true)
        .br(true)
        .zstd(true)
        .compress_when(Shared(Arc::new(predicate)))
}

/// A predicate behind one reference count. tower-http clones the predicate
/// for every response; cloning and dropping the chain above took about 2%
/// of a cache hit's CPU samples (docs/performance.md).
#[derive(Clone)]
struct Shared<P>(Arc<P>);

impl<P: Predicate> Predicate for Shared<P> {
    fn should_compress<B: http_body::Body>(&self, response: &http::Response<B>) -> bool {
        self.0.should_compress(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_request_ids_are_replaced() {
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_static("has space"));
        assert_ne!(request_id(&h), "has space");
        h.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
    }
}
