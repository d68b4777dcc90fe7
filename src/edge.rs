//! The edge layers every request passes before the pipeline, outermost
//! first: CORS (preflights are answered here, never forwarded), JSON bodies
//! for errors raised by the layers below, response compression per
//! Accept-Encoding, request decompression (so the body limit counts
//! decompressed bytes), then the pipeline, which owns routing.
//!
//! These layers are built from the configuration at start-up; a reload
//! changes routes, not them (restart to change `[cors]` or `[compression]`).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::response::Response;
use http::header::{CONTENT_ENCODING, ETAG};
use http::{HeaderName, HeaderValue, Method};
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
        router = router.layer(compression(&settings.compression));
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
    tag_content_coding(&mut response);
    response
}

/// A strong ETag names one representation: once compressed, the bytes
/// differ, so the tag gets the coding as a suffix (`"abc-gzip"`), which
/// If-None-Match still matches against the identity tag.
fn tag_content_coding(response: &mut Response) {
    let headers = response.headers_mut();
    let (Some(coding), Some(tag)) = (headers.get(CONTENT_ENCODING), headers.get(ETAG)) else {
        return;
    };
    let (Ok(coding), Ok(tag)) = (coding.to_str(), tag.to_str()) else {
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
