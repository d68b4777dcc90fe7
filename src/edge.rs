//! The edge layers every request passes before the pipeline, outermost
//! first: CORS (preflights are answered here, never forwarded), JSON bodies
//! for errors raised by the layers below, the coding-dependent `ETag` and
//! `Vary` for bodiless answers (HEAD, 304), response compression per
//! Accept-Encoding, request decompression (so the body limit counts
//! decompressed bytes), then the pipeline, which owns routing.
//!
//! These layers are built from the configuration at start-up; a reload
//! changes routes, not them (restart to change `[cors]` or `[compression]`).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, ETAG, VARY};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use http_body::{Frame, SizeHint};
use tower::{Layer as _, ServiceExt as _};
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::decompression::RequestDecompressionLayer;

use crate::config::edge::{CompressionSection, CorsSection};
use crate::headers::{SERVER_TIMING, X_REQUEST_ID};
use crate::pipeline::{self, Gateway};

/// The public router.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let settings = gateway.snapshot().settings.clone();
    let mut router = Router::new()
        .fallback(pipeline::handle)
        .with_state(gateway)
        .layer(RequestDecompressionLayer::new());
    if settings.compression.enabled {
        let layer = compression(&settings.compression);
        router = router
            .layer(layer.clone())
            .layer(axum::middleware::from_fn_with_state(
                layer,
                bodyless_representation,
            ));
    }
    router = router.layer(axum::middleware::map_response(finish));
    if let Some(cors) = &settings.cors {
        router = router
            .layer(cors_layer(cors))
            .layer(axum::middleware::map_response(strip_cors_for_other_origins));
    }
    router
}

/// A disallowed (or absent) origin gets no CORS headers at all: tower-http
/// still sends the origin-independent ones (credentials, exposed headers).
async fn strip_cors_for_other_origins(mut response: Response) -> Response {
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

/// Last touches on every answer leaving the gateway.
async fn finish(response: Response) -> Response {
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
    let accept: Vec<HeaderValue> = request
        .headers()
        .get_all(ACCEPT_ENCODING)
        .iter()
        .cloned()
        .collect();
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

fn compression(section: &CompressionSection) -> CompressionLayer<impl Predicate + use<>> {
    // Already-compressed formats gain nothing and cost CPU.
    let predicate = SizeAbove::new(u64::from(section.min_bytes))
        .and(NotForContentType::GRPC)
        .and(NotForContentType::IMAGES)
        .and(NotForContentType::SSE)
        .and(NotForContentType::const_new("application/zip"))
        .and(NotForContentType::const_new("application/gzip"))
        .and(NotForContentType::const_new("application/zstd"))
        .and(NotForContentType::const_new("video/"))
        .and(NotForContentType::const_new("audio/"))
        .and(NotForContentType::const_new("font/woff"));
    CompressionLayer::new()
        .gzip(true)
        .br(true)
        .zstd(true)
        .compress_when(predicate)
}

/// CORS from `[cors]`. Origins are exact or have one `*` standing for a
/// single DNS label; a disallowed origin gets no CORS headers at all.
pub fn cors_layer(section: &CorsSection) -> CorsLayer {
    let patterns: Vec<String> = section
        .allow_origins
        .iter()
        .map(|o| o.get_ref().clone())
        .collect();
    let mut layer = CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin: &HeaderValue, _| {
            origin
                .to_str()
                .is_ok_and(|o| patterns.iter().any(|p| origin_matches(p, o)))
        }))
        .allow_credentials(section.allow_credentials)
        .max_age(section.max_age.unwrap_or(Duration::from_secs(600)));
    let methods: Vec<Method> = if section.allow_methods.is_empty() {
        vec![
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ]
    } else {
        section
            .allow_methods
            .iter()
            .filter_map(|m| Method::from_bytes(m.get_ref().to_ascii_uppercase().as_bytes()).ok())
            .collect()
    };
    layer = layer.allow_methods(methods);
    let names = |list: &[toml::Spanned<String>]| -> Vec<HeaderName> {
        list.iter()
            .filter_map(|h| {
                HeaderName::from_bytes(h.get_ref().to_ascii_lowercase().as_bytes()).ok()
            })
            .collect()
    };
    let allow_headers = if section.allow_headers.is_empty() {
        vec![
            http::header::CONTENT_TYPE,
            http::header::AUTHORIZATION,
            X_REQUEST_ID,
        ]
    } else {
        names(&section.allow_headers)
    };
    let mut expose = names(&section.expose_headers);
    for always in [X_REQUEST_ID, SERVER_TIMING, ETAG] {
        if !expose.contains(&always) {
            expose.push(always);
        }
    }
    layer.allow_headers(allow_headers).expose_headers(expose)
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
    use super::*;

    #[test]
    fn origin_patterns_match_one_label() {
        assert!(origin_matches(
            "http://localhost:3000",
            "http://localhost:3000"
        ));
        assert!(!origin_matches(
            "http://localhost:3000",
            "http://localhost:3001"
        ));
        assert!(origin_matches(
            "https://*.example.com",
            "https://app.example.com"
        ));
        assert!(!origin_matches(
            "https://*.example.com",
            "https://a.b.example.com"
        ));
        assert!(!origin_matches(
            "https://*.example.com",
            "https://example.com"
        ));
        assert!(!origin_matches(
            "https://*.example.com",
            "https://evil.com/.example.com"
        ));
    }
}
