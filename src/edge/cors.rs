//! CORS (the Fetch standard's protocol) from the compiled `[cors]` policy.
//! Origins are exact or have one `*` standing for a single DNS label; a
//! disallowed (or absent) origin gets no CORS headers at all.
//!
//! tower-http's layer serves the requests CORS is about: those with an
//! `Origin`, and preflights. Every other request (curl, mobile apps, servers,
//! CDN fetches: most of a gateway's traffic) would only gain the `Vary` it
//! adds for caches, so it gets that `Vary` and nothing else, without the
//! header maps tower-http builds and then strips for it (an eighth of a
//! cache hit's instructions).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::extract::Request;
use axum::response::Response;
use http::header::{ETAG, ORIGIN, RETRY_AFTER, VARY};
use http::{HeaderName, HeaderValue, Method};
use tower::{Layer as _, Service};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::headers::{
    GRPC_MESSAGE, GRPC_STATUS, GRPC_STATUS_DETAILS, GRPC_TIMEOUT, RATELIMIT, RATELIMIT_POLICY,
    SERVER_TIMING, X_GRPC_WEB, X_REQUEST_ID, X_USER_AGENT,
};

/// The `[cors]` policy, compiled and validated.
#[derive(Debug, Clone)]
pub struct Cors {
    /// Allowed origins: exact, or with one `*` label.
    pub allow_origins: Vec<String>,
    /// Allowed methods.
    pub allow_methods: Vec<Method>,
    /// Allowed request headers.
    pub allow_headers: Vec<HeaderName>,
    /// Response headers the browser may read (the gateway's own are added).
    pub expose_headers: Vec<HeaderName>,
    /// Allow cookies and Authorization with credentialed requests.
    pub allow_credentials: bool,
    /// How long a browser may cache a preflight answer.
    pub max_age: Duration,
}

// === impl Cors ===

impl Cors {
    /// Methods allowed when `[cors]` lists none.
    pub fn default_methods() -> Vec<Method> {
        vec![
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ]
    }

    /// Request headers allowed when `[cors]` lists none.
    pub fn default_headers() -> Vec<HeaderName> {
        vec![
            http::header::CONTENT_TYPE,
            http::header::AUTHORIZATION,
            X_REQUEST_ID,
        ]
    }

    /// Whether `origin` is one of the allowed origins (a WebSocket upgrade
    /// from a page is checked against the same list).
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.allow_origins.iter().any(|p| origin_matches(p, origin))
    }

    /// The tower-http layer that answers preflights and decorates answers;
    /// with `grpc_web`, the headers gRPC-Web clients send are allowed and
    /// the status headers of a trailers-only answer exposed, whatever
    /// `[cors]` lists (a gRPC-Web call cannot work without them).
    pub fn layer(&self, grpc_web: bool) -> CorsLayer {
        let patterns = self.allow_origins.clone();
        let mut expose = self.expose_headers.clone();
        let mut allow_headers = self.allow_headers.clone();
        // Rate limits are for the client's code to read, too.
        let mut always_exposed = vec![
            X_REQUEST_ID,
            SERVER_TIMING,
            ETAG,
            RATELIMIT_POLICY,
            RATELIMIT,
            RETRY_AFTER,
        ];
        if grpc_web {
            always_exposed.extend([GRPC_STATUS, GRPC_MESSAGE, GRPC_STATUS_DETAILS]);
            for name in [
                http::header::CONTENT_TYPE,
                X_GRPC_WEB,
                X_USER_AGENT,
                GRPC_TIMEOUT,
            ] {
                if !allow_headers.contains(&name) {
                    allow_headers.push(name);
                }
            }
        }
        for always in always_exposed {
            if !expose.contains(&always) {
                expose.push(always);
            }
        }
        CorsLayer::new()
            .allow_origin(AllowOrigin::predicate(move |origin: &HeaderValue, _| {
                origin
                    .to_str()
                    .is_ok_and(|o| patterns.iter().any(|p| origin_matches(p, o)))
            }))
            .allow_credentials(self.allow_credentials)
            .max_age(self.max_age)
            .allow_methods(self.allow_methods.clone())
            .allow_headers(allow_headers)
            .expose_headers(expose)
            .vary(VARIES_ON)
    }
}

/// What an answer varies on under CORS, for caches. Origins are matched by
/// a predicate while methods and headers are fixed lists, so a CORS answer
/// depends on the request's Origin alone: what tower-http computes for such
/// a layer, set explicitly so that the answers without CORS agree.
const VARIES_ON: [HeaderName; 1] = [ORIGIN];

/// [`VARIES_ON`] as tower-http writes it into `Vary`.
const VARY_VALUE: HeaderValue = HeaderValue::from_static("origin");

/// CORS around `inner`: tower-http's layer for the requests CORS is about,
/// only its `Vary` for the rest (see the module docs).
#[derive(Clone)]
pub(super) struct CorsService<S> {
    inner: S,
    cors: Arc<CorsLayer>,
}

impl<S> CorsService<S> {
    pub(super) fn new(cors: CorsLayer, inner: S) -> Self {
        // tower-http checks its rules (e.g. credentials with a wildcard)
        // when it wraps a service, panicking on a bad set: once here, at
        // build time, as when the layer wrapped the stack for good.
        let _checked = cors.layer(());
        Self {
            inner,
            cors: Arc::new(cors),
        }
    }
}

impl<S> Service<Request> for CorsService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone,
{
    type Response = Response;
    type Error = Infallible;
    type Future = CorsAnswer<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // tower-http answers every OPTIONS as a preflight, Origin or not.
        if request.method() != Method::OPTIONS && !request.headers().contains_key(ORIGIN) {
            return CorsAnswer::NotCors {
                answer: self.inner.call(request),
            };
        }
        // tower-http's service owns the one it wraps: the service that was
        // polled ready goes in, a clone stays for the next request.
        let ready = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, ready);
        CorsAnswer::Cors {
            answer: self.cors.layer(ready).call(request),
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer of [`CorsService`].
    #[project = CorsAnswerProj]
    pub(super) enum CorsAnswer<F> {
        NotCors { #[pin] answer: F },
        Cors { #[pin] answer: tower_http::cors::ResponseFuture<F> },
    }
}

impl<F> Future for CorsAnswer<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let response = match self.project() {
            CorsAnswerProj::NotCors { answer } => {
                let mut response = ready!(answer.poll(cx))?;
                response.headers_mut().append(VARY, VARY_VALUE);
                response
            }
            CorsAnswerProj::Cors { answer } => strip_for_other_origins(ready!(answer.poll(cx))?),
        };
        Poll::Ready(Ok(response))
    }
}

/// A disallowed origin gets no CORS headers at all: tower-http still sends
/// the origin-independent ones (credentials, exposed headers).
fn strip_for_other_origins(mut response: Response) -> Response {
    let headers = response.headers_mut();
    if !headers.contains_key(http::header::ACCESS_CONTROL_ALLOW_ORIGIN) {
        for name in [
            http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            http::header::ACCESS_CONTROL_EXPOSE_HEADERS,
            http::header::ACCESS_CONTROL_ALLOW_METHODS,
            http::header::ACCESS_CONTROL_ALLOW_HEADERS,
            http::header::ACCESS_CONTROL_MAX_AGE,
        ] {
            headers.remove(name);
        }
    }
    response
}

/// Whether `pattern` is a valid origin pattern: `scheme://host[:port]`
/// with an optional leading `*.` label, nothing after the authority.
pub fn check_origin_pattern(pattern: &str) -> Result<(), &'static str> {
    let Some((scheme, rest)) = pattern.split_once("://") else {
        return Err("an origin is scheme://host[:port], e.g. https://app.example.com");
    };
    if !matches!(scheme, "http" | "https") {
        return Err("an origin's scheme is http or https");
    }
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        return Err(
            "an origin has no path, query, fragment or user; write only scheme://host[:port]",
        );
    }
    let host = rest.strip_prefix("*.").unwrap_or(rest);
    if host.contains('*') {
        return Err("'*' may only stand for the first DNS label, as in https://*.example.com");
    }
    let ok = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'[' | b']'));
    if !ok {
        return Err("the host has characters an origin cannot contain");
    }
    Ok(())
}

/// `https://*.example.com` matches `https://app.example.com`, not
/// `https://a.b.example.com` nor `https://example.com`.
pub fn origin_matches(pattern: &str, origin: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern.eq_ignore_ascii_case(origin),
        Some((prefix, suffix)) => {
            origin.len() > prefix.len() + suffix.len()
                && origin[..prefix.len()].eq_ignore_ascii_case(prefix)
                && origin[origin.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                && {
                    let label = &origin[prefix.len()..origin.len() - suffix.len()];
                    !label.is_empty()
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::body::Body;
    use http::HeaderMap;
    use http::header::ACCESS_CONTROL_ALLOW_ORIGIN;
    use tower::ServiceExt as _;

    use super::*;

    fn policy() -> Cors {
        Cors {
            allow_origins: vec!["https://app.example.com".into()],
            allow_methods: Cors::default_methods(),
            allow_headers: Cors::default_headers(),
            expose_headers: vec![HeaderName::from_static("x-tenant")],
            allow_credentials: true,
            max_age: Duration::from_secs(600),
        }
    }

    /// The headers of `method` from `origin` through [`CorsService`], and
    /// how many requests reached the service inside.
    async fn answer(method: Method, origin: Option<&'static str>) -> (HeaderMap, usize) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let inner = tower::service_fn(move |_: Request| {
            counted.fetch_add(1, Ordering::Relaxed);
            async {
                let mut response = Response::new(Body::empty());
                let headers = response.headers_mut();
                headers.insert(VARY, HeaderValue::from_static("accept-encoding"));
                Ok::<_, Infallible>(response)
            }
        });
        let service = CorsService::new(policy().layer(false), inner);
        let mut request = Request::new(Body::empty());
        *request.method_mut() = method;
        if let Some(origin) = origin {
            let origin = HeaderValue::from_static(origin);
            request.headers_mut().insert(ORIGIN, origin);
        }
        let Ok(response) = service.oneshot(request).await;
        (response.headers().clone(), calls.load(Ordering::Relaxed))
    }

    #[tokio::test]
    async fn a_request_without_origin_gets_exactly_what_a_refused_origin_gets() {
        let (without, _) = answer(Method::GET, None).await;
        let (refused, _) = answer(Method::GET, Some("https://evil.example.net")).await;
        assert_eq!(
            without, refused,
            "the Vary tower-http writes, and nothing else"
        );
        let vary: Vec<_> = without.get_all(VARY).iter().collect();
        assert_eq!(
            vary,
            ["accept-encoding", VARY_VALUE.to_str().expect("ASCII")]
        );
    }

    #[tokio::test]
    async fn an_allowed_origin_still_goes_through_tower_http() {
        let (headers, calls) = answer(Method::GET, Some("https://app.example.com")).await;
        assert_eq!(
            headers[ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example.com"
        );
        assert_eq!(
            headers[http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS],
            "true"
        );
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn an_options_request_is_a_preflight_with_or_without_origin() {
        for origin in [None, Some("https://app.example.com")] {
            let (headers, calls) = answer(Method::OPTIONS, origin).await;
            assert_eq!(calls, 0, "answered at the edge ({origin:?})");
            assert!(
                headers.contains_key(http::header::ACCESS_CONTROL_ALLOW_METHODS)
                    == origin.is_some()
            );
        }
    }
}
