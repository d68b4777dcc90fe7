//! The serde mirror of a `[[routes]]` entry and its `[routes.methods.NAME]`
//! overrides: which service, through which upstream, with which policy.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::auth::{AuthSetting, RouteAuth};
use super::edge::CacheSection;
use super::file::{JsonOptions, optional_duration};
use super::idempotency::IdempotencyRule;
use super::rate_limit::LimitSection;
use super::upstream::RetrySection;

/// One `[[routes]]` entry: a service exposed through an upstream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    /// Fully-qualified service name, e.g. `bookstore.v1.Bookstore`.
    pub service: Spanned<String>,
    /// Name of an `[upstreams.NAME]` entry.
    pub upstream: Spanned<String>,
    /// Deadline budget; the most a client's grpc-timeout can ask for.
    #[serde(default, deserialize_with = "optional_duration")]
    pub timeout: Option<Duration>,
    /// JSON option overrides.
    #[serde(default)]
    pub json: JsonOptions,
    /// Per-method overrides, keyed by the method's simple name.
    #[serde(default)]
    pub methods: BTreeMap<Spanned<String>, Spanned<MethodSection>>,
    /// Who may call: `"none"`, a provider name, `"api_key"`, or a list (any of).
    pub auth: Option<Spanned<AuthSetting>>,
    /// Scopes required in the token's `scope`/`scp` claim (all of them).
    pub scopes: Option<Vec<String>>,
    /// Claims that must have these values (a string, or a list: any of).
    pub claims: Option<BTreeMap<String, toml::Value>>,
    /// Forward the client's `Authorization` header upstream.
    pub forward_authorization: Option<bool>,
    /// HTTP caching of successful GET answers.
    pub cache: Option<Spanned<CacheSection>>,
    /// Which failures are retried (default: UNAVAILABLE for idempotent methods).
    pub retry: Option<Spanned<RetrySection>>,
    /// Streaming methods: the format answered whatever the client accepts
    /// (`ndjson`, `sse` or `json`).
    pub stream_format: Option<Spanned<String>>,
    /// Streaming methods: the budget of the whole stream (default: `timeout`).
    #[serde(default, deserialize_with = "optional_duration")]
    pub stream_timeout: Option<Duration>,
    /// Streaming methods: the longest gap between two messages.
    #[serde(default, deserialize_with = "optional_duration")]
    pub stream_idle_timeout: Option<Duration>,
    /// Streaming methods: how often an idle event stream gets a comment,
    /// and how long the head waits for the first message.
    #[serde(default, deserialize_with = "optional_duration")]
    pub stream_keepalive: Option<Duration>,
    /// Server-Sent Events: the `id`/`event` fields and the `retry` hint.
    pub sse: Option<Spanned<SseSection>>,
    /// Rate limits on every method of the route (all must pass).
    pub rate_limits: Option<Spanned<Vec<LimitSection>>>,
    /// `false` leaves the route's methods out of the OpenAPI document (they
    /// are still served).
    pub openapi: Option<bool>,
    /// `Idempotency-Key` on the POST and PATCH bindings.
    pub idempotency: Option<Spanned<IdempotencyRule>>,
}

/// `[routes.methods.NAME]`: overrides for one method.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodSection {
    /// Deadline budget for this method.
    #[serde(default, deserialize_with = "optional_duration")]
    pub timeout: Option<Duration>,
    /// JSON option overrides for this method.
    #[serde(default)]
    pub json: JsonOptions,
    /// An HTTP rule that replaces the method's google.api.http annotation (or
    /// binds a method that has none).
    pub http: Option<Spanned<HttpRuleSection>>,
    /// `false` keeps an annotated method off the HTTP surface.
    #[serde(default = "super::file::defaults::yes")]
    pub expose: bool,
    /// Who may call: `"none"`, a provider name, `"api_key"`, or a list (any of).
    pub auth: Option<Spanned<AuthSetting>>,
    /// Scopes required in the token's `scope`/`scp` claim (all of them).
    pub scopes: Option<Vec<String>>,
    /// Claims that must have these values (a string, or a list: any of).
    pub claims: Option<BTreeMap<String, toml::Value>>,
    /// Forward the client's `Authorization` header upstream.
    pub forward_authorization: Option<bool>,
    /// HTTP caching of successful GET answers.
    pub cache: Option<Spanned<CacheSection>>,
    /// Which failures are retried (replaces the route's setting).
    pub retry: Option<Spanned<RetrySection>>,
    /// Streaming methods: the format answered whatever the client accepts
    /// (`ndjson`, `sse` or `json`).
    pub stream_format: Option<Spanned<String>>,
    /// Streaming methods: the budget of the whole stream (default: `timeout`).
    #[serde(default, deserialize_with = "optional_duration")]
    pub stream_timeout: Option<Duration>,
    /// Streaming methods: the longest gap between two messages.
    #[serde(default, deserialize_with = "optional_duration")]
    pub stream_idle_timeout: Option<Duration>,
    /// Streaming methods: how often an idle event stream gets a comment,
    /// and how long the head waits for the first message.
    #[serde(default, deserialize_with = "optional_duration")]
    pub stream_keepalive: Option<Duration>,
    /// Server-Sent Events: the `id`/`event` fields and the `retry` hint.
    pub sse: Option<Spanned<SseSection>>,
    /// Rate limits of this method, replacing the route's (`[]`: none).
    pub rate_limits: Option<Spanned<Vec<LimitSection>>>,
    /// `false` leaves this method out of the OpenAPI document (it is still
    /// served); `true` documents it even if its route says `false`.
    pub openapi: Option<bool>,
    /// `Idempotency-Key` on the POST and PATCH bindings.
    pub idempotency: Option<Spanned<IdempotencyRule>>,
    /// The status of a successful answer: 200 (default), 201, 202 or 204.
    pub success_status: Option<Spanned<u16>>,
    /// With 201: the `Location` template over the response message, e.g.
    /// `/v1/{name}` (RFC 6570 `{field.path}` or `{+field.path}`).
    pub location: Option<Spanned<String>>,
}

/// `sse = { ... }`: how a server stream is written as Server-Sent Events.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SseSection {
    /// A scalar field of the streamed message written as each event's `id:`.
    pub id: Option<Spanned<String>>,
    /// A scalar field written as each event's `event:`.
    pub event: Option<Spanned<String>>,
    /// The reconnection delay announced once as `retry:`.
    #[serde(default, deserialize_with = "optional_duration")]
    pub retry: Option<Duration>,
}

/// An HTTP rule in google.api.HttpRule's own shape.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRuleSection {
    /// GET template.
    pub get: Option<Spanned<String>>,
    /// PUT template.
    pub put: Option<Spanned<String>>,
    /// POST template.
    pub post: Option<Spanned<String>>,
    /// DELETE template.
    pub delete: Option<Spanned<String>>,
    /// PATCH template.
    pub patch: Option<Spanned<String>>,
    /// Any other method.
    pub custom: Option<CustomPattern>,
    /// `*`, a field path, or absent.
    pub body: Option<Spanned<String>>,
    /// A field path of the response message to answer with instead of the whole message.
    pub response_body: Option<Spanned<String>>,
    /// More bindings for the same method.
    #[serde(default)]
    pub additional_bindings: Vec<Spanned<HttpRuleSection>>,
}

/// `custom = { kind = "...", path = "..." }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomPattern {
    /// HTTP method name.
    pub kind: Spanned<String>,
    /// Path template.
    pub path: Spanned<String>,
}

impl RouteSection {
    /// The route-level auth keys.
    pub fn auth(&self) -> RouteAuth {
        RouteAuth {
            auth: self.auth.clone(),
            scopes: self.scopes.clone(),
            claims: self.claims.clone(),
            forward_authorization: self.forward_authorization,
        }
    }
}

impl MethodSection {
    /// The method-level auth keys (overrides).
    pub fn auth(&self) -> RouteAuth {
        RouteAuth {
            auth: self.auth.clone(),
            scopes: self.scopes.clone(),
            claims: self.claims.clone(),
            forward_authorization: self.forward_authorization,
        }
    }
}
