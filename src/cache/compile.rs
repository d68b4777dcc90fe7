//! Compiles a route's or method's `cache` table into a [`Policy`]: the
//! `Cache-Control` values for anonymous and authenticated callers, `Vary`,
//! the surrogate-key template and the gateway cache's windows.

use std::time::Duration;

use http::{HeaderName, HeaderValue};
use prost_reflect::MessageDescriptor;

use super::Policy;
use super::surrogate::SurrogateTemplate;
use crate::config::ConfigError;
use crate::config::edge::CacheSection;
use crate::route::template::PathTemplate;

impl Policy {
    /// Compiles a `cache` table for one binding. `authenticates` is whether
    /// the route admits callers by credential; `forwarded` are the request
    /// headers sent upstream, on which every answer may depend.
    #[allow(clippy::too_many_arguments)]
    pub fn compile(
        section: &CacheSection,
        span: std::ops::Range<usize>,
        template: &PathTemplate,
        input: &MessageDescriptor,
        authenticates: bool,
        forwarded: &[HeaderName],
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
        // Safe by construction: a public policy still answers authenticated
        // callers (and callers whose credential is forwarded, even on a
        // public route) privately.
        let authenticated = if section.public && !section.allow_public_with_auth {
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
        // The upstream sees the forwarded headers, so its answer may vary on
        // them: caches in front must key on them too (RFC 9111 §4.1).
        for name in forwarded {
            if !vary_names.contains(name) {
                vary_names.push(name.clone());
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
            vary: super::vary_value(&vary_names),
            surrogate,
            not_found: not_found.as_deref().map(value),
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
            &[],
            &mut errors,
            &mut warnings,
        );
        assert!(errors.is_empty());
        assert_eq!(policy.anonymous, "public, max-age=30, s-maxage=300");
        assert_eq!(policy.authenticated, "private, max-age=30");
    }
}
