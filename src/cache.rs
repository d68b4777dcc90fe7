//! HTTP caching of answers, safe by construction: a per-route policy compiled
//! once into header values, then applied to each successful GET/HEAD answer
//! with a strong `ETag` and `If-None-Match` → 304. Authenticated answers are
//! never publicly cacheable unless the route opts in explicitly; errors and
//! non-GET answers are `no-store`. Nothing here depends on a request header
//! that is not listed in `Vary`.

mod compile;
mod surrogate;
pub mod validators;

use std::time::Duration;

use http::header::{CACHE_CONTROL, ETAG, IF_NONE_MATCH, VARY};
use http::{HeaderMap, HeaderName, HeaderValue, Method};

use surrogate::SurrogateTemplate;
use validators::if_none_match;
pub use validators::{etag, take_representation};

/// `Surrogate-Key` (Fastly, Varnish xkey) and `Cache-Tag` (Cloudflare, Akamai).
pub const SURROGATE_KEY: HeaderName = HeaderName::from_static("surrogate-key");
/// Cloudflare/Akamai spelling of the purge tags.
pub const CACHE_TAG: HeaderName = HeaderName::from_static("cache-tag");
/// Internal, never sent: on a 304, the length and content type of the 200
/// it stands for, so the edge can give it that 200's `ETag` and `Vary`
/// (which depend on the content coding the 200 would have had).
pub const REPRESENTATION: HeaderName = HeaderName::from_static("x-protogate-representation");

/// A route's compiled cache rule.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `Cache-Control` for answers to anonymous callers.
    anonymous: HeaderValue,
    /// `Cache-Control` for answers to authenticated callers.
    authenticated: HeaderValue,
    /// `Vary` from the route's own request-header dependencies.
    vary: Option<HeaderValue>,
    /// Purge-key template.
    surrogate: Option<SurrogateTemplate>,
    /// `Cache-Control` for 404 answers, if negatively cached.
    not_found: Option<HeaderValue>,
    /// How long the gateway itself may reuse an answer (0: not at all).
    pub fresh_for: Duration,
    /// `stale-while-revalidate` window for the gateway's own cache.
    pub stale_while_revalidate: Duration,
    /// `stale-if-error` window for the gateway's own cache.
    pub stale_if_error: Duration,
    /// Whether anonymous answers are publicly cacheable (for the gateway cache).
    pub public: bool,
    /// Whether the gateway keeps answers in its own cache.
    pub gateway: bool,
    /// Request headers the answer varies on (part of the gateway cache key).
    pub vary_names: Vec<HeaderName>,
    /// Whether authenticated answers may be shared (explicit opt-in).
    pub shared_when_authenticated: bool,
}

// === impl Policy ===

impl Policy {
    /// The policy of a route with no `cache` table: revalidate every time,
    /// never stored by shared caches; `Vary` names the forwarded headers.
    pub fn default_private(forwarded: &[HeaderName]) -> Policy {
        Policy {
            anonymous: HeaderValue::from_static("private, no-cache"),
            authenticated: HeaderValue::from_static("private, no-cache"),
            vary: vary_value(forwarded),
            surrogate: None,
            not_found: None,
            fresh_for: Duration::ZERO,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            public: false,
            gateway: false,
            vary_names: forwarded.to_vec(),
            shared_when_authenticated: false,
        }
    }

    /// Whether this request may be answered from (and stored in) the gateway cache.
    pub fn gateway_cacheable(&self, method: &Method, authenticated: bool) -> bool {
        self.gateway
            && self.public
            && !self.fresh_for.is_zero()
            && (*method == Method::GET || *method == Method::HEAD)
            && (!authenticated || self.shared_when_authenticated)
    }

    /// The surrogate keys of an answer, for purging.
    pub fn surrogate_keys(&self, captures: &[(usize, String)]) -> Vec<String> {
        self.surrogate
            .as_ref()
            .map(|t| {
                t.render(captures)
                    .split_whitespace()
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sets the cache headers of a successful GET/HEAD answer and decides
    /// whether it becomes a 304: returns `true` when the client's
    /// `If-None-Match` matches and the body must be dropped. `tag` is the
    /// body's ETag if already known (a stored answer's); else it is
    /// computed here, for GET and HEAD only.
    #[allow(clippy::too_many_arguments)]
    pub fn apply(
        &self,
        method: &Method,
        request: &HeaderMap,
        authenticated: bool,
        captures: &[(usize, String)],
        body: &[u8],
        tag: Option<HeaderValue>,
        response: &mut HeaderMap,
    ) -> bool {
        if *method != Method::GET && *method != Method::HEAD {
            response.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return false;
        }
        let control = if authenticated {
            &self.authenticated
        } else {
            &self.anonymous
        };
        response.insert(CACHE_CONTROL, control.clone());
        if let Some(vary) = &self.vary {
            response.append(VARY, vary.clone());
        }
        if let Some(template) = self.surrogate.as_ref().filter(|t| !t.is_empty()) {
            // Each rendered text becomes its header value without a copy.
            let keys = template.render(captures);
            let tags = keys.replace(' ', ",");
            if let Ok(keys) = HeaderValue::try_from(keys) {
                response.insert(SURROGATE_KEY, keys.clone());
                response.insert(CACHE_TAG, HeaderValue::try_from(tags).unwrap_or(keys));
            }
        }
        let tag = tag.unwrap_or_else(|| etag(body));
        let matched = request
            .get_all(IF_NONE_MATCH)
            .iter()
            .any(|v| if_none_match(v, &tag));
        response.insert(ETAG, tag);
        if matched {
            let content_type = response
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if let Ok(value) = HeaderValue::from_str(&format!("{} {content_type}", body.len())) {
                response.insert(REPRESENTATION, value);
            }
        }
        matched
    }

    /// `Cache-Control` for a 404 from the upstream: negative caching if configured.
    pub fn not_found(&self) -> Option<&HeaderValue> {
        self.not_found.as_ref()
    }
}

/// One `Vary` value naming `names`, if any.
fn vary_value(names: &[HeaderName]) -> Option<HeaderValue> {
    if names.is_empty() {
        return None;
    }
    let joined = names
        .iter()
        .map(HeaderName::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    HeaderValue::from_str(&joined).ok()
}
