//! The `ETag`, `Vary` and `Content-Encoding` of answers without a body for
//! the compression layer to judge: a HEAD answer, or a 304.
//!
//! Such an answer must carry the validators and `Vary` of the 200 GET it
//! stands for (RFC 9110 §9.3.2, §15.4.5), and those depend on the coding
//! that 200 would get. So the same compression layer is asked about a body
//! of the 200's length and type, and its answer applied. Every other
//! request passes through untouched, with no allocation.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use futures_util::future::{BoxFuture, Either};
use http::header::{
    ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, IF_NONE_MATCH, VARY,
};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body::{Frame, SizeHint};
use tower::{Layer, Service, ServiceExt as _};
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::Predicate;

/// Gives bodyless answers the representation headers `compression` would
/// give their 200 (see the module docs).
#[derive(Clone)]
pub(super) struct BodylessLayer<P> {
    compression: CompressionLayer<P>,
}

impl<P> BodylessLayer<P> {
    pub(super) fn new(compression: CompressionLayer<P>) -> Self {
        BodylessLayer { compression }
    }
}

impl<S, P: Clone> Layer<S> for BodylessLayer<P> {
    type Service = Bodyless<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Bodyless {
            inner,
            compression: self.compression.clone(),
        }
    }
}

/// The service [`BodylessLayer`] makes.
#[derive(Clone)]
pub(super) struct Bodyless<S, P> {
    inner: S,
    compression: CompressionLayer<P>,
}

impl<S, P> Service<Request> for Bodyless<S, P>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
    P: Predicate + Send + Sync + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future, BoxFuture<'static, Result<Response, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let head = request.method() == Method::HEAD;
        // A 304 answers only an If-None-Match (the gateway keeps no dates
        // to compare), so a request that is neither needs nothing here.
        if !head && !request.headers().contains_key(IF_NONE_MATCH) {
            return Either::Left(self.inner.call(request));
        }
        let accept: Vec<HeaderValue> = request
            .headers()
            .get_all(ACCEPT_ENCODING)
            .iter()
            .cloned()
            .collect();
        let answer = self.inner.call(request);
        let compression = self.compression.clone();
        Either::Right(Box::pin(async move {
            let Ok(mut response) = answer.await;
            represent(&mut response, head, accept, compression).await;
            Ok(response)
        }))
    }
}

/// Applies to a bodyless `response` what `compression` says of the 200 it
/// stands for, given the client's `accept` (Accept-Encoding values).
async fn represent<P>(
    response: &mut Response,
    head: bool,
    accept: Vec<HeaderValue>,
    compression: CompressionLayer<P>,
) where
    P: Predicate + Send + Sync + 'static,
{
    let status = response.status();
    let headers = response.headers_mut();
    let (length, content_type) = match status {
        StatusCode::NOT_MODIFIED => match crate::cache::take_representation(headers) {
            Some(representation) => representation,
            None => return,
        },
        StatusCode::OK if head && !headers.contains_key(CONTENT_ENCODING) => {
            let Some(length) = headers
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
            else {
                return;
            };
            (length, headers.get(CONTENT_TYPE).cloned())
        }
        _ => return,
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
        return;
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
            super::suffix_etag(headers, coding);
        }
    }
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
