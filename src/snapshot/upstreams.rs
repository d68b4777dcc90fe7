//! Compiles `[upstreams.NAME]` into connection plans (dialled later, by
//! [`crate::snapshot::Compiled::start`]) and the name → index map that
//! bindings use.

use std::collections::HashMap;

use http::uri::Authority;

use crate::config::{ConfigError, RoutesFile};
use crate::upstream::{Discovery, PoolConfig, UpstreamConfig};

/// Every upstream, compiled, in index order.
#[derive(Debug, Default)]
pub(super) struct CompiledUpstreams {
    /// Name → index into `configs`.
    pub index: HashMap<String, usize>,
    /// One plan per upstream.
    pub configs: Vec<UpstreamConfig>,
}

/// Compiles every `[upstreams.NAME]`, reporting each mistake.
pub(super) fn compile(file: &RoutesFile, errors: &mut Vec<ConfigError>) -> CompiledUpstreams {
    let mut compiled = CompiledUpstreams::default();
    for (name, section) in &file.upstreams {
        let s = section.get_ref();
        let mut endpoints = Vec::new();
        for endpoint in &s.endpoints {
            match parse_endpoint(endpoint.get_ref()) {
                Ok(authority) => endpoints.push(authority),
                Err(message) => errors.push(
                    ConfigError::at(endpoint.span(), message)
                        .hint("write endpoints as \"http://host:port\""),
                ),
            }
        }
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
        compiled
            .index
            .insert(name.get_ref().clone(), compiled.configs.len());
        compiled.configs.push(UpstreamConfig {
            pool: PoolConfig {
                name: name.get_ref().clone(),
                discovery: Discovery::Static(endpoints),
                connections: *s.connections.get_ref(),
                connect_timeout: s.connect_timeout,
                keepalive_interval: s.keepalive_interval,
                keepalive_timeout: s.keepalive_timeout,
                backoff_initial: s.reconnect_backoff,
                backoff_max: s.reconnect_backoff_max.max(s.reconnect_backoff),
            },
            timeout: s.timeout,
            max_message_bytes: s.max_message_bytes,
        });
    }
    compiled
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
