//! What crosses the gateway besides the message: the upstream's metadata
//! is built from scratch (request id, trace context, X-Forwarded-*, and only
//! the allowlisted request headers), so hop-by-hop headers, client-sent
//! `grpc-*` headers and anything not on the list never reach the upstream;
//! and allowlisted upstream metadata comes back as response headers.

use std::net::{IpAddr, SocketAddr};

use http::header::{AUTHORIZATION, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, request::Parts};

use crate::auth::Identity;
use crate::headers::{
    TRACEPARENT, TRACESTATE, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO, X_REQUEST_ID,
};

/// The TCP peer of a client connection, set by the listener.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// Which headers cross the gateway besides the ones it sets itself,
/// compiled from `[headers]` and `[server] trusted_proxy_hops`.
#[derive(Debug, Clone, Default)]
pub struct Forwarding {
    /// Request headers forwarded as metadata.
    pub request: Vec<HeaderName>,
    /// Response metadata returned as headers.
    pub response: Vec<HeaderName>,
    /// Proxies in front whose `X-Forwarded-For` entries are trusted.
    pub trusted_proxy_hops: usize,
}

/// Whether the metadata built for this request carries one of the caller's
/// credentials (the Authorization header under `forward_authorization`, or
/// a forwarded cookie or credential header): its answer is then the
/// caller's own and must never be shared by a cache.
pub fn carries_credential(
    headers: &HeaderMap,
    forwarding: &Forwarding,
    forward_authorization: bool,
) -> bool {
    (forward_authorization && headers.contains_key(AUTHORIZATION))
        || forwarding
            .request
            .iter()
            .any(|name| is_credential_header(name) && headers.contains_key(name))
}

/// Headers that carry a credential by their name.
fn is_credential_header(name: &HeaderName) -> bool {
    let name = name.as_str();
    matches!(name, "authorization" | "proxy-authorization" | "cookie")
        || name.contains("api-key")
        || name.contains("apikey")
}

/// The request's authority, as the upstream sees it in `x-forwarded-host`:
/// `Host` (HTTP/1) or `:authority` (h2).
pub fn authority(parts: &Parts) -> Option<HeaderValue> {
    parts.headers.get(HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    })
}

/// Builds the metadata sent upstream. Client header values copied into it
/// must be visible ASCII (gRPC's ASCII-Value, 0x20-0x7E): an upstream would
/// decode obs-text its own way, so such a value is dropped, never re-encoded.
pub fn upstream(
    parts: &Parts,
    forwarding: &Forwarding,
    request_id: &HeaderValue,
    identity: &Identity,
    forward_authorization: bool,
) -> HeaderMap {
    let mut metadata = HeaderMap::with_capacity(6 + forwarding.request.len());
    metadata.insert(X_REQUEST_ID, request_id.clone());
    let hop_only = connection_options(&parts.headers);
    let crosses = |name: &HeaderName| !hop_only.iter().any(|o| o == name.as_str());
    for name in [TRACEPARENT, TRACESTATE] {
        if !crosses(&name) {
            continue;
        }
        if let Some(value) = parts.headers.get(&name) {
            metadata.insert(name, value.clone());
        }
    }
    let peer = parts.extensions.get::<ClientAddr>().map(|c| c.0.ip());
    if let Some(chain) = forwarded_for(&parts.headers, peer, forwarding.trusted_proxy_hops)
        && let Ok(value) = HeaderValue::from_str(&chain)
    {
        metadata.insert(X_FORWARDED_FOR, value);
    }
    metadata.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    if let Some(host) = authority(parts) {
        metadata.insert(X_FORWARDED_HOST, host);
    }
    for name in forwarding.request.iter().filter(|n| crosses(n)) {
        for value in parts.headers.get_all(name) {
            metadata.append(name.clone(), value.clone());
        }
    }
    if forward_authorization && let Some(value) = parts.headers.get(AUTHORIZATION) {
        metadata.insert(AUTHORIZATION, value.clone());
    }
    let mut metadata = visible_ascii_only(metadata);
    // Last, so identity always wins over anything above: a client can never
    // set what only authentication sets.
    for (name, value) in &identity.metadata {
        metadata.insert(name.clone(), value.clone());
    }
    metadata
}

/// `metadata` without the values gRPC metadata cannot carry.
fn visible_ascii_only(metadata: HeaderMap) -> HeaderMap {
    let visible = |value: &HeaderValue| value.as_bytes().iter().all(|b| (0x20..=0x7e).contains(b));
    // Nearly always nothing is dropped: keep the map instead of copying it.
    if metadata.values().all(visible) {
        return metadata;
    }
    let mut kept = HeaderMap::with_capacity(metadata.len());
    for (name, value) in &metadata {
        if visible(value) {
            kept.append(name.clone(), value.clone());
        } else {
            tracing::debug!(header = %name, "value outside visible ASCII not forwarded upstream");
        }
    }
    kept
}

/// The header names a `Connection` header lists (lowercased): RFC 9110
/// §7.6.1 makes them hop-by-hop for this one message, so they are not
/// forwarded even when allowlisted.
fn connection_options(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|text| text.split(','))
        .map(|option| option.trim().to_ascii_lowercase())
        .filter(|option| !option.is_empty())
        .collect()
}

/// The address chain to send as `X-Forwarded-For`: the client's own list is
/// trusted only for the configured number of proxy hops in front of the
/// gateway; with zero hops it is ignored and only the TCP peer is sent.
fn forwarded_for(headers: &HeaderMap, peer: Option<IpAddr>, trusted_hops: usize) -> Option<String> {
    let chain = trusted_chain(headers, peer?, trusted_hops);
    Some(
        chain
            .iter()
            .map(IpAddr::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    )
}

/// The client's address (what rate limits count by): the first address of
/// the chain sent as `X-Forwarded-For`, i.e. the TCP peer unless trusted
/// proxies stand in front, then the address the outermost of them saw.
pub fn client_ip(parts: &Parts, trusted_hops: usize) -> Option<IpAddr> {
    let peer = parts.extensions.get::<ClientAddr>()?.0.ip();
    trusted_chain(&parts.headers, peer, trusted_hops)
        .first()
        .copied()
}

/// The trusted part of `X-Forwarded-For`, then the TCP peer.
fn trusted_chain(headers: &HeaderMap, peer: IpAddr, trusted_hops: usize) -> Vec<IpAddr> {
    // Every entry in order; a value that is not text counts as one entry
    // that cannot be parsed.
    let entries: Vec<Option<&str>> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .flat_map(|value| match value.to_str() {
            Ok(text) => text.split(',').map(|a| Some(a.trim())).collect(),
            Err(_) => vec![None],
        })
        .collect();
    // The `trusted_hops` rightmost entries were written by proxies the
    // operator trusts. An entry that is not an address ends the trusted
    // part: skipping it would shift the window left, onto an entry the
    // client wrote itself.
    let mut chain: Vec<IpAddr> = entries
        .iter()
        .rev()
        .take(trusted_hops)
        .map_while(|entry| entry.and_then(parse_address))
        .collect();
    chain.reverse();
    chain.push(peer);
    chain
}

/// An `X-Forwarded-For` entry: an IP address, with or without a port.
fn parse_address(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|a| a.ip()))
        .ok()
}

/// Copies allowlisted upstream metadata into the HTTP response headers.
pub fn downstream(upstream: &[&HeaderMap], allowlist: &[HeaderName], response: &mut HeaderMap) {
    for name in allowlist {
        for map in upstream {
            for value in map.get_all(name) {
                response.append(name.clone(), value.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            X_FORWARDED_FOR,
            HeaderValue::from_str(value).expect("ascii"),
        );
        h
    }

    #[test]
    fn values_outside_visible_ascii_are_not_forwarded() {
        let mut metadata = HeaderMap::new();
        metadata.append("x-tenant", HeaderValue::from_static("acme"));
        metadata.append("x-tenant", HeaderValue::from_static("beta"));
        metadata.append("x-region", HeaderValue::from_static("eu west"));
        assert_eq!(visible_ascii_only(metadata.clone()), metadata, "kept whole");
        let obs_text = HeaderValue::from_bytes(b"caf\xc3\xa9").expect("obs-text");
        metadata.append("x-region", obs_text);
        metadata.append(
            "x-label",
            HeaderValue::from_bytes(b"tab\there").expect("htab"),
        );
        let kept = visible_ascii_only(metadata);
        assert_eq!(kept.get_all("x-tenant").iter().count(), 2);
        let regions: Vec<_> = kept.get_all("x-region").iter().collect();
        assert_eq!(regions, ["eu west"]);
        assert!(!kept.contains_key("x-label"));
    }

    #[test]
    fn spoofed_forwarded_for_is_ignored_without_trusted_hops() {
        let peer = "10.0.0.9".parse().ok();
        assert_eq!(
            forwarded_for(&xff("1.2.3.4"), peer, 0).as_deref(),
            Some("10.0.0.9")
        );
    }

    #[test]
    fn trusted_hops_take_entries_from_the_right() {
        let peer = "10.0.0.9".parse().ok();
        let headers = xff("6.6.6.6, 203.0.113.7");
        assert_eq!(
            forwarded_for(&headers, peer, 1).as_deref(),
            Some("203.0.113.7, 10.0.0.9")
        );
    }

    #[test]
    fn an_unparseable_trusted_entry_does_not_shift_trust_left() {
        let peer = "10.0.0.9".parse().ok();
        let headers = xff("6.6.6.6, unknown");
        assert_eq!(
            forwarded_for(&headers, peer, 1).as_deref(),
            Some("10.0.0.9")
        );
        let headers = xff("6.6.6.6, 203.0.113.7:4711");
        assert_eq!(
            forwarded_for(&headers, peer, 1).as_deref(),
            Some("203.0.113.7, 10.0.0.9")
        );
        let headers = xff("6.6.6.6, 198.51.100.1, 203.0.113.7");
        assert_eq!(
            forwarded_for(&headers, peer, 2).as_deref(),
            Some("198.51.100.1, 203.0.113.7, 10.0.0.9")
        );
    }

    #[test]
    fn connection_names_hop_only_headers() {
        let mut h = HeaderMap::new();
        h.append(
            http::header::CONNECTION,
            HeaderValue::from_static("close, X-Tenant"),
        );
        h.append(http::header::CONNECTION, HeaderValue::from_static("te"));
        assert_eq!(connection_options(&h), ["close", "x-tenant", "te"]);
    }
}
