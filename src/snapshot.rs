//! Compiles routes.toml plus the descriptors into one immutable
//! [`Snapshot`]: the routing table with every field path resolved, the
//! upstream pools, and the settings the request path reads. Every mistake is
//! collected, each with its place in routes.toml and a hint, and compilation
//! fails only at the end, so `protogate check` reports them all at once.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use http::uri::{Authority, PathAndQuery};
use prost_reflect::{DescriptorPool, SerializeOptions};

use crate::cache::CachePolicy;
use crate::config::diagnostic::suggest;
use crate::config::edge::{AdminSection, CompressionSection, CorsSection};
use crate::config::file::{JsonOptions, LimitsSection, ServerSection};
use crate::config::{ConfigError, Loaded};
use crate::descriptors::{self, DescriptorError, DescriptorSource};
use crate::headers::is_forwardable;
use crate::response_cache::ResponseCache;
use crate::route::compile::{HttpRule, bindings};
use crate::route::matcher::MatcherBuilder;
use crate::route::{JsonMapping, Route, RouteSummary, RouteTable};
use crate::upstream::{Pool, PoolConfig, Upstream};

/// Everything the request path reads, compiled once; swapped whole on reload.
#[derive(Debug)]
pub struct Snapshot {
    /// The routing table.
    pub routes: RouteTable,
    /// Upstreams, indexed by `Route::upstream`.
    pub upstreams: Vec<Arc<Upstream>>,
    /// Descriptors, for rendering error details.
    pub pool: DescriptorPool,
    /// Request-path settings.
    pub settings: Settings,
    /// The gateway's response cache, if any route uses it.
    pub response_cache: Option<Arc<ResponseCache>>,
}

/// Settings of the listener and of every request.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `[server]`.
    pub server: ServerSection,
    /// `[limits]`.
    pub limits: LimitsSection,
    /// Request headers forwarded as metadata.
    pub forward_request: Vec<HeaderName>,
    /// Response metadata returned as headers.
    pub forward_response: Vec<HeaderName>,
    /// `[cors]`.
    pub cors: Option<CorsSection>,
    /// `[compression]`.
    pub compression: CompressionSection,
    /// `[admin]`.
    pub admin: Option<AdminSection>,
}

/// A compiled configuration whose upstreams are not dialled yet.
#[derive(Debug)]
pub struct Compiled {
    /// The routing table.
    pub routes: RouteTable,
    /// One plan per upstream, in `Route::upstream` order.
    pub upstreams: Vec<(PoolConfig, Duration, usize)>,
    /// Descriptors.
    pub pool: DescriptorPool,
    /// Settings.
    pub settings: Settings,
    /// Things that are legal but probably not meant (e.g. a method with no HTTP rule).
    pub warnings: Vec<String>,
    /// Byte budget of the response cache, if any route uses it.
    pub response_cache_bytes: Option<u64>,
}

// === impl Compiled ===

impl Compiled {
    /// Dials every upstream's pool and returns the live snapshot.
    pub async fn start(self) -> Snapshot {
        let mut upstreams = Vec::with_capacity(self.upstreams.len());
        for (config, timeout, max_message_bytes) in self.upstreams {
            let name = config.name.clone();
            let pool = Pool::start(config).await;
            upstreams.push(Arc::new(Upstream {
                name,
                pool,
                timeout,
                max_message_bytes,
            }));
        }
        Snapshot {
            routes: self.routes,
            upstreams,
            pool: self.pool,
            settings: self.settings,
            response_cache: self
                .response_cache_bytes
                .map(|bytes| Arc::new(ResponseCache::new(bytes))),
        }
    }
}

/// Compiles a loaded routes.toml without touching the network (for
/// `protogate check`): JWKS URLs are checked but not fetched.
pub fn compile(loaded: &Loaded) -> Result<Compiled, Vec<ConfigError>> {
    compile_with(loaded, false)
}

/// Compiles a loaded routes.toml for serving: JWKS URLs start fetching in
/// the background (must run inside the runtime).
pub fn compile_for_serving(loaded: &Loaded) -> Result<Compiled, Vec<ConfigError>> {
    compile_with(loaded, true)
}

fn compile_with(loaded: &Loaded, fetch_keys: bool) -> Result<Compiled, Vec<ConfigError>> {
    let file = &loaded.file;
    let mut errors = Vec::new();
    let mut warnings = Vec::new();

    let pool = match load_descriptors(loaded) {
        Ok(pool) => pool,
        Err(error) => return Err(vec![error]),
    };
    let http = pool
        .get_extension_by_name("google.api.http")
        .expect("google/api/annotations.proto is compiled into every pool");

    let (upstream_index, upstreams) = compile_upstreams(file, &mut errors);

    let forward_request = header_list(&file.headers.forward_request, &mut errors);
    let forward_response = header_list(&file.headers.forward_response, &mut errors);
    let providers =
        crate::auth::load::providers(&file.auth, &loaded.base_dir, fetch_keys, &mut errors);
    for (name, header) in file.headers.forward_request.iter().zip(&forward_request) {
        if providers.identity_metadata.contains(header) {
            errors.push(
                ConfigError::at(name.span(), format!("'{header}' is set from the caller's identity and cannot also be forwarded from the client"))
                    .hint("remove it from forward_request; the gateway sets it after authentication"),
            );
        }
    }

    let mut builder = MatcherBuilder::new();
    let mut summaries = Vec::new();
    // (HTTP method, template shape) → (where, gRPC method, index of its [[routes]] entry).
    let mut claimed: HashMap<(String, String), (Range<usize>, String, usize)> = HashMap::new();
    for (route_index, route) in file.routes.iter().enumerate() {
        let section = route.get_ref();
        // Methods this entry binds again that an earlier entry for the same
        // service already bound, by that entry's index: one error per entry,
        // not one per binding.
        let mut routed_twice: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        let mut bound_here = 0usize;
        let service_name = section.service.get_ref();
        let Some(service) = pool.get_service_by_name(service_name) else {
            let known: Vec<String> = pool.services().map(|s| s.full_name().to_string()).collect();
            errors.push(
                ConfigError::at(
                    section.service.span(),
                    format!("unknown service '{service_name}'"),
                )
                .hint(suggest(service_name, &known, "services")),
            );
            continue;
        };
        let upstream = match upstream_index.get(section.upstream.get_ref()) {
            Some(&index) => Some(index),
            None => {
                // Sorted (the map is a BTreeMap), so the hint is stable.
                let known: Vec<String> =
                    file.upstreams.keys().map(|k| k.get_ref().clone()).collect();
                errors.push(
                    ConfigError::at(
                        section.upstream.span(),
                        format!("unknown upstream '{}'", section.upstream.get_ref()),
                    )
                    .hint(suggest(
                        section.upstream.get_ref(),
                        &known,
                        "upstreams",
                    )),
                );
                None
            }
        };
        for name in section.methods.keys() {
            if !service.methods().any(|m| m.name() == name.get_ref()) {
                let known: Vec<String> = service.methods().map(|m| m.name().to_string()).collect();
                errors.push(
                    ConfigError::at(
                        name.span(),
                        format!(
                            "service '{service_name}' has no method '{}'",
                            name.get_ref()
                        ),
                    )
                    .hint(suggest(name.get_ref(), &known, "methods")),
                );
            }
        }
        for method in service.methods() {
            let overrides = section
                .methods
                .iter()
                .find(|(name, _)| name.get_ref() == method.name())
                .map(|(_, m)| m);
            let method_section = overrides.map(|m| m.get_ref());
            if method_section.is_some_and(|m| !m.expose) {
                continue;
            }
            let rule = match method_section.and_then(|m| m.http.as_ref()) {
                Some(config_rule) => match HttpRule::from_config(config_rule) {
                    Ok(rule) => Some(rule),
                    Err(e) => {
                        errors.push(e);
                        continue;
                    }
                },
                None => HttpRule::from_annotation(&method, &http),
            };
            let Some(rule) = rule else {
                warnings.push(format!(
                    "{} has no google.api.http rule and no [routes.methods.{}] http binding; it is not exposed",
                    method.full_name(),
                    method.name()
                ));
                continue;
            };
            let rule_span = overrides.map_or(section.service.span(), |m| m.span());
            if method.is_client_streaming() || method.is_server_streaming() {
                errors.push(
                    ConfigError::at(
                        rule_span,
                        format!(
                            "{} is a streaming method; only unary methods can be bound",
                            method.full_name()
                        ),
                    )
                    .hint(format!(
                        "add [routes.methods.{}] expose = false",
                        method.name()
                    )),
                );
                continue;
            }
            let (method_bindings, binding_errors) = bindings(&method, &rule, rule_span.clone());
            errors.extend(binding_errors);
            let Some(upstream) = upstream else { continue };
            let (_, upstream_timeout, _) = &upstreams[upstream];
            let timeout = method_section
                .and_then(|m| m.timeout)
                .or(section.timeout)
                .unwrap_or(*upstream_timeout);
            let mut policy_errors = Vec::new();
            let policy = crate::auth::load::policy(
                &section.auth(),
                &method_section.map(|m| m.auth()).unwrap_or_default(),
                &providers,
                section.service.span(),
                &mut policy_errors,
            );
            for error in policy_errors {
                if !errors.contains(&error) {
                    errors.push(error);
                }
            }
            let Some(policy) = policy else { continue };
            let cache_section = method_section
                .and_then(|m| m.cache.as_ref())
                .or(section.cache.as_ref());
            let json = json_mapping(&[
                &file.json,
                &section.json,
                &method_section.map(|m| m.json.clone()).unwrap_or_default(),
            ]);
            let grpc_path =
                match PathAndQuery::try_from(format!("/{}/{}", service.full_name(), method.name()))
                {
                    Ok(p) => p,
                    Err(e) => {
                        errors.push(ConfigError::at(
                            rule_span.clone(),
                            format!("{}: {e}", method.full_name()),
                        ));
                        continue;
                    }
                };
            for binding in method_bindings {
                let span = binding.span.clone().unwrap_or(rule_span.clone());
                let key = (binding.http_method.to_string(), binding.template.shape());
                if let Some((first, owner, owner_route)) = claimed.get(&key) {
                    if owner.as_str() == method.full_name() && *owner_route != route_index {
                        let names = routed_twice.entry(*owner_route).or_default();
                        if !names.iter().any(|n| n == method.name()) {
                            names.push(method.name().to_string());
                        }
                        continue;
                    }
                    let (line, _) = loaded.source.line_col(first.start);
                    errors.push(
                        ConfigError::at(span, format!("{} {} of {} is already bound to {owner} (line {line})", key.0, binding.template, method.full_name()))
                            .hint("two routes cannot claim the same method and path template; change one or set expose = false"),
                    );
                    continue;
                }
                claimed.insert(
                    key,
                    (span.clone(), method.full_name().to_string(), route_index),
                );
                bound_here += 1;
                summaries.push(RouteSummary {
                    http_method: binding.http_method.to_string(),
                    template: binding.template.to_string(),
                    grpc_method: method.full_name().to_string(),
                    upstream: section.upstream.get_ref().clone(),
                    body: match &binding.body {
                        crate::route::BodyRule::None => String::new(),
                        crate::route::BodyRule::Whole => "*".into(),
                        crate::route::BodyRule::Field(f) => f.to_string(),
                    },
                    timeout,
                    auth: policy.summary(),
                });
                let route = Route {
                    method: method.clone(),
                    http_method: binding.http_method.clone(),
                    template: binding.template.clone(),
                    grpc_path: grpc_path.clone(),
                    variables: binding.variables,
                    body: binding.body,
                    response_body: binding.response_body,
                    upstream,
                    upstream_name: section.upstream.get_ref().clone(),
                    timeout,
                    json: json.clone(),
                    reserved_query: policy.query_parameters(),
                    cache: match cache_section {
                        Some(section) => CachePolicy::compile(
                            section.get_ref(),
                            section.span(),
                            &binding.template,
                            &method.input(),
                            !policy.is_public(),
                            &mut errors,
                            &mut warnings,
                        ),
                        None => CachePolicy::default_private(),
                    },
                    auth: policy.clone(),
                };
                if let Err(conflict) = builder.insert(binding.http_method, binding.template, route)
                {
                    errors.push(ConfigError::at(
                        span,
                        format!(
                            "{} conflicts with {}",
                            method.full_name(),
                            conflict.existing_template
                        ),
                    ));
                }
            }
        }
        for (earlier, names) in routed_twice {
            let (line, _) = loaded
                .source
                .line_col(file.routes[earlier].get_ref().service.span().start);
            let splits = section.methods.values().any(|m| !m.get_ref().expose);
            let what = if bound_here == 0 && !splits {
                format!("service '{service_name}' is")
            } else if names.len() == 1 {
                format!("method {} of '{service_name}' is", names[0])
            } else {
                format!("methods {} of '{service_name}' are", names.join(", "))
            };
            errors.push(
                ConfigError::at(
                    section.service.span(),
                    format!("{what} already routed by the [[routes]] entry at line {line}"),
                )
                .hint("list each service once; to split its methods between entries, set expose = false on the ones the other entry serves"),
            );
        }
    }
    if file.routes.is_empty() {
        warnings.push("routes.toml has no [[routes]]; every request will answer 404".into());
    }
    if !errors.is_empty() {
        // In file order, as a compiler reports them; mistakes with no place first.
        errors.sort_by_key(|e| e.span.as_ref().map(|s| s.start));
        return Err(errors);
    }
    let uses_gateway_cache = file.routes.iter().any(|r| {
        let r = r.get_ref();
        r.cache.as_ref().is_some_and(|c| c.get_ref().gateway)
            || r.methods.values().any(|m| {
                m.get_ref()
                    .cache
                    .as_ref()
                    .is_some_and(|c| c.get_ref().gateway)
            })
    });
    Ok(Compiled {
        response_cache_bytes: uses_gateway_cache.then_some(file.response_cache.max_bytes),
        routes: RouteTable::new(builder.build(), summaries),
        upstreams,
        pool,
        settings: Settings {
            server: file.server.clone(),
            limits: file.limits.clone(),
            forward_request,
            forward_response,
            cors: file.cors.clone(),
            compression: file.compression.clone(),
            admin: file.admin.clone(),
        },
        warnings,
    })
}

/// Each `[upstreams.NAME]` as a pool plan, and the name → index map routes use.
#[allow(clippy::type_complexity)]
fn compile_upstreams(
    file: &crate::config::RoutesFile,
    errors: &mut Vec<ConfigError>,
) -> (HashMap<String, usize>, Vec<(PoolConfig, Duration, usize)>) {
    let mut upstream_index = HashMap::new();
    let mut upstreams = Vec::new();
    for (name, section) in &file.upstreams {
        let mut endpoints = Vec::new();
        for endpoint in &section.get_ref().endpoints {
            match parse_endpoint(endpoint.get_ref()) {
                Ok(authority) => endpoints.push(authority),
                Err(message) => errors.push(
                    ConfigError::at(endpoint.span(), message)
                        .hint("write endpoints as \"http://host:port\""),
                ),
            }
        }
        let s = section.get_ref();
        if s.endpoints.is_empty() {
            errors.push(
                ConfigError::at(
                    section.span(),
                    format!("upstream '{}' has no endpoints", name.get_ref()),
                )
                .hint("add endpoints = [\"http://127.0.0.1:50051\"]"),
            );
        }
        if *s.connections.get_ref() == 0 {
            errors.push(
                ConfigError::at(s.connections.span(), "connections must be at least 1")
                    .hint("it is the number of HTTP/2 connections kept to each endpoint; the default is 2"),
            );
        }
        upstream_index.insert(name.get_ref().clone(), upstreams.len());
        upstreams.push((
            PoolConfig {
                name: name.get_ref().clone(),
                endpoints,
                connections: *s.connections.get_ref(),
                connect_timeout: s.connect_timeout,
                keepalive_interval: s.keepalive_interval,
                keepalive_timeout: s.keepalive_timeout,
                backoff_initial: s.reconnect_backoff,
                backoff_max: s.reconnect_backoff_max.max(s.reconnect_backoff),
            },
            s.timeout,
            s.max_message_bytes,
        ));
    }

    (upstream_index, upstreams)
}

fn load_descriptors(loaded: &Loaded) -> Result<DescriptorPool, ConfigError> {
    let proto = &loaded.file.proto;
    let section = proto.get_ref();
    let source = match (&section.descriptor_set, section.files.is_empty()) {
        (Some(set), false) => {
            return Err(ConfigError::at(
                set.span(),
                "give either proto.files or proto.descriptor_set, not both",
            )
            .hint("remove descriptor_set to compile the .proto files, or remove files to load the descriptor set"));
        }
        (Some(set), true) => DescriptorSource::DescriptorSet(loaded.base_dir.join(set.get_ref())),
        (None, _) => DescriptorSource::Protos {
            files: section.files.iter().map(|f| f.get_ref().clone()).collect(),
            include: if section.include.is_empty() {
                vec![loaded.base_dir.clone()]
            } else {
                section
                    .include
                    .iter()
                    .map(|i| loaded.base_dir.join(i.get_ref()))
                    .collect()
            },
        },
    };
    descriptors::load(&source).map_err(|e| match (&source, &e) {
        (DescriptorSource::Protos { include, .. }, DescriptorError::Compile(message)) => {
            // Point at the file the message names, when it names one of ours.
            let span = section
                .files
                .iter()
                .find(|f| message.contains(f.get_ref().as_str()))
                .map_or(proto.span(), |f| f.span());
            let hint = if message.contains("not in any include path") || message.contains("not found") {
                let searched: Vec<String> =
                    include.iter().map(|d| d.display().to_string()).collect();
                format!(
                    "files are named relative to an include path, and include paths relative to routes.toml; searched {}",
                    searched.join(", ")
                )
            } else {
                "fix the .proto file; it must compile with protoc".to_string()
            };
            ConfigError::at(span, format!("cannot load descriptors: {e}")).hint(hint)
        }
        _ => ConfigError::at(
            section
                .descriptor_set
                .as_ref()
                .map_or(proto.span(), |s| s.span()),
            format!("cannot load descriptors: {e}"),
        )
        .hint("descriptor_set is relative to routes.toml; build one with `buf build -o FILE` or `protoc --include_imports --descriptor_set_out=FILE`"),
    })
}

fn parse_endpoint(text: &str) -> Result<Authority, String> {
    let rest = text.strip_prefix("http://").ok_or_else(|| {
        format!("endpoint {text:?} must start with http:// (TLS to upstreams is not supported yet)")
    })?;
    let authority: Authority = rest
        .trim_end_matches('/')
        .parse()
        .map_err(|e| format!("endpoint {text:?}: {e}"))?;
    if authority.port_u16().is_none() {
        return Err(format!("endpoint {text:?} has no port"));
    }
    Ok(authority)
}

fn header_list(names: &[toml::Spanned<String>], errors: &mut Vec<ConfigError>) -> Vec<HeaderName> {
    let mut out = Vec::new();
    for name in names {
        let lower = name.get_ref().to_ascii_lowercase();
        match HeaderName::from_bytes(lower.as_bytes()) {
            Ok(header) if is_forwardable(&lower) => out.push(header),
            Ok(_) => errors.push(
                ConfigError::at(name.span(), format!("header '{lower}' cannot be forwarded")).hint(
                    "hop-by-hop, grpc-* and gateway-set headers are never forwarded from a list",
                ),
            ),
            Err(_) => errors.push(ConfigError::at(
                name.span(),
                format!("'{}' is not a valid header name", name.get_ref()),
            )),
        }
    }
    out
}

fn json_mapping(layers: &[&JsonOptions]) -> JsonMapping {
    let pick = |get: fn(&JsonOptions) -> Option<bool>| {
        layers.iter().rev().find_map(|l| get(l)).unwrap_or(false)
    };
    JsonMapping {
        serialize: SerializeOptions::new()
            .use_proto_field_name(pick(|o| o.use_proto_names))
            .skip_default_fields(!pick(|o| o.emit_unpopulated))
            .use_enum_numbers(pick(|o| o.enums_as_numbers))
            .stringify_64_bit_integers(true),
        deny_unknown_fields: !pick(|o| o.ignore_unknown_fields),
        deny_unknown_query: !pick(|o| o.ignore_unknown_query_parameters),
    }
}
