//! The `[openapi]` part of routes.toml: whether the gateway publishes its
//! OpenAPI document (and the `/docs` page) on the public listener, and the
//! document's `info` and `servers`.

use serde::Deserialize;
use toml::Spanned;

/// `[openapi]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpenApiSection {
    /// Serve `/openapi.json`, `/openapi.yaml` and `/docs` on the public listener.
    pub serve: bool,
    /// `info.title`; default "protogate API".
    pub title: String,
    /// `info.version`: the API's version, not the gateway's.
    pub version: String,
    /// `info.description` (CommonMark).
    pub description: Option<String>,
    /// Base URLs clients call, e.g. `["https://api.example.com"]`; empty means
    /// the document's own origin.
    pub servers: Vec<Spanned<String>>,
}

impl Default for OpenApiSection {
    fn default() -> Self {
        OpenApiSection {
            serve: true,
            title: "protogate API".into(),
            version: "0.0.0".into(),
            description: None,
            servers: Vec::new(),
        }
    }
}
