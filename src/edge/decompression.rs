//! Request decompression: tower-http's layer for a request that declares a
//! `Content-Encoding`; every other request (GETs, and the JSON bodies of
//! clients that do not compress, nearly all of them) goes to the pipeline
//! as it came, and its answer comes back as the pipeline wrote it.
//!
//! tower-http's service wraps every request body in its decoder type and
//! boxes every answer's body into its own box, which axum then boxed again:
//! two allocations per request, and two more dynamic calls for each poll of
//! the answer's body, for requests with nothing to decode.

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures_util::future::Either;
use http::header::CONTENT_ENCODING;
use tower::Service;
use tower::util::{MapRequest, MapResponse};
use tower_http::BoxError;
use tower_http::body::UnsyncBoxBody;
use tower_http::decompression::{DecompressionBody, RequestDecompression};

/// The pipeline behind request decompression (see the module docs).
#[derive(Clone)]
pub(super) struct Decompress<S> {
    inner: S,
}

impl<S> Decompress<S> {
    pub(super) fn new(inner: S) -> Self {
        Self { inner }
    }
}

/// tower-http's decoding around the pipeline `S`, answering axum's type.
type Decoding<S> = MapResponse<RequestDecompression<MapRequest<S, DecodedBody>>, IntoAxum>;
type DecodedBody = fn(http::Request<DecompressionBody<Body>>) -> Request;
type IntoAxum = fn(http::Response<UnsyncBoxBody<bytes::Bytes, BoxError>>) -> Response;

impl<S> Service<Request> for Decompress<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future, <Decoding<S> as Service<Request>>::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if !request.headers().contains_key(CONTENT_ENCODING) {
            return Either::Left(self.inner.call(request.map(ended_as_empty)));
        }
        // tower-http's service owns the one it wraps: the service that was
        // polled ready goes in, a clone stays for the next request.
        let ready = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, ready);
        let decoded_body: DecodedBody = |request| request.map(decoded_body);
        let into_axum: IntoAxum = IntoResponse::into_response;
        let mut decoding = MapResponse::new(
            RequestDecompression::new(MapRequest::new(ready, decoded_body)),
            into_axum,
        );
        Either::Right(decoding.call(request))
    }
}

/// A body that ended before it began (a GET's) is handed on as empty,
/// which the pipeline sees without reading it or arming a timer for the
/// read.
fn ended_as_empty(body: Body) -> Body {
    match http_body::Body::is_end_stream(&body) {
        true => Body::empty(),
        false => body,
    }
}

/// The decoded body, as the pipeline reads it; one that ended before it
/// began is handed on as empty, as in [`ended_as_empty`] (a decoder over no
/// bytes yields none either).
fn decoded_body(body: DecompressionBody<Body>) -> Body {
    match http_body::Body::is_end_stream(body.get_ref()) {
        true => Body::empty(),
        false => Body::new(body),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use http::{HeaderValue, StatusCode};
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    use super::*;

    /// The body the pipeline read for a request with `encoding` and `body`,
    /// or the status of an answer given before the pipeline.
    async fn read(encoding: Option<&'static str>, body: Vec<u8>) -> Result<String, StatusCode> {
        let pipeline = tower::service_fn(|request: Request| async move {
            let read = request.into_body().collect().await.expect("a body");
            Ok::<_, Infallible>(Response::new(Body::from(read.to_bytes())))
        });
        let mut request = Request::new(Body::from(body));
        if let Some(encoding) = encoding {
            let encoding = HeaderValue::from_static(encoding);
            request.headers_mut().insert(CONTENT_ENCODING, encoding);
        }
        let Ok(response) = Decompress::new(pipeline).oneshot(request).await;
        if response.status() != StatusCode::OK {
            return Err(response.status());
        }
        let bytes = response.into_body().collect().await.expect("a body");
        Ok(String::from_utf8(bytes.to_bytes().to_vec()).expect("UTF-8"))
    }

    #[tokio::test]
    async fn a_body_without_content_encoding_reaches_the_pipeline_as_sent() {
        let sent = r#"{"title":"as sent"}"#;
        assert_eq!(read(None, sent.into()).await, Ok(sent.to_string()));
        assert_eq!(read(None, Vec::new()).await, Ok(String::new()));
    }

    #[tokio::test]
    async fn an_encoded_body_is_decoded_and_an_unknown_coding_refused() {
        let sent = r#"{"title":"zipped"}"#;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), Default::default());
        encoder.write_all(sent.as_bytes()).expect("gzip");
        let zipped = encoder.finish().expect("gzip");
        assert_eq!(read(Some("gzip"), zipped).await, Ok(sent.to_string()));
        assert_eq!(
            read(Some("identity"), sent.into()).await,
            Ok(sent.to_string())
        );
        let refused = read(Some("br2"), sent.into()).await;
        assert_eq!(refused, Err(StatusCode::UNSUPPORTED_MEDIA_TYPE));
    }
}
