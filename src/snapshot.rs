//! The load-time compiler: routes.toml plus the descriptors become one
//! immutable [`Snapshot`]. One compile function per concern —
//! [`protos`] (descriptors), [`upstreams`], [`settings`] (listener, limits,
//! forwarding, CORS, compression), auth providers ([`crate::auth::load`]),
//! and [`routes`] (route table and method plans, with the cache policies) —
//! each collecting its mistakes with their places in routes.toml, so
//! `protogate check` reports them all at once, in file order.

mod answers;
mod bindings;
pub mod diff;
mod protos;
mod resilience;
mod retry;
mod routes;
mod settings;
mod streams;
mod tls;
mod upstreams;

use std::net::SocketAddr;
use std::sync::Arc;

use prost_reflect::DescriptorPool;

use crate::config::{ConfigError, Loaded};
use crate::edge::EdgePolicy;
use crate::idempotency::{Store, StoreSettings};
use crate::limits::Limits;
use crate::metadata::Forwarding;
use crate::plan::Plans;
use crate::response_cache::ResponseCache;
use crate::route::RouteTable;
use crate::server::ListenerSettings;
use crate::upstream::{Upstream, UpstreamConfig};

/// Everything the request path reads, compiled once; swapped whole on reload.
#[derive(Debug)]
pub struct Snapshot {
    /// The routing table: path → binding.
    pub routes: RouteTable,
    /// Each binding's plan.
    pub plans: Plans,
    /// Upstreams, indexed by `upstream::Target::upstream`.
    pub upstreams: Vec<Arc<Upstream>>,
    /// Descriptors, for rendering error details.
    pub pool: DescriptorPool,
    /// Gateway-wide settings.
    pub settings: Settings,
    /// The gateway's response cache, if any route uses it.
    pub response_cache: Option<Arc<ResponseCache>>,
    /// Its OpenAPI document, rendered when first asked for.
    pub openapi: crate::openapi::Published,
    /// The `Idempotency-Key` store, if any binding takes keys.
    pub idempotency: Option<Store>,
}

/// The gateway-wide settings, compiled.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The public listener.
    pub listener: ListenerSettings,
    /// Request limits.
    pub limits: Limits,
    /// Which headers cross the gateway.
    pub forwarding: Forwarding,
    /// CORS and compression.
    pub edge: EdgePolicy,
    /// The admin listener's address, if any.
    pub admin: Option<SocketAddr>,
    /// Log one line per request.
    pub access_log: bool,
    /// Continue a client's `traceparent` rather than start a fresh trace.
    pub trust_traceparent: bool,
    /// Where request spans are exported, if anywhere.
    pub otlp: Option<crate::trace::OtlpSettings>,
    /// The OpenAPI document's settings (`[openapi]`).
    pub openapi: crate::openapi::Settings,
}

/// A compiled configuration whose upstreams are not dialled yet.
#[derive(Debug)]
pub struct Compiled {
    /// The routing table.
    pub routes: RouteTable,
    /// Each binding's plan.
    pub plans: Plans,
    /// One plan per upstream, in `upstream::Target::upstream` order.
    pub upstreams: Vec<UpstreamConfig>,
    /// Descriptors.
    pub pool: DescriptorPool,
    /// Settings.
    pub settings: Settings,
    /// Things that are legal but probably not meant (e.g. a method with no HTTP rule).
    pub warnings: Vec<String>,
    /// Byte budget of the response cache, if any route uses it.
    pub response_cache_bytes: Option<u64>,
    /// The `Idempotency-Key` store's settings, if any binding takes keys.
    pub idempotency: Option<StoreSettings>,
}

// === impl Compiled ===

impl Compiled {
    /// Dials every upstream's pool and returns the live snapshot.
    pub async fn start(self) -> Snapshot {
        self.start_with(None).await
    }

    /// Starts the snapshot that replaces `previous` (a reload): an upstream
    /// whose compiled settings are equal to one of `previous` (same name,
    /// same config, certificates included) is the same live upstream, with
    /// its connections and counters; only the others are dialled. The
    /// response cache is kept when its size is unchanged: after the swap,
    /// [`Snapshot::purge_changed_routes`] drops what changed routes stored.
    pub async fn start_after(self, previous: &Snapshot) -> Snapshot {
        self.start_with(Some(previous)).await
    }

    /// This config as one side of a [`diff::ConfigDiff`].
    pub fn side(&self) -> diff::Side<'_> {
        diff::Side {
            plans: &self.plans,
            upstreams: self.upstreams.iter().collect(),
            settings: &self.settings,
        }
    }

    async fn start_with(self, previous: Option<&Snapshot>) -> Snapshot {
        let mut upstreams = Vec::with_capacity(self.upstreams.len());
        for config in self.upstreams {
            let live = previous.and_then(|p| p.upstreams.iter().find(|u| u.config() == &config));
            upstreams.push(match live {
                Some(live) => live.clone(),
                None => Arc::new(Upstream::start(config).await),
            });
        }
        let kept_cache = previous
            .and_then(|p| p.response_cache.clone())
            .filter(|cache| Some(cache.max_bytes()) == self.response_cache_bytes);
        // Stored answers outlive a reload unless the store itself changed.
        let idempotency = self.idempotency.map(|settings| {
            previous
                .and_then(|p| p.idempotency.clone())
                .filter(|store| store.settings() == &settings)
                .unwrap_or_else(|| Store::new(settings))
        });
        Snapshot {
            idempotency,
            routes: self.routes,
            plans: self.plans,
            upstreams,
            pool: self.pool,
            settings: self.settings,
            response_cache: kept_cache.or_else(|| {
                (self.response_cache_bytes).map(|bytes| Arc::new(ResponseCache::new(bytes)))
            }),
            openapi: crate::openapi::Published::default(),
        }
    }
}

// === impl Snapshot ===

impl Snapshot {
    /// Drops the cached answers of every path whose route is not the same
    /// in `self` as in `previous`: a path served by a changed plan (its
    /// transcoding, cache policy, auth, timeout or gRPC method), by an
    /// upstream that was replaced, or by no route any more; everything when
    /// the descriptors changed (a nested message type can change an answer's
    /// shape). Returns how many paths were purged. Runs after the swap, so
    /// that requests on the new snapshot never store an old plan's answer;
    /// a fetch on `previous` still in flight at that moment may store its
    /// answer afterwards, which then lives at most its own freshness.
    pub fn purge_changed_routes(&self, previous: &Snapshot) -> usize {
        let Some(cache) = &self.response_cache else {
            return 0;
        };
        if !previous
            .response_cache
            .as_ref()
            .is_some_and(|old| Arc::ptr_eq(old, cache))
        {
            return 0;
        }
        if previous.pool.encode_to_vec() != self.pool.encode_to_vec() {
            let purged = cache.paths().len();
            cache.purge_all();
            return purged;
        }
        let (old, new) = (previous.plan_fingerprints(), self.plan_fingerprints());
        let mut purged = 0;
        for path in cache.paths() {
            let before = previous.route_of(&path, &old);
            if before.is_none() || before != self.route_of(&path, &new) {
                cache.purge_path(&path);
                purged += 1;
            }
        }
        purged
    }

    /// What serves GETs of `path`: the plan's fingerprint and the upstream's
    /// identity (a carried upstream is the same allocation).
    fn route_of<'a>(&self, path: &str, fingerprints: &'a [String]) -> Option<(&'a str, usize)> {
        let path = crate::route::path::normalize(path).ok()?;
        let found = self.routes.find(&http::Method::GET, &path).ok()?;
        let plan = self.plans.get(found.binding);
        let upstream = Arc::as_ptr(self.upstreams.get(plan.upstream.upstream)?) as usize;
        Some((fingerprints.get(found.binding.index())?.as_str(), upstream))
    }

    /// Every plan's [`diff::fingerprint`]; the upstream's identity is left
    /// to [`Self::route_of`].
    fn plan_fingerprints(&self) -> Vec<String> {
        self.plans.iter().map(diff::fingerprint).collect()
    }

    /// This snapshot as one side of a [`diff::ConfigDiff`].
    pub fn side(&self) -> diff::Side<'_> {
        diff::Side {
            plans: &self.plans,
            upstreams: self.upstreams.iter().map(|u| u.config()).collect(),
            settings: &self.settings,
        }
    }
}

/// Compiles a loaded routes.toml without touching the network (for
/// `protogate check`): JWKS URLs are checked but not fetched.
pub fn compile(loaded: &Loaded) -> Result<Compiled, Vec<ConfigError>> {
    loaded.with_schema_errors(compile_with(loaded, false))
}

/// Compiles a loaded routes.toml for serving: JWKS URLs start fetching in
/// the background (must run inside the runtime).
pub fn compile_for_serving(loaded: &Loaded) -> Result<Compiled, Vec<ConfigError>> {
    loaded.with_schema_errors(compile_with(loaded, true))
}

fn compile_with(loaded: &Loaded, fetch_keys: bool) -> Result<Compiled, Vec<ConfigError>> {
    let file = &loaded.file;
    let pool = protos::load(loaded).map_err(|error| vec![error])?;
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let upstreams = upstreams::compile(file, &loaded.base_dir, &mut errors);
    let mut settings = settings::compile(file, &mut errors);
    settings.listener.tls = (file.server.tls.as_ref())
        .and_then(|section| tls::server(section, &loaded.base_dir, &mut errors));
    let providers =
        crate::auth::load::providers(&file.auth, &loaded.base_dir, fetch_keys, &mut errors);
    providers.refuse_forwarded_credentials(&file.headers.forward_request, &mut errors);
    for name in &file.headers.forward_request {
        let lower = name.get_ref().to_ascii_lowercase();
        if providers
            .identity_metadata
            .iter()
            .any(|h| h.as_str() == lower)
        {
            errors.push(
                ConfigError::at(name.span(), format!("'{lower}' is set from the caller's identity and cannot also be forwarded from the client"))
                    .hint("remove it from forward_request; the gateway sets it after authentication"),
            );
        }
    }
    let idempotency_settings = answers::store_settings(file, &mut errors);
    let routes = routes::compile(
        loaded,
        &pool,
        &upstreams,
        &providers,
        &settings.forwarding.request,
        &mut errors,
        &mut warnings,
    );
    if !errors.is_empty() {
        // In file order, as a compiler reports them; mistakes with no place first.
        errors.sort_by_key(|e| e.span.as_ref().map(|s| s.start));
        // A route-level setting is compiled for each of its methods: one
        // mistake in it is reported once.
        let mut seen = std::collections::HashSet::new();
        errors.retain(|e| seen.insert((e.span.clone(), e.message.clone())));
        return Err(errors);
    }
    if settings.openapi.serve {
        warnings.extend(crate::openapi::shadowed_paths(&routes.table));
    }
    let uses_gateway_cache = routes.plans.iter().any(|plan| plan.cache.gateway);
    let takes_keys = routes.plans.iter().any(|plan| plan.idempotency.is_some());
    Ok(Compiled {
        response_cache_bytes: uses_gateway_cache.then_some(file.response_cache.max_bytes),
        idempotency: takes_keys.then_some(idempotency_settings),
        routes: routes.table,
        plans: routes.plans,
        upstreams: upstreams.configs,
        pool,
        settings,
        warnings,
    })
}
