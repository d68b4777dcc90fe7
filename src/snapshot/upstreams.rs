//! Compiles `[upstreams.NAME]` into connection plans (dialled later, by
//! [`crate::snapshot::Compiled::start`]) and the name → index map that
//! bindings use.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use http::uri::{Authority, Uri};
use toml::Spanned;

use crate::config::file::{EtcdSection, UpstreamSection};
use crate::config::{ConfigError, RoutesFile};
use crate::upstream::discovery::dns::DnsConfig;
use crate::upstream::discovery::etcd::EtcdConfig;
use crate::upstream::tls::ClientTls;
use crate::upstream::{Discovery, PoolConfig, UpstreamConfig};

use super::resilience::{cancel_policy, health_config, outlier_config, retry_settings};

/// Every upstream, compiled, in index order.
#[derive(Debug, Default)]
pub(super) struct CompiledUpstreams {
    /// Name → index into `configs`.
    pub index: HashMap<String, usize>,
    /// One plan per upstream.
    pub configs: Vec<UpstreamConfig>,
}

/// Compiles every `[upstreams.NAME]`, reporting each mistake.
pub(super) fn compile(
    file: &RoutesFile,
    base_dir: &Path,
    errors: &mut Vec<ConfigError>,
) -> CompiledUpstreams {
    let mut compiled = CompiledUpstreams::default();
    for (name, section) in &file.upstreams {
        let s = section.get_ref();
        let mut endpoints = Vec::new();
        let mut schemes = Vec::new();
        for endpoint in &s.endpoints {
            match parse_endpoint(endpoint.get_ref()) {
                Ok((tls, authority)) => {
                    endpoints.push(authority);
                    schemes.push((tls, endpoint.span()));
                }
                Err(message) => errors.push(ConfigError::at(endpoint.span(), message).hint(
                    "write endpoints as \"http://host:port\" (\"https://host:port\" for TLS)",
                )),
            }
        }
        let tls = tls(name.get_ref(), s, &schemes, base_dir, errors);
        let discovery =
            compile_discovery(name.get_ref(), section, endpoints, tls.is_some(), errors);
        if let Some(connections) = &s.connections
            && *connections.get_ref() == 0
        {
            errors.push(
                ConfigError::at(connections.span(), "connections must be at least 1")
                    .hint("it is the number of HTTP/2 connections kept to each endpoint; leave it out for one per worker thread (at least 2)"),
            );
        }
        if *s.max_concurrent_calls.get_ref() == 0 {
            errors.push(
                ConfigError::at(
                    s.max_concurrent_calls.span(),
                    "max_concurrent_calls must be at least 1",
                )
                .hint("it bounds the calls in flight to this upstream; the default is 1024"),
            );
        }
        let health = s.health_check.as_ref().map(|h| health_config(h, errors));
        let outlier = outlier_config(&s.outlier, errors);
        let retry = retry_settings(s, errors);
        let cancel = cancel_policy(s, errors);
        compiled
            .index
            .insert(name.get_ref().clone(), compiled.configs.len());
        compiled.configs.push(UpstreamConfig {
            pool: PoolConfig {
                name: name.get_ref().clone(),
                discovery,
                connections: s.connections.as_ref().map(|c| *c.get_ref()),
                connect_timeout: s.connect_timeout,
                keepalive_interval: s.keepalive_interval,
                keepalive_timeout: s.keepalive_timeout,
                backoff_initial: s.reconnect_backoff,
                backoff_max: s.reconnect_backoff_max.max(s.reconnect_backoff),
                outlier,
                health,
                tls,
                cancel,
            },
            timeout: s.timeout,
            max_message_bytes: s.max_message_bytes,
            retry,
            max_concurrent_calls: (*s.max_concurrent_calls.get_ref()).max(1),
        });
    }
    compiled
}

/// An upstream is reached over TLS when its `tls` table is present or its
/// endpoints are `https://`; one upstream is all TLS or all cleartext.
fn tls(
    name: &str,
    s: &UpstreamSection,
    schemes: &[(bool, Range<usize>)],
    base_dir: &Path,
    errors: &mut Vec<ConfigError>,
) -> Option<Arc<ClientTls>> {
    let https = schemes.iter().any(|(tls, _)| *tls);
    if let Some((_, span)) = schemes.iter().find(|(tls, _)| *tls != schemes[0].0) {
        errors.push(
            ConfigError::at(
                span.clone(),
                format!("upstream '{name}' mixes http:// and https:// endpoints"),
            )
            .hint("an upstream is all TLS or all cleartext: make every endpoint https:// (or use two upstreams)"),
        );
        return None;
    }
    match &s.tls {
        Some(table) if !schemes.is_empty() && !https => {
            errors.push(
                ConfigError::at(
                    table.span(),
                    format!("upstream '{name}' has a tls table but http:// endpoints"),
                )
                .hint("write the endpoints as \"https://host:port\", or remove tls"),
            );
            None
        }
        Some(table) => super::tls::upstream(Some(table), dns_host(s), base_dir, errors),
        None if https => super::tls::upstream(None, None, base_dir, errors),
        None => None,
    }
}

/// The name part of `dns = "name:port"`: what a DNS-discovered upstream's
/// certificates name (its addresses are IPs that certificates rarely carry).
fn dns_host(s: &UpstreamSection) -> Option<&str> {
    let (host, _port) = s.dns.as_ref()?.get_ref().rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty() && host.parse::<std::net::IpAddr>().is_err()).then_some(host)
}

/// The one source of an upstream's endpoints: `endpoints` (already parsed
/// into `endpoints`), `dns` or `etcd`; `tls` says whether the upstream is
/// reached over TLS. With none or several, the mistake is reported and an
/// empty static list stands in (the snapshot is refused anyway).
fn compile_discovery(
    name: &str,
    section: &Spanned<UpstreamSection>,
    endpoints: Vec<Authority>,
    tls: bool,
    errors: &mut Vec<ConfigError>,
) -> Discovery {
    let s = section.get_ref();
    let sources: Vec<(&str, Range<usize>)> = [
        s.endpoints.first().map(|e| ("endpoints", e.span())),
        s.dns.as_ref().map(|d| ("dns", d.span())),
        s.etcd.as_ref().map(|e| ("etcd", e.span())),
    ]
    .into_iter()
    .flatten()
    .collect();
    if let [(first, _), (second, span), ..] = sources.as_slice() {
        errors.push(
            ConfigError::at(
                span.clone(),
                format!("upstream '{name}' sets both {first} and {second}"),
            )
            .hint("an upstream's endpoints come from one source: keep endpoints, dns or etcd"),
        );
        return Discovery::Static(Vec::new());
    }
    if let Some(dns) = &s.dns {
        return compile_dns(dns, s, errors).map_or(Discovery::Static(Vec::new()), Discovery::Dns);
    }
    report_dns_settings_without_dns(s, errors);
    if let Some(etcd) = &s.etcd {
        return compile_etcd(etcd, s, tls, errors)
            .map_or(Discovery::Static(Vec::new()), Discovery::Etcd);
    }
    if s.endpoints.is_empty() {
        errors.push(
            ConfigError::at(
                section.span(),
                format!("upstream '{name}' has no endpoints"),
            )
            .hint("add endpoints = [\"http://127.0.0.1:50051\"], dns = \"name:port\" or etcd = { endpoints = [..], prefix = \"/services/NAME/\" }"),
        );
    }
    Discovery::Static(endpoints)
}

/// `dns = "name:port"` and its settings, or `None` after reporting why not.
fn compile_dns(
    dns: &Spanned<String>,
    s: &UpstreamSection,
    errors: &mut Vec<ConfigError>,
) -> Option<DnsConfig> {
    let before = errors.len();
    let (host, port) = match dns.get_ref().rsplit_once(':') {
        Some((host, port)) => (host, port.parse::<u16>().ok()),
        None => (dns.get_ref().as_str(), None),
    };
    if host.is_empty() {
        errors.push(
            ConfigError::at(dns.span(), format!("dns {:?} has no name", dns.get_ref()))
                .hint("write dns = \"name:port\", e.g. \"bookstore.internal:50051\""),
        );
    } else if port.is_none() {
        errors.push(
            ConfigError::at(dns.span(), format!("dns {:?} has no port", dns.get_ref()))
                .hint("write dns = \"name:port\", e.g. \"bookstore.internal:50051\""),
        );
    }
    let (min, max) = (s.dns_refresh_min.get_ref().0, s.dns_refresh_max.get_ref().0);
    if min.is_zero() {
        errors.push(
            ConfigError::at(
                s.dns_refresh_min.span(),
                "dns_refresh_min must be more than zero",
            )
            .hint("it is the shortest wait between two lookups; the default is 1s"),
        );
    } else if min > max {
        errors.push(
            ConfigError::at(
                s.dns_refresh_min.span(),
                format!("dns_refresh_min ({min:?}) is longer than dns_refresh_max ({max:?})"),
            )
            .hint("answers are kept for their TTL clamped to [dns_refresh_min, dns_refresh_max]; the defaults are 1s and 60s"),
        );
    }
    let mut servers = Vec::new();
    for server in &s.dns_servers {
        match parse_nameserver(server.get_ref()) {
            Some(address) => servers.push(address),
            None => errors.push(
                ConfigError::at(
                    server.span(),
                    format!("dns server {:?} is not an IP address", server.get_ref()),
                )
                .hint("write \"ip\" (port 53) or \"ip:port\", e.g. \"127.0.0.1:5353\" or \"[::1]:53\""),
            ),
        }
    }
    (errors.len() == before).then(|| DnsConfig {
        name: host.to_owned(),
        port: port.unwrap_or_default(),
        refresh_min: min,
        refresh_max: max,
        servers,
    })
}

/// A DNS setting in an upstream without `dns` would be silently ignored:
/// most likely `dns` itself is missing or misspelt.
fn report_dns_settings_without_dns(s: &UpstreamSection, errors: &mut Vec<ConfigError>) {
    // A default value has an empty span; a key written in the file never does.
    let written = [
        ("dns_refresh_min", s.dns_refresh_min.span()),
        ("dns_refresh_max", s.dns_refresh_max.span()),
    ]
    .into_iter()
    .chain(s.dns_servers.first().map(|d| ("dns_servers", d.span())))
    .filter(|(_, span)| !span.is_empty());
    for (key, span) in written {
        errors.push(
            ConfigError::at(span, format!("{key} has no effect without dns"))
                .hint("add dns = \"name:port\", or remove this key"),
        );
    }
}

fn parse_nameserver(text: &str) -> Option<SocketAddr> {
    text.parse::<SocketAddr>()
        .ok()
        .or_else(|| Some(SocketAddr::new(text.parse::<IpAddr>().ok()?, 53)))
}

/// `etcd = { .. }`, or `None` after reporting why not.
fn compile_etcd(
    etcd: &Spanned<EtcdSection>,
    s: &UpstreamSection,
    tls: bool,
    errors: &mut Vec<ConfigError>,
) -> Option<EtcdConfig> {
    let before = errors.len();
    let e = etcd.get_ref();
    if e.endpoints.is_empty() {
        errors.push(
            ConfigError::at(etcd.span(), "etcd has no endpoints")
                .hint("add endpoints = [\"http://127.0.0.1:2379\"] (etcd's client URLs)"),
        );
    }
    let mut endpoints = Vec::new();
    for endpoint in &e.endpoints {
        match parse_etcd_url(endpoint.get_ref()) {
            Ok(url) => endpoints.push(url),
            Err(message) => errors.push(
                ConfigError::at(endpoint.span(), message)
                    .hint("write etcd endpoints as \"http://host:port\" or \"https://host:port\""),
            ),
        }
    }
    if e.prefix.get_ref().is_empty() {
        errors.push(
            ConfigError::at(e.prefix.span(), "etcd prefix is empty")
                .hint("an empty prefix would take every key in etcd as an endpoint; write e.g. prefix = \"/services/bookstore/\""),
        );
    }
    for (key, value) in [
        ("max_endpoints", &e.max_endpoints),
        ("max_value_bytes", &e.max_value_bytes),
        ("max_response_bytes", &e.max_response_bytes),
    ] {
        if *value.get_ref() == 0 {
            errors.push(
                ConfigError::at(value.span(), format!("{key} must be at least 1"))
                    .hint("leave it out for the default"),
            );
        }
    }
    (errors.len() == before).then(|| EtcdConfig {
        endpoints,
        prefix: e.prefix.get_ref().clone(),
        // A value written as a URL names the upstream's own scheme.
        scheme: if tls { "https" } else { "http" }.to_string(),
        max_endpoints: *e.max_endpoints.get_ref(),
        max_value_bytes: *e.max_value_bytes.get_ref(),
        max_response_bytes: *e.max_response_bytes.get_ref(),
        timeout: e.timeout,
        backoff_initial: s.reconnect_backoff,
        backoff_max: s.reconnect_backoff_max.max(s.reconnect_backoff),
    })
}

/// An etcd client URL as `scheme://host:port`, without a path.
fn parse_etcd_url(text: &str) -> Result<String, String> {
    let uri: Uri = text
        .parse()
        .map_err(|e| format!("etcd endpoint {text:?}: {e}"))?;
    let scheme = uri.scheme_str().unwrap_or_default();
    if scheme != "http" && scheme != "https" {
        return Err(format!(
            "etcd endpoint {text:?} must start with http:// or https://"
        ));
    }
    if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return Err(format!("etcd endpoint {text:?} has a path"));
    }
    match uri.authority() {
        Some(authority) if authority.port_u16().is_some() => Ok(format!("{scheme}://{authority}")),
        _ => Err(format!("etcd endpoint {text:?} has no port")),
    }
}

/// `http://host:port` or `https://host:port`: whether it is TLS, and where.
fn parse_endpoint(text: &str) -> Result<(bool, Authority), String> {
    let (tls, rest) = match (text.strip_prefix("https://"), text.strip_prefix("http://")) {
        (Some(rest), _) => (true, rest),
        (None, Some(rest)) => (false, rest),
        (None, None) => {
            return Err(format!(
                "endpoint {text:?} must start with http:// or https://"
            ));
        }
    };
    let authority: Authority = rest
        .trim_end_matches('/')
        .parse()
        .map_err(|e| format!("endpoint {text:?}: {e}"))?;
    if authority.port_u16().is_none() {
        return Err(format!("endpoint {text:?} has no port"));
    }
    Ok((tls, authority))
}
