//! CORS (the Fetch standard's protocol) from the compiled `[cors]` policy.
//! Origins are exact or have one `*` standing for a single DNS label; a
//! disallowed (or absent) origin gets no CORS headers at all.

use std::time::Duration;

use axum::response::Response;
use http::header::{ETAG, RETRY_AFTER};
use http::{HeaderName, HeaderValue, Method};
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
    }
}

/// A disallowed (or absent) origin gets no CORS headers at all: tower-http
/// still sends the origin-independent ones (credentials, exposed headers).
pub fn strip_for_other_origins(mut response: Response) -> Response {
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
