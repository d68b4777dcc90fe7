//! Compiles the gateway-wide sections of routes.toml: `[server]`,
//! `[limits]`, `[headers]`, `[cors]`, `[compression]` and `[admin]`. Every
//! value is validated here, each mistake reported at its place, so the
//! request path reads only compiled values.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, Method};
use tokio::sync::Semaphore;
use toml::Spanned;

use super::Settings;
use crate::config::edge::CorsSection;
use crate::config::file::{LimitsSection, ServerSection, TracingSection};
use crate::config::{ConfigError, RoutesFile};
use crate::edge::{Compression, Cors, EdgePolicy};
use crate::headers::is_forwardable;
use crate::limits::Limits;
use crate::metadata::Forwarding;
use crate::server::ListenerSettings;
use crate::trace::OtlpSettings;

/// How long browsers may cache a preflight answer when `[cors]` says nothing.
const DEFAULT_PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// Compiles the gateway-wide settings, reporting every mistake.
pub(super) fn compile(file: &RoutesFile, errors: &mut Vec<ConfigError>) -> Settings {
    let server = &file.server;
    check_connection_bounds(server, errors);
    let limits = &file.limits;
    Settings {
        listener: ListenerSettings {
            listen: server.listen,
            header_read_timeout: server.header_read_timeout,
            shutdown_grace: server.shutdown_grace,
            drain_delay: server.drain_delay,
            http2_max_concurrent_streams: server.http2_max_concurrent_streams,
            first_request_timeout: server.first_request_timeout,
            idle_timeout: server.idle_timeout,
            send_timeout: server.send_timeout,
            max_buffered_response_bytes: server.max_buffered_response_bytes,
            max_connections: server.max_connections,
            worker_threads: worker_threads(server, errors),
            http2_max_pending_accept_reset_streams: server.http2_max_pending_accept_reset_streams,
            http2_max_local_error_reset_streams: server.http2_max_local_error_reset_streams,
            // Read with the files it names, see `super::tls`.
            tls: None,
        },
        limits: Limits {
            max_body_bytes: limits.max_body_bytes,
            max_json_depth: limits.max_json_depth,
            max_path_bytes: limits.max_path_bytes,
            max_query_bytes: limits.max_query_bytes,
            max_headers: limits.max_headers,
            max_header_bytes: limits.max_header_bytes,
            in_flight: Arc::new(Semaphore::new(limits.max_concurrent_requests.max(1))),
            max_concurrent_requests: limits.max_concurrent_requests.max(1),
            max_multipart_part_bytes: multipart_part_bytes(limits, errors),
            max_multipart_parts: multipart_parts(limits, errors),
        },
        forwarding: Forwarding {
            request: forwardable(&file.headers.forward_request, errors),
            response: forwardable(&file.headers.forward_response, errors),
            trusted_proxy_hops: server.trusted_proxy_hops,
        },
        edge: EdgePolicy {
            cors: file.cors.as_ref().map(|section| cors(section, errors)),
            compression: file.compression.enabled.then_some(Compression {
                min_bytes: file.compression.min_bytes,
            }),
            grpc_web: file.grpc_web.enabled,
        },
        admin: file.admin.as_ref().map(|a| a.listen),
        access_log: server.access_log,
        trust_traceparent: server.trust_traceparent,
        otlp: otlp(&file.tracing, errors),
        openapi: crate::openapi::Settings::compile(&file.openapi, errors),
    }
}

/// `[tracing]`: an OTLP endpoint must be a plaintext gRPC address.
fn otlp(section: &TracingSection, errors: &mut Vec<ConfigError>) -> Option<OtlpSettings> {
    let endpoint = section.otlp_endpoint.as_ref()?;
    let uri = match endpoint.get_ref().parse::<http::Uri>() {
        Ok(uri) if uri.scheme_str() == Some("http") && uri.authority().is_some() => uri,
        _ => {
            errors.push(
                ConfigError::at(
                    endpoint.span(),
                    format!("invalid otlp_endpoint '{}'", endpoint.get_ref()),
                )
                .hint("write http://host:port (OTLP over plaintext gRPC)"),
            );
            return None;
        }
    };
    if section.max_queued_spans == 0 {
        errors.push(ConfigError::global(
            "[tracing] max_queued_spans must be at least 1",
        ));
    }
    Some(OtlpSettings {
        endpoint: uri,
        max_queued_spans: section.max_queued_spans,
        service_name: section.service_name.clone(),
    })
}

/// `max_multipart_part_bytes`: a part is a piece of the body, so it can be
/// no larger than `max_body_bytes`, which it defaults to.
fn multipart_part_bytes(limits: &LimitsSection, errors: &mut Vec<ConfigError>) -> usize {
    let Some(part) = &limits.max_multipart_part_bytes else {
        return limits.max_body_bytes;
    };
    let bytes = *part.get_ref();
    if bytes == 0 || bytes > limits.max_body_bytes {
        errors.push(
            ConfigError::at(
                part.span(),
                format!(
                    "max_multipart_part_bytes = {bytes} is not within 1..=max_body_bytes ({})",
                    limits.max_body_bytes
                ),
            )
            .hint("a part is read within the body; raise max_body_bytes too, or leave the key out to allow parts as large as the body"),
        );
    }
    bytes.clamp(1, limits.max_body_bytes.max(1))
}

/// Most `worker_threads` accepted: each holds a runtime and its own share of
/// the upstream connections, so a typo of an extra digit should not start
/// thousands of them.
const MAX_WORKER_THREADS: usize = 1024;

/// `worker_threads`: one per CPU unless set; 0 turns the workers off.
fn worker_threads(server: &ServerSection, errors: &mut Vec<ConfigError>) -> usize {
    let cpus = || std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let threads = server.worker_threads.unwrap_or_else(cpus);
    if threads > MAX_WORKER_THREADS {
        errors.push(
            ConfigError::global(format!(
                "[server] worker_threads is {threads}; at most {MAX_WORKER_THREADS} are allowed"
            ))
            .hint("leave the key out for one per CPU"),
        );
    }
    threads.min(MAX_WORKER_THREADS)
}

/// `max_multipart_parts`: zero would refuse every form with a part.
fn multipart_parts(limits: &LimitsSection, errors: &mut Vec<ConfigError>) -> usize {
    if limits.max_multipart_parts == 0 {
        errors.push(
            ConfigError::global("[limits] max_multipart_parts must be at least 1")
                .hint("leave the key out for its default of 64"),
        );
    }
    limits.max_multipart_parts.max(1)
}

/// A `[headers]` list: valid names that may cross the gateway.
fn forwardable(names: &[Spanned<String>], errors: &mut Vec<ConfigError>) -> Vec<HeaderName> {
    let mut out = Vec::new();
    for name in names {
        let lower = name.get_ref().to_ascii_lowercase();
        match HeaderName::from_bytes(lower.as_bytes()) {
            Ok(header) if is_forwardable(&lower) => out.push(header),
            Ok(_) => errors.push(
                ConfigError::at(name.span(), format!("header '{lower}' cannot be forwarded")).hint(
                    "hop-by-hop, grpc-*, access-control-* and gateway-set headers are never forwarded from a list",
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

fn cors(section: &CorsSection, errors: &mut Vec<ConfigError>) -> Cors {
    for origin in &section.allow_origins {
        let pattern = origin.get_ref();
        if pattern == "*" {
            errors.push(
                ConfigError::at(origin.span(), "\"*\" is not accepted as an origin")
                    .hint("list the origins that may call; \"https://*.example.com\" allows one subdomain label"),
            );
        } else if let Err(reason) = crate::edge::cors::check_origin_pattern(pattern) {
            errors.push(ConfigError::at(
                origin.span(),
                format!("invalid origin {pattern:?}: {reason}"),
            ));
        }
    }
    let allow_methods = if section.allow_methods.is_empty() {
        Cors::default_methods()
    } else {
        section
            .allow_methods
            .iter()
            .filter_map(|m| method(m, errors))
            .collect()
    };
    let allow_headers = if section.allow_headers.is_empty() {
        Cors::default_headers()
    } else {
        header_names(&section.allow_headers, errors)
    };
    Cors {
        allow_origins: section
            .allow_origins
            .iter()
            .map(|o| o.get_ref().clone())
            .collect(),
        allow_methods,
        allow_headers,
        expose_headers: header_names(&section.expose_headers, errors),
        allow_credentials: section.allow_credentials,
        max_age: section.max_age.unwrap_or(DEFAULT_PREFLIGHT_MAX_AGE),
    }
}

fn method(name: &Spanned<String>, errors: &mut Vec<ConfigError>) -> Option<Method> {
    let upper = name.get_ref().to_ascii_uppercase();
    match Method::from_bytes(upper.as_bytes()) {
        Ok(method) => Some(method),
        Err(_) => {
            errors.push(ConfigError::at(
                name.span(),
                format!("'{}' is not a valid HTTP method", name.get_ref()),
            ));
            None
        }
    }
}

fn header_names(names: &[Spanned<String>], errors: &mut Vec<ConfigError>) -> Vec<HeaderName> {
    let mut out = Vec::new();
    for name in names {
        match HeaderName::from_bytes(name.get_ref().to_ascii_lowercase().as_bytes()) {
            Ok(header) => out.push(header),
            Err(_) => errors.push(ConfigError::at(
                name.span(),
                format!("'{}' is not a valid header name", name.get_ref()),
            )),
        }
    }
    out
}

/// A zero bound would close or refuse every connection: refuse it here.
fn check_connection_bounds(server: &ServerSection, errors: &mut Vec<ConfigError>) {
    let zero_durations = [
        ("first_request_timeout", server.first_request_timeout),
        ("idle_timeout", server.idle_timeout),
        ("send_timeout", server.send_timeout),
        ("header_read_timeout", server.header_read_timeout),
    ]
    .into_iter()
    .filter(|(_, value)| value.is_zero())
    .map(|(key, _)| key);
    let zero_counts = [
        ("max_connections", server.max_connections),
        (
            "max_buffered_response_bytes",
            server.max_buffered_response_bytes,
        ),
        (
            "http2_max_pending_accept_reset_streams",
            server.http2_max_pending_accept_reset_streams,
        ),
        (
            "http2_max_local_error_reset_streams",
            server.http2_max_local_error_reset_streams,
        ),
    ]
    .into_iter()
    .filter(|(_, value)| *value == 0)
    .map(|(key, _)| key);
    for key in zero_durations.chain(zero_counts) {
        errors.push(
            ConfigError::global(format!("[server] {key} must be more than 0"))
                .hint("a zero bound would close or refuse every connection; leave the key out for its default"),
        );
    }
}
