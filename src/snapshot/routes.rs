//! Compiles `[[routes]]` into the route table and the method plans: each
//! entry's service and upstream are resolved, each exposed method's HTTP
//! rule becomes checked bindings, and each binding gets its plan (auth,
//! transcode, cache and upstream pieces) and a place in the matcher.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;

use http::HeaderName;
use http::uri::PathAndQuery;
use prost_reflect::{DescriptorPool, ExtensionDescriptor, MethodDescriptor};

use super::answers;
use super::bindings::{Binding, HttpRule, bindings};
use super::retry::{self, MethodRetry};
use super::streams;
use super::upstreams::CompiledUpstreams;
use crate::auth::load::Providers;
use crate::config::auth::AuthSetting;
use crate::config::diagnostic::suggest;
use crate::config::file::{JsonOptions, MethodSection, RouteSection};
use crate::config::{ConfigError, Loaded};
use crate::plan::{MethodPlan, Plans};
use crate::route::matcher::MatcherBuilder;
use crate::route::{BindingId, RouteTable};
use crate::transcode::JsonMapping;
use crate::upstream::RetryPolicy;
use crate::{auth, cache, idempotency, ratelimit, stream, transcode, upstream};
use claims::Claim;

mod claims;

/// What routes compile into.
pub(super) struct CompiledRoutes {
    /// The matcher.
    pub table: RouteTable,
    /// One plan per binding.
    pub plans: Plans,
}

/// Compiles every `[[routes]]` entry, reporting each mistake.
pub(super) fn compile(
    loaded: &Loaded,
    pool: &DescriptorPool,
    upstreams: &CompiledUpstreams,
    providers: &Providers,
    forwarded: &[HeaderName],
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<String>,
) -> CompiledRoutes {
    let rate_limits = ratelimit::Compiler::new(&loaded.file.rate_limits, providers.tiers(), errors);
    let mut compiler = RouteCompiler {
        rate_limits: &rate_limits,
        loaded,
        http: pool
            .get_extension_by_name("google.api.http")
            .expect("google/api/annotations.proto is compiled into every pool"),
        upstreams,
        providers,
        forwarded,
        builder: MatcherBuilder::new(),
        plans: Plans::default(),
        claimed: HashMap::new(),
        errors,
        warnings,
    };
    for (index, entry) in loaded.file.routes.iter().enumerate() {
        compiler.entry(pool, index, entry.get_ref());
    }
    if loaded.file.routes.is_empty() {
        compiler
            .warnings
            .push("routes.toml has no [[routes]]; every request will answer 404".into());
    }
    CompiledRoutes {
        table: RouteTable::new(compiler.builder.build()),
        plans: compiler.plans,
    }
}

struct RouteCompiler<'a> {
    loaded: &'a Loaded,
    http: ExtensionDescriptor,
    upstreams: &'a CompiledUpstreams,
    providers: &'a Providers,
    rate_limits: &'a ratelimit::Compiler,
    /// Request headers forwarded upstream: every cached answer varies on them.
    forwarded: &'a [HeaderName],
    builder: MatcherBuilder<BindingId>,
    plans: Plans,
    /// (HTTP method, template shape) → its first claim.
    claimed: HashMap<(String, String), Claim>,
    errors: &'a mut Vec<ConfigError>,
    warnings: &'a mut Vec<String>,
}

/// One `[[routes]]` entry while its methods compile.
struct Entry<'a> {
    index: usize,
    section: &'a RouteSection,
    upstream: Option<usize>,
    /// Methods this entry binds again that an earlier entry for the same
    /// service already bound, by that entry's index: one error per entry,
    /// not one per binding.
    routed_twice: BTreeMap<usize, Vec<String>>,
    bound: usize,
    /// The route-level rate limits, shared by every method that keeps them.
    rate_limits: Vec<Arc<ratelimit::Limit>>,
}

/// One method's compiled pieces, shared by its bindings.
struct MethodPieces {
    method: MethodDescriptor,
    rule_span: Range<usize>,
    auth: auth::Policy,
    json: JsonMapping,
    target: upstream::Target,
    retry: MethodRetry,
    stream: Option<stream::Policy>,
    rate_limits: Vec<Arc<ratelimit::Limit>>,
    /// For its POST and PATCH bindings.
    idempotency: Option<idempotency::Policy>,
    success: transcode::Success,
}

impl RouteCompiler<'_> {
    fn entry(&mut self, pool: &DescriptorPool, index: usize, section: &RouteSection) {
        let service_name = section.service.get_ref();
        let Some(service) = pool.get_service_by_name(service_name) else {
            let known: Vec<String> = pool.services().map(|s| s.full_name().to_string()).collect();
            self.errors.push(
                ConfigError::at(
                    section.service.span(),
                    format!("unknown service '{service_name}'"),
                )
                .hint(suggest(service_name, &known, "services")),
            );
            return;
        };
        let rate_limits = section.rate_limits.as_ref().map(|list| {
            let source = ratelimit::LimitsSource {
                section: list,
                scope: service_name.clone(),
                anonymous: allows_anonymous(section.auth.as_ref()),
            };
            self.rate_limits.limits(source, self.errors)
        });
        let mut entry = Entry {
            index,
            section,
            upstream: self.upstream_of(section),
            routed_twice: BTreeMap::new(),
            bound: 0,
            rate_limits: rate_limits.unwrap_or_default(),
        };
        for name in section.methods.keys() {
            if !service.methods().any(|m| m.name() == name.get_ref()) {
                let known: Vec<String> = service.methods().map(|m| m.name().to_string()).collect();
                self.errors.push(
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
            self.method(&mut entry, method);
        }
        self.report_routed_twice(&entry);
    }

    fn upstream_of(&mut self, section: &RouteSection) -> Option<usize> {
        let name = section.upstream.get_ref();
        if let Some(&index) = self.upstreams.index.get(name) {
            return Some(index);
        }
        // Sorted (the map is a BTreeMap), so the hint is stable.
        let known: Vec<String> = self
            .loaded
            .file
            .upstreams
            .keys()
            .map(|k| k.get_ref().clone())
            .collect();
        self.errors.push(
            ConfigError::at(
                section.upstream.span(),
                format!("unknown upstream '{name}'"),
            )
            .hint(suggest(name, &known, "upstreams")),
        );
        None
    }

    fn method(&mut self, entry: &mut Entry<'_>, method: MethodDescriptor) {
        let overrides = entry
            .section
            .methods
            .iter()
            .find(|(name, _)| name.get_ref() == method.name())
            .map(|(_, m)| m);
        let section = overrides.map(|m| m.get_ref());
        if section.is_some_and(|m| !m.expose) {
            return;
        }
        let Some(rule) = self.rule(&method, section) else {
            return;
        };
        let rule_span = overrides.map_or(entry.section.service.span(), |m| m.span());
        let (method_bindings, binding_errors) = bindings(&method, &rule, rule_span.clone());
        self.errors.extend(binding_errors);
        let Some(mut pieces) = self.pieces(entry, method, section, rule_span) else {
            return;
        };
        let http_methods: Vec<http::Method> = method_bindings
            .iter()
            .map(|b| b.http_method.clone())
            .collect();
        pieces.idempotency = answers::idempotency(
            entry.section,
            section,
            &pieces.method,
            &http_methods,
            self.errors,
        );
        pieces.success = answers::success(section, &pieces.method, &http_methods, self.errors);
        for binding in method_bindings {
            self.bind(entry, &pieces, section, binding);
        }
    }

    /// The method's HTTP rule: a routes.toml override, else its annotation.
    fn rule(
        &mut self,
        method: &MethodDescriptor,
        section: Option<&MethodSection>,
    ) -> Option<HttpRule> {
        let rule = match section.and_then(|m| m.http.as_ref()) {
            Some(config_rule) => match HttpRule::from_config(config_rule) {
                Ok(rule) => Some(rule),
                Err(e) => {
                    self.errors.push(e);
                    return None;
                }
            },
            None => HttpRule::from_annotation(method, &self.http),
        };
        if rule.is_none() {
            self.warnings.push(format!(
                "{} has no google.api.http rule and no [routes.methods.{}] http binding; it is not exposed",
                method.full_name(),
                method.name()
            ));
        }
        rule
    }

    /// The pieces every binding of one method shares.
    fn pieces(
        &mut self,
        entry: &Entry<'_>,
        method: MethodDescriptor,
        section: Option<&MethodSection>,
        rule_span: Range<usize>,
    ) -> Option<MethodPieces> {
        let upstream = entry.upstream?;
        let config = &self.upstreams.configs[upstream];
        let timeout = section
            .and_then(|m| m.timeout)
            .or(entry.section.timeout)
            .unwrap_or(config.timeout);
        let auth = self.auth_policy(entry, section)?;
        let json = json_mapping(&[
            &self.loaded.file.json,
            &entry.section.json,
            &section.map(|m| m.json.clone()).unwrap_or_default(),
        ]);
        let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
        let grpc_path = match PathAndQuery::try_from(path) {
            Ok(p) => p,
            Err(e) => {
                self.errors.push(ConfigError::at(
                    rule_span,
                    format!("{}: {e}", method.full_name()),
                ));
                return None;
            }
        };
        let retry_section = section
            .and_then(|m| m.retry.as_ref())
            .or(entry.section.retry.as_ref());
        let retry = retry::compile(retry_section, &method, self.errors);
        let rate_limits = match section.and_then(|m| m.rate_limits.as_ref()) {
            Some(list) => {
                let source = ratelimit::LimitsSource {
                    section: list,
                    scope: format!("{}/{}", method.parent_service().full_name(), method.name()),
                    anonymous: auth.is_public(),
                };
                self.rate_limits.limits(source, self.errors)
            }
            None => entry.rate_limits.clone(),
        };
        let (stream, timeout) = streams::compile(
            &method,
            entry.section,
            section,
            timeout,
            rule_span.clone(),
            self.errors,
        );
        Some(MethodPieces {
            stream,
            rate_limits,
            target: upstream::Target {
                upstream,
                upstream_name: Arc::from(config.pool.name.as_str()),
                grpc_path,
                timeout,
                retry: RetryPolicy::SAFE_ONLY,
            },
            retry,
            method,
            rule_span,
            auth,
            json,
            idempotency: None,
            success: transcode::Success::default(),
        })
    }

    fn auth_policy(
        &mut self,
        entry: &Entry<'_>,
        section: Option<&MethodSection>,
    ) -> Option<auth::Policy> {
        let mut policy_errors = Vec::new();
        let policy = auth::load::policy(
            &entry.section.auth(),
            &section.map(|m| m.auth()).unwrap_or_default(),
            self.providers,
            entry.section.service.span(),
            &mut policy_errors,
        );
        // A route-level mistake is reported once, not once per method.
        for error in policy_errors {
            if !self.errors.contains(&error) {
                self.errors.push(error);
            }
        }
        policy
    }

    fn bind(
        &mut self,
        entry: &mut Entry<'_>,
        pieces: &MethodPieces,
        section: Option<&MethodSection>,
        binding: Binding,
    ) {
        let span = binding.span.clone().unwrap_or(pieces.rule_span.clone());
        if !self.claim(entry, pieces, &binding, &span) {
            return;
        }
        entry.bound += 1;
        let cache_section = section
            .and_then(|m| m.cache.as_ref())
            .or(entry.section.cache.as_ref());
        let cache = match cache_section {
            Some(section) => cache::Policy::compile(
                section.get_ref(),
                section.span(),
                &binding.template,
                &pieces.method.input(),
                !pieces.auth.is_public(),
                self.forwarded,
                self.errors,
                self.warnings,
            ),
            None => cache::Policy::default_private(self.forwarded),
        };
        if cache.public && pieces.auth.forward_authorization && !cache.shared_when_authenticated {
            self.warnings.push(format!(
                "{} {}: a public cache policy with forward_authorization = true; answers to requests that carry Authorization are sent private and kept out of the gateway cache (set allow_public_with_auth = true only if the upstream ignores it)",
                binding.http_method, binding.template
            ));
        }
        let plan = MethodPlan {
            http_method: binding.http_method.clone(),
            template: binding.template.clone(),
            transcode: transcode::Plan {
                method: pieces.method.clone(),
                variables: binding.variables,
                body: binding.body,
                response_body: binding.response_body,
                json: pieces.json.clone(),
                reserved_query: pieces.auth.query_parameters(),
                success: pieces.success.clone(),
            },
            auth: pieces.auth.clone(),
            cache,
            upstream: upstream::Target {
                retry: pieces.retry.for_binding(&binding.http_method),
                ..pieces.target.clone()
            },
            stream: pieces.stream.clone(),
            rate_limit: ratelimit::Policy::new(
                pieces.rate_limits.clone(),
                &binding.http_method,
                &binding.template.to_string(),
            ),
            documented: (section.and_then(|m| m.openapi))
                .or(entry.section.openapi)
                .unwrap_or(true),
            idempotency: (pieces.idempotency.clone())
                .filter(|_| answers::takes_keys(&binding.http_method)),
        };
        let id = self.plans.push(plan);
        if let Err(conflict) = self
            .builder
            .insert(binding.http_method, binding.template, id)
        {
            self.plans.pop();
            self.errors.push(ConfigError::at(
                span,
                format!(
                    "{} conflicts with {}",
                    pieces.method.full_name(),
                    conflict.existing_template
                ),
            ));
        }
    }
}

/// Whether a route's `auth` lets anonymous callers in (then every caller is).
fn allows_anonymous(auth: Option<&toml::Spanned<AuthSetting>>) -> bool {
    match auth.map(toml::Spanned::get_ref) {
        Some(AuthSetting::One(way)) => way == "none",
        Some(AuthSetting::AnyOf(ways)) => ways.iter().any(|w| w == "none"),
        None => false,
    }
}

fn json_mapping(layers: &[&JsonOptions]) -> JsonMapping {
    let pick = |get: fn(&JsonOptions) -> Option<bool>| {
        layers.iter().rev().find_map(|l| get(l)).unwrap_or(false)
    };
    let render = transcode::wire_json::Options {
        proto_names: pick(|o| o.use_proto_names),
        skip_defaults: !pick(|o| o.emit_unpopulated),
        enum_numbers: pick(|o| o.enums_as_numbers),
        stringify_64: true,
    };
    JsonMapping {
        serialize: render.serialize_options(),
        render,
        deny_unknown_fields: !pick(|o| o.ignore_unknown_fields),
        deny_unknown_query: !pick(|o| o.ignore_unknown_query_parameters),
    }
}
