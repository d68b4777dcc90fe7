//! The browser and CDN keys of routes.toml: `[cors]`, `[compression]`,
//! `[grpc_web]` and the per-route `cache` tables.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::file::duration;

/// `cache = { ... }` on a route or method.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    /// `max-age`: how long any cache may reuse the answer.
    #[serde(default, deserialize_with = "optional_duration")]
    pub max_age: Option<Duration>,
    /// `s-maxage`: how long shared caches (CDNs) may reuse it.
    #[serde(default, deserialize_with = "optional_duration")]
    pub s_maxage: Option<Duration>,
    /// `stale-while-revalidate`.
    #[serde(default, deserialize_with = "optional_duration")]
    pub stale_while_revalidate: Option<Duration>,
    /// `stale-if-error`.
    #[serde(default, deserialize_with = "optional_duration")]
    pub stale_if_error: Option<Duration>,
    /// Shared caches may store it (`public`); default is `private`.
    #[serde(default)]
    pub public: bool,
    /// Nobody may store it (`no-store`).
    #[serde(default)]
    pub no_store: bool,
    /// `immutable`: the answer never changes while fresh.
    #[serde(default)]
    pub immutable: bool,
    /// Allow `public` on a route that authenticates callers (off: authenticated answers stay private).
    #[serde(default)]
    pub allow_public_with_auth: bool,
    /// Request headers the answer depends on; added to `Vary`.
    #[serde(default)]
    pub vary: Vec<Spanned<String>>,
    /// `Surrogate-Key` / `Cache-Tag` template over path variables, e.g. `"shelf-{shelf} book-{shelf}-{book}"`.
    pub surrogate_keys: Option<Spanned<String>>,
    /// Also keep answers in the gateway's own cache (anonymous callers, public policy).
    #[serde(default)]
    pub gateway: bool,
    /// Cache 404 answers this long (a short negative cache); default no-store.
    #[serde(default, deserialize_with = "optional_duration")]
    pub not_found_max_age: Option<Duration>,
}

/// `[cors]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsSection {
    /// Allowed origins: exact (`https://app.example.com`) or with one `*` label (`https://*.example.com`).
    #[serde(default)]
    pub allow_origins: Vec<Spanned<String>>,
    /// Allowed methods (default: GET, HEAD, POST, PUT, PATCH, DELETE).
    #[serde(default)]
    pub allow_methods: Vec<Spanned<String>>,
    /// Allowed request headers (default: content-type, authorization, x-request-id).
    #[serde(default)]
    pub allow_headers: Vec<Spanned<String>>,
    /// Response headers the browser may read.
    #[serde(default)]
    pub expose_headers: Vec<Spanned<String>>,
    /// Allow cookies and Authorization with credentialed requests.
    #[serde(default)]
    pub allow_credentials: bool,
    /// How long a browser may cache a preflight answer.
    #[serde(default, deserialize_with = "optional_duration")]
    pub max_age: Option<Duration>,
}

/// `[compression]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompressionSection {
    /// Compress answers per Accept-Encoding (gzip, br, zstd).
    pub enabled: bool,
    /// Smallest body worth compressing.
    pub min_bytes: u16,
}

impl Default for CompressionSection {
    fn default() -> Self {
        CompressionSection {
            enabled: true,
            min_bytes: 860,
        }
    }
}

/// `[grpc_web]`: gRPC-Web requests on the public listener.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcWebSection {
    /// Accept gRPC-Web calls of exposed methods (off unless set).
    pub enabled: bool,
}

fn optional_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

/// `[response_cache]`: the gateway's own cache, used by routes with `gateway = true`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResponseCacheSection {
    /// Most bytes of answers kept (bodies, headers and keys).
    pub max_bytes: u64,
}

impl Default for ResponseCacheSection {
    fn default() -> Self {
        ResponseCacheSection {
            max_bytes: 64 << 20,
        }
    }
}

/// `[admin]`: health and cache purging, on a separate (private) listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Address of the admin listener; keep it off the public network.
    pub listen: std::net::SocketAddr,
}
