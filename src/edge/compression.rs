//! Response compression per Accept-Encoding: tower-http's layer, whose
//! answer is handed on as the body it was unless it was compressed.
//!
//! tower-http's body type holds every coder's state inline (5.8 KB), so
//! boxing every answer into it, as `Body::new` does, copied and allocated
//! that much per request even when nothing was compressed: most requests,
//! since wrk, curl and gRPC-Web clients send no Accept-Encoding and small
//! answers are never compressed.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http::HeaderMap;
use http::header::CONTENT_ENCODING;
use tower::util::MapResponse;
use tower::util::future::MapResponseFuture;
use tower::{Layer, Service};
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tower_http::compression::{CompressionBody, CompressionLayer};

use super::Compression;

/// The compression layer for `compression`'s settings.
pub(super) fn layer(
    compression: &Compression,
) -> CompressionLayer<impl Predicate + Send + Sync + use<>> {
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

/// tower-http's compression, answering with the body it was given unless
/// it compressed it (see the module docs).
#[derive(Clone)]
pub(super) struct CompressLayer<P>(pub(super) CompressionLayer<P>);

impl<S, P: Predicate> Layer<S> for CompressLayer<P> {
    type Service = Compress<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Compress {
            inner: self
                .0
                .layer(MapResponse::new(inner, mark_encoded as MarkEncoded)),
        }
    }
}

/// The service [`CompressLayer`] makes.
#[derive(Clone)]
pub(super) struct Compress<S, P> {
    inner: tower_http::compression::Compression<MapResponse<S, MarkEncoded>, P>,
}

/// [`mark_encoded`], as the type of the service below the layer.
type MarkEncoded = fn(Response) -> Response;

impl<S, P> Service<Request> for Compress<S, P>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    P: Predicate,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Unwrapped<
        tower_http::compression::ResponseFuture<MapResponseFuture<S::Future, MarkEncoded>, P>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        Unwrapped {
            answer: self.inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer of [`Compress`].
    pub(super) struct Unwrapped<F> {
        #[pin]
        answer: F,
    }
}

impl<F> Future for Unwrapped<F>
where
    F: Future<Output = Result<http::Response<CompressionBody<Body>>, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Matched by reference: binding the answer by value copies it.
        let mut polled = self.project().answer.poll(cx);
        let Poll::Ready(Ok(answer)) = &mut polled else {
            return Poll::Pending;
        };
        Poll::Ready(Ok(unwrap_identity(answer)))
    }
}

/// Marks an answer that had a `Content-Encoding` before the compression
/// layer saw it, which that layer leaves as it is.
#[derive(Debug, Clone, Copy)]
struct EncodedBefore;

/// Below the compression layer: marks an answer it will not recompress.
/// The answer here is a plain `Response<Body>`, cheap to move.
fn mark_encoded(mut response: Response) -> Response {
    if response.headers().contains_key(CONTENT_ENCODING) {
        response.extensions_mut().insert(EncodedBefore);
    }
    response
}

/// An answer the layer compressed keeps the coder's body; any other gets
/// back the body it had. Worked on in place: each move of the answer as a
/// whole would copy the coder-sized body.
///
/// The layer compressed exactly when the answer has a `Content-Encoding`
/// it did not have before: it sets one whenever it compresses and never
/// touches one already there.
fn unwrap_identity(answer: &mut http::Response<CompressionBody<Body>>) -> Response {
    let compressed = answer.headers().contains_key(CONTENT_ENCODING)
        && answer.extensions_mut().remove::<EncodedBefore>().is_none();
    let body = match compressed {
        true => Body::new(std::mem::take(answer.body_mut())),
        // An identity body yields the inner body's frames as they are.
        false => std::mem::take(answer.body_mut().get_mut()),
    };
    let mut response = Response::new(body);
    *response.status_mut() = answer.status();
    *response.version_mut() = answer.version();
    std::mem::swap(response.headers_mut(), answer.headers_mut());
    std::mem::swap(response.extensions_mut(), answer.extensions_mut());
    response
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
    use std::convert::Infallible;

    use axum::extract::Request;
    use bytes::Bytes;
    use http::HeaderValue;
    use http::header::{ACCEPT_ENCODING, CONTENT_TYPE, VARY};
    use http_body_util::BodyExt as _;
    use tower::{ServiceBuilder, ServiceExt as _};

    use super::*;

    const JSON: &str = r#"{"title":"a body long enough to be worth compressing, twice: a body long enough to be worth compressing"}"#;

    /// The compression stack as `edge::layers` builds it, over an answer
    /// with `encoding` (if any) already set.
    async fn answer(accept: Option<&'static str>, encoding: Option<&'static str>) -> Response {
        let inner = tower::service_fn(move |_: Request| async move {
            let mut response = Response::new(Body::from(JSON));
            let headers = response.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            if let Some(encoding) = encoding {
                headers.insert(CONTENT_ENCODING, HeaderValue::from_static(encoding));
            }
            Ok::<_, Infallible>(response)
        });
        let service = ServiceBuilder::new()
            .layer(CompressLayer(layer(&Compression { min_bytes: 32 })))
            .service(inner);
        let mut request = Request::new(Body::empty());
        if let Some(accept) = accept {
            let accept = HeaderValue::from_static(accept);
            request.headers_mut().insert(ACCEPT_ENCODING, accept);
        }
        let Ok(response) = service.oneshot(request).await;
        response
    }

    async fn bytes(response: Response) -> Bytes {
        let collected = response.into_body().collect().await;
        collected.expect("an in-memory body").to_bytes()
    }

    #[tokio::test]
    async fn an_answer_the_layer_compressed_keeps_the_coders_body() {
        let response = answer(Some("gzip"), None).await;
        assert_eq!(response.headers()[CONTENT_ENCODING], "gzip");
        let compressed = bytes(response).await;
        assert_ne!(compressed, JSON.as_bytes());
        let mut plain = String::new();
        std::io::Read::read_to_string(
            &mut flate2::read::GzDecoder::new(&compressed[..]),
            &mut plain,
        )
        .expect("gzip");
        assert_eq!(plain, JSON);
    }

    #[tokio::test]
    async fn an_identity_answer_is_the_body_it_was_with_vary() {
        let response = answer(None, None).await;
        assert!(!response.headers().contains_key(CONTENT_ENCODING));
        assert_eq!(response.headers()[VARY], "accept-encoding");
        assert_eq!(bytes(response).await, JSON.as_bytes());
    }

    #[tokio::test]
    async fn an_answer_encoded_before_is_neither_recompressed_nor_marked() {
        let response = answer(Some("gzip"), Some("br")).await;
        assert_eq!(response.headers()[CONTENT_ENCODING], "br");
        assert!(response.extensions().get::<EncodedBefore>().is_none());
        assert_eq!(bytes(response).await, JSON.as_bytes());
    }
}
