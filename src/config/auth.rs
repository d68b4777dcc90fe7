//! The `[auth]` part of routes.toml: JWT providers and API keys. Per-route
//! policy keys (`auth`, `scopes`, `claims`, `forward_authorization`) live on
//! the route and method sections.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::file::duration;

/// `[auth]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// JWT providers by name; a route names one in `auth`.
    #[serde(default)]
    pub providers: BTreeMap<Spanned<String>, Spanned<JwtProviderSection>>,
    /// API keys for third-party callers (`auth = "api_key"`).
    pub api_keys: Option<Spanned<ApiKeysSection>>,
}

/// `[auth.providers.NAME]`: one JWT issuer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtProviderSection {
    /// Required `iss` claim.
    pub issuer: String,
    /// Accepted `aud` values; one must match. Empty = `aud` not checked.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Accepted `alg` values, e.g. `["RS256"]`. Required: never inferred from the token.
    pub algorithms: Vec<Spanned<String>>,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(default = "defaults::leeway", deserialize_with = "duration")]
    pub leeway: Duration,
    /// Where the token is read from (default: `Authorization: Bearer`).
    #[serde(default)]
    pub token: TokenSource,
    /// Longest accepted token, in bytes.
    #[serde(default = "defaults::max_token_bytes")]
    pub max_token_bytes: usize,
    /// A JWKS URL, fetched at start-up and in the background.
    pub jwks_url: Option<Spanned<String>>,
    /// A local JWKS file.
    pub jwks_file: Option<Spanned<PathBuf>>,
    /// A local PEM public key (RSA, EC or Ed25519).
    pub pem_file: Option<Spanned<PathBuf>>,
    /// An environment variable holding the HMAC secret.
    pub secret_env: Option<Spanned<String>>,
    /// A file holding the HMAC secret (trailing newline ignored).
    pub secret_file: Option<Spanned<PathBuf>>,
    /// How often the JWKS is refetched (shortened by the response's max-age).
    #[serde(default = "defaults::jwks_refresh", deserialize_with = "duration")]
    pub jwks_refresh: Duration,
    /// Least time between two fetches caused by unknown `kid`s.
    #[serde(default = "defaults::jwks_cooldown", deserialize_with = "duration")]
    pub jwks_cooldown: Duration,
    /// JWKS fetch timeout.
    #[serde(default = "defaults::jwks_timeout", deserialize_with = "duration")]
    pub jwks_timeout: Duration,
    /// Largest JWKS response body accepted.
    #[serde(default = "defaults::jwks_max_bytes")]
    pub jwks_max_bytes: usize,
    /// Claims forwarded upstream: claim name → metadata key, e.g. `sub = "x-user-id"`.
    #[serde(default)]
    pub claims_to_metadata: BTreeMap<String, Spanned<String>>,
}

/// Where a credential is read from: exactly one of the keys.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSource {
    /// A header; `authorization` expects the `Bearer` scheme.
    pub header: Option<String>,
    /// A cookie.
    pub cookie: Option<String>,
    /// A query parameter.
    pub query: Option<String>,
}

/// `[auth.api_keys]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeysSection {
    /// Where the key is read from (default: the `x-api-key` header).
    #[serde(default)]
    pub source: TokenSource,
    /// A TOML file of `[[keys]]` entries (reloaded with routes.toml).
    pub keys_file: Option<Spanned<PathBuf>>,
    /// Keys given here.
    #[serde(default)]
    pub keys: Vec<Spanned<ApiKeyEntry>>,
    /// Metadata key carrying the consumer name upstream.
    #[serde(default = "defaults::consumer_metadata")]
    pub consumer_metadata: Spanned<String>,
}

/// One API key: stored only as its SHA-256.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    /// Who the key belongs to; forwarded upstream.
    pub consumer: String,
    /// Hex SHA-256 of the key.
    pub sha256: Spanned<String>,
    /// The consumer's tier, which rate limits may give their own rates.
    pub tier: Option<Spanned<String>>,
}

/// A keys file: `[[keys]]` entries.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeysFile {
    /// The keys.
    #[serde(default)]
    pub keys: Vec<Spanned<ApiKeyEntry>>,
}

/// `auth = "none" | "provider" | "api_key" | [any of these]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum AuthSetting {
    /// One way in.
    One(String),
    /// Any of several.
    AnyOf(Vec<String>),
}

/// The auth keys shared by routes and methods (read from either section).
#[derive(Debug, Default, Clone)]
pub struct RouteAuth {
    /// Who may call: `"none"`, a provider name, `"api_key"`, or a list (any of).
    pub auth: Option<Spanned<AuthSetting>>,
    /// Scopes required in the token's `scope`/`scp` claim (all of them).
    pub scopes: Option<Vec<String>>,
    /// Claims that must have these values (a string, or a list: any of).
    pub claims: Option<BTreeMap<String, toml::Value>>,
    /// Forward the client's `Authorization` header upstream.
    pub forward_authorization: Option<bool>,
}

mod defaults {
    use std::time::Duration;
    use toml::Spanned;

    pub(super) fn leeway() -> Duration {
        Duration::from_secs(30)
    }
    pub(super) fn max_token_bytes() -> usize {
        8 << 10
    }
    pub(super) fn jwks_refresh() -> Duration {
        Duration::from_secs(300)
    }
    pub(super) fn jwks_cooldown() -> Duration {
        Duration::from_secs(30)
    }
    pub(super) fn jwks_timeout() -> Duration {
        Duration::from_secs(2)
    }
    pub(super) fn jwks_max_bytes() -> usize {
        1 << 20
    }
    pub(super) fn consumer_metadata() -> Spanned<String> {
        Spanned::new(0..0, "x-consumer".to_string())
    }
}
