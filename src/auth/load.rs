//! Builds the auth providers and per-route policies from routes.toml,
//! reporting every mistake with its place: algorithms that do not fit the
//! key source (an RSA key can never verify an HS256 token), missing or short
//! secrets, unknown provider names, a route with no policy at all.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use http::HeaderName;
use toml::Spanned;

use super::api_key::{ApiKeys, StoredKey, parse_digest};
use super::jwt::JwtProvider;
use super::{Policy, Source, Way};
use crate::config::ConfigError;
use crate::config::auth::{
    ApiKeyEntry, ApiKeysFile, AuthSection, AuthSetting, RouteAuth, TokenSource,
};
use crate::config::diagnostic::suggest;

mod jwt;

/// Every configured way in, by name.
#[derive(Debug, Default)]
pub struct Providers {
    jwt: BTreeMap<String, (Arc<JwtProvider>, Source)>,
    api_keys: Option<(Arc<ApiKeys>, Source)>,
    /// Every metadata key an identity can set: never accepted from clients.
    pub identity_metadata: Vec<HeaderName>,
    /// Providers whose own section has errors (already reported).
    broken: Vec<String>,
}

/// Builds providers. JWKS URLs start fetching in the background (so this
/// must run inside the runtime); `fetch` = false (for `check`) skips that.
pub fn providers(
    section: &AuthSection,
    base_dir: &Path,
    fetch: bool,
    errors: &mut Vec<ConfigError>,
) -> Providers {
    let mut out = Providers::default();
    for (name, provider) in &section.providers {
        if name.get_ref() == "none" || name.get_ref() == "api_key" {
            errors.push(ConfigError::at(
                name.span(),
                format!(
                    "'{}' is reserved and cannot name a provider",
                    name.get_ref()
                ),
            ));
            continue;
        }
        match jwt::provider(name.get_ref(), provider, base_dir, fetch, errors) {
            Some(built) => {
                out.identity_metadata.extend(built.0.metadata_keys());
                out.jwt.insert(name.get_ref().clone(), built);
            }
            None => out.broken.push(name.get_ref().clone()),
        }
    }
    if let Some(keys) = &section.api_keys
        && let Some(built) = api_keys(keys, base_dir, errors)
    {
        out.identity_metadata.extend(built.0.metadata_keys());
        out.api_keys = Some(built);
    }
    out
}

impl Providers {
    /// Every tier an API key has, for the rate limits that name tiers.
    pub fn tiers(&self) -> std::collections::BTreeSet<String> {
        let keys = self.api_keys.iter().flat_map(|(keys, _)| keys.tiers());
        keys.map(str::to_string).collect()
    }
}

/// Request headers that carry a caller's credential whatever the configuration.
const CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "proxy-authorization", "cookie"];

impl Providers {
    /// Refuses `[headers] forward_request` entries that carry a caller's
    /// credential: `Authorization`, `Proxy-Authorization`, `Cookie` and every
    /// header a provider or the API keys read. Forwarding them from a list
    /// would bypass `forward_authorization`, the one switch the cache rules
    /// know about. Replaces the generic "cannot be forwarded" error for the
    /// same entry, if any, with this more precise one.
    pub fn refuse_forwarded_credentials(
        &self,
        forward_request: &[Spanned<String>],
        errors: &mut Vec<ConfigError>,
    ) {
        let read_here: Vec<&str> = self
            .jwt
            .values()
            .map(|(_, source)| source)
            .chain(self.api_keys.iter().map(|(_, source)| source))
            .filter_map(|source| match source {
                Source::Header(name) => Some(name.as_str()),
                _ => None,
            })
            .collect();
        for name in forward_request {
            let lower = name.get_ref().to_ascii_lowercase();
            if !CREDENTIAL_HEADERS.contains(&lower.as_str()) && !read_here.contains(&lower.as_str())
            {
                continue;
            }
            errors.retain(|e| e.span.as_ref() != Some(&name.span()));
            errors.push(
                ConfigError::at(
                    name.span(),
                    format!("header '{lower}' carries the caller's credentials and cannot be forwarded from a list"),
                )
                .hint("the only way to pass the client's Authorization upstream is forward_authorization = true on the route or method"),
            );
        }
    }
}

fn source(
    token: &TokenSource,
    default: Source,
    span: std::ops::Range<usize>,
    errors: &mut Vec<ConfigError>,
) -> Source {
    let given = [
        token.header.is_some(),
        token.cookie.is_some(),
        token.query.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if given > 1 {
        errors.push(
            ConfigError::at(
                span.clone(),
                "token source: give one of header, cookie or query",
            )
            .hint("e.g. token = { cookie = \"session\" }"),
        );
    }
    if let Some(header) = &token.header {
        let lower = header.to_ascii_lowercase();
        if lower == "authorization" {
            return Source::Bearer;
        }
        return match HeaderName::from_bytes(lower.as_bytes()) {
            Ok(h) => Source::Header(h),
            Err(_) => {
                errors.push(ConfigError::at(
                    span,
                    format!("'{header}' is not a valid header name"),
                ));
                default
            }
        };
    }
    if let Some(cookie) = &token.cookie {
        return Source::Cookie(cookie.clone());
    }
    if let Some(query) = &token.query {
        return Source::Query(query.clone());
    }
    default
}

fn api_keys(
    section: &Spanned<crate::config::auth::ApiKeysSection>,
    base_dir: &Path,
    errors: &mut Vec<ConfigError>,
) -> Option<(Arc<ApiKeys>, Source)> {
    let s = section.get_ref();
    let mut entries: Vec<Spanned<ApiKeyEntry>> = s.keys.clone();
    if let Some(file) = &s.keys_file {
        let path = base_dir.join(file.get_ref());
        match std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| toml::from_str::<ApiKeysFile>(&t).map_err(|e| e.to_string()))
        {
            Ok(parsed) => entries.extend(
                parsed
                    .keys
                    .into_iter()
                    .map(|k| Spanned::new(file.span(), k.into_inner())),
            ),
            Err(e) => errors.push(ConfigError::at(
                file.span(),
                format!("cannot load keys_file {}: {e}", path.display()),
            )),
        }
    }
    let mut keys = Vec::new();
    for entry in &entries {
        match parse_digest(entry.get_ref().sha256.get_ref()) {
            Some(digest) => keys.push(StoredKey {
                digest,
                consumer: entry.get_ref().consumer.clone(),
                tier: entry.get_ref().tier.as_ref().map(|t| t.get_ref().clone()),
            }),
            None => errors.push(
                ConfigError::at(
                    entry.span(),
                    format!(
                        "API key of '{}': sha256 must be 64 hex characters",
                        entry.get_ref().consumer
                    ),
                )
                .hint("store keys hashed: printf %s \"$KEY\" | sha256sum"),
            ),
        }
    }
    let metadata = s.consumer_metadata.get_ref().to_ascii_lowercase();
    let Ok(consumer_metadata) = HeaderName::from_bytes(metadata.as_bytes()) else {
        errors.push(ConfigError::at(
            s.consumer_metadata.span(),
            "consumer_metadata is not a valid header name",
        ));
        return None;
    };
    let default = Source::Header(HeaderName::from_static("x-api-key"));
    let source = source(&s.source, default, section.span(), errors);
    Some((Arc::new(ApiKeys::new(keys, consumer_metadata)), source))
}

/// "did you mean" a configured provider (or `none` / `api_key`), else how
/// to define one.
fn unknown_provider_hint(name: &str, providers: &Providers) -> String {
    let mut known: Vec<String> = providers.jwt.keys().cloned().collect();
    known.extend(providers.broken.iter().cloned());
    known.extend(["none".to_string(), "api_key".to_string()]);
    match suggest(name, &known, "providers") {
        hint if hint.starts_with("did you mean") => hint,
        _ => format!("define [auth.providers.{name}], or use \"none\" or \"api_key\""),
    }
}

/// Compiles a route's policy: method keys override the route's.
pub fn policy(
    route: &RouteAuth,
    method: &RouteAuth,
    providers: &Providers,
    fallback: std::ops::Range<usize>,
    errors: &mut Vec<ConfigError>,
) -> Option<Policy> {
    let Some(setting) = method.auth.as_ref().or(route.auth.as_ref()) else {
        errors.push(
            ConfigError::at(fallback, "this route has no auth policy")
                .hint("set auth = \"none\" to make it public on purpose, or name a provider / \"api_key\""),
        );
        return None;
    };
    let names: Vec<&String> = match setting.get_ref() {
        AuthSetting::One(name) => vec![name],
        AuthSetting::AnyOf(list) => list.iter().collect(),
    };
    let span = setting.span();
    let mut ways = Vec::new();
    for name in &names {
        match name.as_str() {
            "none" => ways.push(Way::Public),
            "api_key" => match &providers.api_keys {
                Some((keys, source)) => ways.push(Way::ApiKey(keys.clone(), source.clone())),
                None => errors.push(ConfigError::at(
                    span.clone(),
                    "auth = \"api_key\" but [auth.api_keys] is not configured",
                )),
            },
            other => match providers.jwt.get(other) {
                Some((provider, source)) => ways.push(Way::Jwt(provider.clone(), source.clone())),
                None if providers.broken.iter().any(|b| b == other) => {}
                None => errors.push(
                    ConfigError::at(span.clone(), format!("unknown auth provider '{other}'"))
                        .hint(unknown_provider_hint(other, providers)),
                ),
            },
        }
    }
    if names.is_empty() {
        errors.push(
            ConfigError::at(setting.span(), "auth lists no way in")
                .hint("use \"none\" for a public route"),
        );
    }
    let public = ways.iter().any(|w| matches!(w, Way::Public));
    if public && ways.len() > 1 {
        errors.push(
            ConfigError::at(
                setting.span(),
                "\"none\" makes the other entries meaningless",
            )
            .hint("remove \"none\" or the others"),
        );
    }
    let scopes = method
        .scopes
        .clone()
        .or_else(|| route.scopes.clone())
        .unwrap_or_default();
    let claim_rules = method
        .claims
        .clone()
        .or_else(|| route.claims.clone())
        .unwrap_or_default();
    if public && (!scopes.is_empty() || !claim_rules.is_empty()) {
        errors.push(ConfigError::at(
            setting.span(),
            "a public route cannot require scopes or claims",
        ));
    }
    let claims = claim_rules
        .into_iter()
        .map(|(claim, value)| {
            let allowed = match value {
                toml::Value::Array(items) => items.into_iter().map(toml_to_json).collect(),
                other => vec![toml_to_json(other)],
            };
            (claim, allowed)
        })
        .collect();
    let description = names
        .iter()
        .map(|n| n.as_str())
        .collect::<Vec<_>>()
        .join("|");
    Some(Policy {
        ways,
        scopes,
        claims,
        forward_authorization: method
            .forward_authorization
            .or(route.forward_authorization)
            .unwrap_or(false),
        description,
    })
}

fn toml_to_json(value: toml::Value) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}
