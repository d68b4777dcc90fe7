//! DNS discovery: every A and AAAA address of a name is an endpoint,
//! re-resolved when the answer's TTL runs out (clamped to the configured
//! bounds). A failed or empty lookup keeps the last good set and is retried
//! with back-off, never sooner than the lower bound.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use http::uri::Authority;
use tokio::sync::watch;

use super::{Endpoints, FailureLog, publish, wait_unless_unwatched};
use crate::backoff::Backoff;

/// A `dns = "name:port"` upstream, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsConfig {
    /// The name to resolve.
    pub name: String,
    /// The port every address is dialled on.
    pub port: u16,
    /// Re-resolve no sooner than this, whatever the TTL (`dns_refresh_min`).
    pub refresh_min: Duration,
    /// Re-resolve no later than this, whatever the TTL (`dns_refresh_max`).
    pub refresh_max: Duration,
    /// Nameservers to ask instead of the system's (`dns_servers`).
    pub servers: Vec<SocketAddr>,
}

/// Starts the resolving task (see [`super::Discovery::watch`]).
pub(super) fn watch(config: DnsConfig, upstream: &str) -> watch::Receiver<Option<Endpoints>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(follow(config, FailureLog::new(upstream, "dns"), tx));
    rx
}

/// Resolves until every receiver is gone.
async fn follow(config: DnsConfig, mut failures: FailureLog, tx: watch::Sender<Option<Endpoints>>) {
    // Jitter draws from [d/2, d]: starting at twice the minimum keeps every
    // retry at or above it.
    let mut backoff = Backoff::new(config.refresh_min * 2, config.refresh_max);
    let resolver = loop {
        match resolver(&config) {
            Ok(resolver) => break resolver,
            Err(reason) => failures.failed(&reason),
        }
        if !wait_unless_unwatched(&tx, backoff.next_delay()).await {
            return;
        }
    };
    loop {
        let lookup = tokio::select! {
            lookup = resolve(&resolver, &config) => lookup,
            () = tx.closed() => return,
        };
        let delay = match lookup {
            Ok((addresses, valid_until)) => {
                failures.succeeded();
                backoff.reset();
                publish(&tx, addresses);
                refresh_delay(valid_until, &config)
            }
            Err(reason) => {
                failures.failed(&reason);
                backoff.next_delay()
            }
        };
        if !wait_unless_unwatched(&tx, delay).await {
            return;
        }
    }
}

/// How long to keep an answer: its TTL, clamped to the configured bounds.
fn refresh_delay(valid_until: Instant, config: &DnsConfig) -> Duration {
    valid_until.saturating_duration_since(Instant::now()).clamp(
        config.refresh_min,
        config.refresh_max.max(config.refresh_min),
    )
}

/// One lookup: the endpoints and when the answer expires, or why there are none.
async fn resolve(
    resolver: &TokioResolver,
    config: &DnsConfig,
) -> Result<(Vec<Authority>, Instant), String> {
    let lookup = resolver
        .lookup_ip(config.name.as_str())
        .await
        .map_err(|e| format!("lookup of {}: {e}", config.name))?;
    let addresses: Vec<Authority> = lookup
        .iter()
        .filter_map(|ip| endpoint(ip, config.port))
        .collect();
    if addresses.is_empty() {
        return Err(format!("{} has no A or AAAA record", config.name));
    }
    Ok((addresses, lookup.valid_until()))
}

fn endpoint(ip: IpAddr, port: u16) -> Option<Authority> {
    SocketAddr::new(ip, port).to_string().parse().ok()
}

/// A resolver for the configured nameservers, or the system's.
fn resolver(config: &DnsConfig) -> Result<TokioResolver, String> {
    let mut builder = if config.servers.is_empty() {
        TokioResolver::builder_tokio().map_err(|e| format!("system DNS configuration: {e}"))?
    } else {
        let servers = config.servers.iter().map(|s| nameserver(*s)).collect();
        TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
    };
    let options = builder.options_mut();
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    // The resolver's cache must not outlive our refresh bounds, or a
    // re-resolution would only read the cache back.
    options.positive_max_ttl = Some(config.refresh_max);
    options.negative_max_ttl = Some(config.refresh_min);
    builder.build().map_err(|e| format!("DNS resolver: {e}"))
}

/// A nameserver asked over UDP, and TCP for truncated answers.
fn nameserver(address: SocketAddr) -> NameServerConfig {
    let on_port = |mut connection: ConnectionConfig| {
        connection.port = address.port();
        connection
    };
    NameServerConfig::new(
        address.ip(),
        true,
        vec![
            on_port(ConnectionConfig::udp()),
            on_port(ConnectionConfig::tcp()),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(min_ms: u64, max_ms: u64) -> DnsConfig {
        DnsConfig {
            name: "example.internal".into(),
            port: 50051,
            refresh_min: Duration::from_millis(min_ms),
            refresh_max: Duration::from_millis(max_ms),
            servers: Vec::new(),
        }
    }

    #[test]
    fn refresh_follows_the_ttl_within_the_bounds() {
        let config = config(1_000, 60_000);
        let in_ = |secs| Instant::now() + Duration::from_secs(secs);
        assert_eq!(refresh_delay(in_(0), &config), Duration::from_secs(1));
        assert_eq!(refresh_delay(in_(3_600), &config), Duration::from_secs(60));
        let thirty = refresh_delay(in_(30), &config);
        assert!((Duration::from_secs(29)..=Duration::from_secs(30)).contains(&thirty));
    }

    #[test]
    fn ipv6_endpoints_are_bracketed() {
        let v6 = endpoint("::1".parse().expect("ip"), 50051).expect("authority");
        assert_eq!(v6.as_str(), "[::1]:50051");
        let v4 = endpoint("127.0.0.2".parse().expect("ip"), 50051).expect("authority");
        assert_eq!(v4.as_str(), "127.0.0.2:50051");
    }
}
