//! HTTP caching of answers, safe by construction: a per-route policy compiled
//! once into header values, then applied to each successful GET/HEAD answer
//! with a strong `ETag` and `If-None-Match` → 304. Authenticated answers are
//! never publicly cacheable unless the route opts in explicitly; errors and
//! non-GET answers are `no-store`. Nothing here depends on a request header
//! that is not listed in `Vary`.

use std::fmt::Write as _;
use std::time::Duration;

use http::header::{CACHE_CONTROL, ETAG, IF_NONE_MATCH, VARY};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use sha2::{Digest, Sha256};

use crate::config::ConfigError;
use crate::config::edge::CacheSection;
use crate::route::template::PathTemplate;
use crate::transcode::FieldPath;
use prost_reflect::MessageDescriptor;

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
    /// Whether answers may be stored at all (ETag is still sent).
    storable: bool,
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

/// `shelf-{shelf} book-{shelf}-{book}` with each `{var}` resolved to a
/// template variable index.
#[derive(Debug, Clone)]
struct SurrogateTemplate {
    parts: Vec<Part>,
}

#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Variable(usize),
}

// === impl Policy ===

impl Policy {
    /// The policy of a route with no `cache` table: revalidate every time,
    /// never stored by shared caches.
    pub fn default_private() -> Policy {
        Policy {
            anonymous: HeaderValue::from_static("private, no-cache"),
            authenticated: HeaderValue::from_static("private, no-cache"),
            vary: None,
            surrogate: None,
            not_found: None,
            storable: true,
            fresh_for: Duration::ZERO,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            public: false,
            gateway: false,
            vary_names: Vec::new(),
            shared_when_authenticated: false,
        }
    }

    /// Compiles a `cache` table for one binding. `authenticates` is whether
    /// the route admits callers by credential.
    pub fn compile(
        section: &CacheSection,
        span: std::ops::Range<usize>,
        template: &PathTemplate,
        input: &MessageDescriptor,
        authenticates: bool,
        errors: &mut Vec<ConfigError>,
        warnings: &mut Vec<String>,
    ) -> Policy {
        if section.public && section.no_store {
            errors.push(ConfigError::at(
                span.clone(),
                "cache: public and no_store contradict each other",
            ));
        }
        let secs = |d: Duration| d.as_secs();
        let mut directives = Vec::new();
        if section.no_store {
            directives.push("no-store".to_string());
        } else {
            directives.push(if section.public { "public" } else { "private" }.to_string());
            match section.max_age {
                Some(age) => directives.push(format!("max-age={}", secs(age))),
                None => directives.push("no-cache".into()),
            }
            if section.public
                && let Some(s) = section.s_maxage
            {
                directives.push(format!("s-maxage={}", secs(s)));
            }
            if let Some(s) = section.stale_while_revalidate {
                directives.push(format!("stale-while-revalidate={}", secs(s)));
            }
            if let Some(s) = section.stale_if_error {
                directives.push(format!("stale-if-error={}", secs(s)));
            }
            if section.immutable {
                directives.push("immutable".into());
            }
        }
        let anonymous = directives.join(", ");
        let authenticated = if section.public && authenticates && !section.allow_public_with_auth {
            // Safe by construction: a public policy on an authenticated route
            // still answers authenticated callers privately.
            anonymous
                .replacen("public", "private", 1)
                .split(", ")
                .filter(|d| !d.starts_with("s-maxage"))
                .collect::<Vec<_>>()
                .join(", ")
        } else {
            anonymous.clone()
        };
        if section.gateway && !section.public {
            errors.push(
                ConfigError::at(span.clone(), "cache: gateway = true needs public = true")
                    .hint("the gateway cache only shares answers that are publicly cacheable"),
            );
        }
        if section.public && authenticates && section.allow_public_with_auth {
            warnings.push(format!(
                "{template}: authenticated answers are publicly cacheable (allow_public_with_auth = true); a CDN may serve one caller's answer to another"
            ));
        }
        let mut vary_names = Vec::new();
        for name in &section.vary {
            let lower = name.get_ref().to_ascii_lowercase();
            match HeaderName::from_bytes(lower.as_bytes()) {
                Ok(h) => vary_names.push(h),
                Err(_) => errors.push(ConfigError::at(
                    name.span(),
                    format!("'{}' is not a header name", name.get_ref()),
                )),
            }
        }
        let surrogate = section.surrogate_keys.as_ref().and_then(|t| {
            SurrogateTemplate::parse(t.get_ref(), template, input)
                .map_err(|message| {
                    errors.push(
                        ConfigError::at(t.span(), message)
                            .hint("use path variables of this route, e.g. \"book-{shelf}-{book}\""),
                    )
                })
                .ok()
        });
        let not_found = section.not_found_max_age.map(|age| {
            format!(
                "{}, max-age={}",
                if section.public { "public" } else { "private" },
                secs(age)
            )
        });
        let value = |text: &str| {
            HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("no-store"))
        };
        Policy {
            anonymous: value(&anonymous),
            authenticated: value(&authenticated),
            vary: (!vary_names.is_empty()).then(|| {
                value(
                    &vary_names
                        .iter()
                        .map(HeaderName::as_str)
                        .collect::<Vec<_>>()
                        .join(", "),
                )
            }),
            surrogate,
            not_found: not_found.as_deref().map(value),
            storable: !section.no_store,
            fresh_for: if section.no_store {
                Duration::ZERO
            } else {
                section.max_age.unwrap_or_default()
            },
            stale_while_revalidate: section.stale_while_revalidate.unwrap_or_default(),
            stale_if_error: section.stale_if_error.unwrap_or_default(),
            public: section.public && !section.no_store,
            gateway: section.gateway,
            vary_names,
            shared_when_authenticated: section.allow_public_with_auth,
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
    /// `If-None-Match` matches and the body must be dropped.
    pub fn apply(
        &self,
        method: &Method,
        request: &HeaderMap,
        authenticated: bool,
        captures: &[(usize, String)],
        body: &[u8],
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
        if let Some(template) = self.surrogate.as_ref().filter(|t| !t.parts.is_empty())
            && let Ok(keys) = HeaderValue::from_str(&template.render(captures))
        {
            response.insert(SURROGATE_KEY, keys.clone());
            response.insert(
                CACHE_TAG,
                HeaderValue::from_str(&keys.to_str().unwrap_or("").replace(' ', ","))
                    .unwrap_or(keys),
            );
        }
        let tag = etag(body);
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

    /// Whether any cache may store the answer.
    pub fn storable(&self) -> bool {
        self.storable
    }
}

/// A strong validator: a digest of the exact body bytes.
pub fn etag(body: &[u8]) -> HeaderValue {
    let digest = Sha256::digest(body);
    let mut text = String::with_capacity(34);
    text.push('"');
    for byte in &digest[..16] {
        let _ = write!(text, "{byte:02x}");
    }
    text.push('"');
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// RFC 9110 §13.1.2: `*` or a list of entity tags, compared weakly. A tag
/// with a content-coding suffix (`"abc-gzip"`, added after compression)
/// matches its identity tag.
fn if_none_match(header: &HeaderValue, tag: &HeaderValue) -> bool {
    let Ok(text) = header.to_str() else {
        return false;
    };
    let ours = tag.to_str().unwrap_or("").trim_matches('"');
    text.split(',').map(str::trim).any(|candidate| {
        if candidate == "*" {
            return true;
        }
        let opaque = candidate
            .strip_prefix("W/")
            .unwrap_or(candidate)
            .trim_matches('"');
        opaque == ours
            || opaque
                .strip_prefix(ours)
                .is_some_and(|rest| matches!(rest, "-gzip" | "-br" | "-zstd" | "-deflate"))
    })
}

/// Takes the [`REPRESENTATION`] note off a 304: the length and content
/// type of the 200 it stands for.
pub fn take_representation(response: &mut HeaderMap) -> Option<(u64, Option<HeaderValue>)> {
    let note = response.remove(REPRESENTATION)?;
    let (length, content_type) = note.to_str().ok()?.split_once(' ')?;
    let content_type = (!content_type.is_empty())
        .then(|| HeaderValue::from_str(content_type).ok())
        .flatten();
    Some((length.parse().ok()?, content_type))
}

/// Marks the answer uncacheable (errors, non-GET).
pub fn no_store(response: &mut HeaderMap) {
    response.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// Whether a status may carry a 304 instead.
pub fn is_revalidatable(status: StatusCode) -> bool {
    status == StatusCode::OK
}

// === impl SurrogateTemplate ===

impl SurrogateTemplate {
    /// Parses `text` for one binding. Each space-separated key whose
    /// variables this binding's path does not bind is left out (another
    /// binding of the same method may bind them); a name that is no field of
    /// the request message at all is an error.
    fn parse(
        text: &str,
        template: &PathTemplate,
        input: &MessageDescriptor,
    ) -> Result<SurrogateTemplate, String> {
        let mut parts = Vec::new();
        for key in text.split_whitespace() {
            let mut key_parts = Vec::new();
            let mut bound = true;
            let mut rest = key;
            while let Some(open) = rest.find('{') {
                if open > 0 {
                    key_parts.push(Part::Text(rest[..open].to_string()));
                }
                let close = rest[open..]
                    .find('}')
                    .ok_or_else(|| format!("unclosed '{{' in surrogate_keys {text:?}"))?
                    + open;
                let name = &rest[open + 1..close];
                if FieldPath::resolve(input, name).is_err() {
                    return Err(format!(
                        "surrogate_keys names {{{name}}}, which is not a field of {}",
                        input.full_name()
                    ));
                }
                match template
                    .variables
                    .iter()
                    .position(|v| v.field_path.join(".") == name)
                {
                    Some(index) => key_parts.push(Part::Variable(index)),
                    None => bound = false,
                }
                rest = &rest[close + 1..];
            }
            if !rest.is_empty() {
                key_parts.push(Part::Text(rest.to_string()));
            }
            if bound {
                if !parts.is_empty() {
                    parts.push(Part::Text(" ".into()));
                }
                parts.extend(key_parts);
            }
        }
        Ok(SurrogateTemplate { parts })
    }

    fn render(&self, captures: &[(usize, String)]) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Variable(index) => {
                    if let Some((_, value)) = captures.iter().find(|(i, _)| i == index) {
                        // Keys are space-separated; a value must stay one key.
                        out.extend(value.chars().map(|c| {
                            if c.is_whitespace() || c.is_control() {
                                '_'
                            } else {
                                c
                            }
                        }));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_takes_lists_stars_weak_tags_and_coding_suffixes() {
        let tag = HeaderValue::from_static("\"abc\"");
        for header in [
            "\"abc\"",
            "\"x\", \"abc\"",
            "*",
            "W/\"abc\"",
            "\"abc-gzip\"",
        ] {
            assert!(
                if_none_match(&HeaderValue::from_static(header), &tag),
                "{header}"
            );
        }
        for header in ["\"abd\"", "\"abc-evil\"", ""] {
            assert!(
                !if_none_match(&HeaderValue::from_static(header), &tag),
                "{header}"
            );
        }
    }

    #[test]
    fn etag_is_strong_and_depends_only_on_the_body() {
        assert_eq!(etag(b"{}"), etag(b"{}"));
        assert_ne!(etag(b"{}"), etag(b"{ }"));
        assert!(!etag(b"x").to_str().unwrap_or("W/").starts_with("W/"));
    }

    #[test]
    fn public_policy_stays_private_for_authenticated_callers() {
        let template: PathTemplate = "/v1/shelves/{shelf}".parse().expect("valid");
        let section = CacheSection {
            public: true,
            max_age: Some(Duration::from_secs(30)),
            s_maxage: Some(Duration::from_secs(300)),
            ..CacheSection::default()
        };
        let (mut errors, mut warnings) = (Vec::new(), Vec::new());
        let input = crate::descriptors::load(&crate::descriptors::DescriptorSource::Protos {
            files: vec![],
            include: vec![],
        })
        .expect("builtins")
        .get_message_by_name("google.api.HttpBody")
        .expect("builtin");
        let policy = Policy::compile(
            &section,
            0..0,
            &template,
            &input,
            true,
            &mut errors,
            &mut warnings,
        );
        assert!(errors.is_empty());
        assert_eq!(policy.anonymous, "public, max-age=30, s-maxage=300");
        assert_eq!(policy.authenticated, "private, max-age=30");
    }
}
