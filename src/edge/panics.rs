//! A panic while serving one request becomes that request's 500 (JSON
//! google.rpc.Status, details only in the log, with the request id) instead
//! of a dropped connection.
//!
//! The request id is fixed here, before anything can panic, so the log
//! line, the answer and the upstream metadata agree.

use std::any::Any;
use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::extract::Request;
use axum::response::{IntoResponse as _, Response};
use futures_util::FutureExt as _;
use futures_util::future::{CatchUnwind, Either, Ready};
use http::{HeaderValue, Method, Uri};
use tower::{Layer, Service};

use crate::error::GatewayError;
use crate::headers::X_REQUEST_ID;

/// Sets each request's id and turns a panic below into a 500.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ContainPanicsLayer;

impl<S> Layer<S> for ContainPanicsLayer {
    type Service = ContainPanics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ContainPanics { inner }
    }
}

/// The service [`ContainPanicsLayer`] makes.
#[derive(Debug, Clone)]
pub(super) struct ContainPanics<S> {
    inner: S,
}

type Caught<T> = Result<T, Box<dyn Any + Send>>;

impl<S> Service<Request> for ContainPanics<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Contained<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let request_id = super::request_id(request.headers());
        request
            .headers_mut()
            .insert(X_REQUEST_ID, request_id.clone());
        // The URI is reference-counted: kept for the log line of a panic
        // without copying the path on every request.
        let (method, uri) = (request.method().clone(), request.uri().clone());
        // The inner service may panic before it returns its future, too.
        let answer = match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(request))) {
            Ok(answer) => Either::Left(AssertUnwindSafe(answer).catch_unwind()),
            Err(panic) => Either::Right(futures_util::future::ready(Err(panic))),
        };
        Contained {
            answer,
            request: Some((request_id, method, uri)),
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer of [`ContainPanics`].
    pub(super) struct Contained<F> {
        #[pin]
        answer: Either<CatchUnwind<AssertUnwindSafe<F>>, Ready<Caught<Result<Response, Infallible>>>>,
        // The request id, method and URI, for a panic's answer and log line.
        request: Option<(HeaderValue, Method, Uri)>,
    }
}

impl<F> Future for Contained<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let panic = match ready!(this.answer.poll(cx)) {
            Ok(answer) => return Poll::Ready(answer),
            Err(panic) => panic,
        };
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let (request_id, method, uri) = this
            .request
            .take()
            .expect("a Contained future is not polled after it is ready");
        tracing::error!(request_id = ?request_id, %method, path = uri.path(), panic = %what, "request handler panicked");
        let mut response = GatewayError::Internal(what).into_response();
        response.headers_mut().insert(X_REQUEST_ID, request_id);
        Poll::Ready(Ok(response))
    }
}
