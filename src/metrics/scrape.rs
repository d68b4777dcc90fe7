//! What is read at scrape time rather than counted twice: the upstream
//! pools' own counters and endpoint states, the response cache's size, and
//! the process (memory, file descriptors, uptime, build, last reload).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::auth::Way;
use crate::auth::jwt::JwtProvider;
use crate::snapshot::Snapshot;
use crate::upstream::Upstream;

/// The scrape-time collector: the snapshot being served and the process.
#[derive(Debug)]
pub(super) struct Live {
    snapshot: ArcSwap<Snapshot>,
    started: Instant,
    /// Whether any reload was attempted, and whether the last one worked.
    reloaded: AtomicBool,
    last_reload_ok: AtomicU8,
}

/// A metric name, its help, and its type.
type Descriptor = (&'static str, &'static str, MetricType);

// === impl Live ===

impl Live {
    pub(super) fn new(snapshot: Arc<Snapshot>) -> Live {
        Live {
            snapshot: ArcSwap::new(snapshot),
            started: Instant::now(),
            reloaded: AtomicBool::new(false),
            last_reload_ok: AtomicU8::new(1),
        }
    }

    pub(super) fn install(&self, snapshot: Arc<Snapshot>) {
        self.snapshot.store(snapshot);
    }

    pub(super) fn reloaded(&self, ok: bool) {
        self.reloaded.store(true, Ordering::Relaxed);
        self.last_reload_ok.store(u8::from(ok), Ordering::Relaxed);
    }

    fn encode_upstreams(
        &self,
        encoder: &mut DescriptorEncoder,
        upstreams: &[Arc<Upstream>],
    ) -> std::fmt::Result {
        type Read = fn(&Upstream) -> u64;
        let per_upstream: [(Descriptor, Read); 5] = [
            (
                (
                    "upstream_calls",
                    "Upstream calls made (first attempts)",
                    MetricType::Counter,
                ),
                |u| u.counters().calls.load(Ordering::Relaxed),
            ),
            (
                (
                    "upstream_retries",
                    "Upstream attempts after the first",
                    MetricType::Counter,
                ),
                |u| u.counters().retries.load(Ordering::Relaxed),
            ),
            (
                (
                    "upstream_retry_budget_exhausted",
                    "Retries refused because the retry budget was spent",
                    MetricType::Counter,
                ),
                |u| u.counters().budget_exhausted.load(Ordering::Relaxed),
            ),
            (
                (
                    "upstream_shed",
                    "Requests shed at max_concurrent_calls",
                    MetricType::Counter,
                ),
                |u| u.counters().shed.load(Ordering::Relaxed),
            ),
            (
                (
                    "upstream_calls_in_flight",
                    "Upstream calls in flight",
                    MetricType::Gauge,
                ),
                |u| u.calls_in_flight() as u64,
            ),
        ];
        for (descriptor, read) in per_upstream {
            let values = upstreams
                .iter()
                .map(|u| ([("upstream", u.name.clone())], read(u)));
            encode_family(encoder, descriptor, values)?;
        }
        self.encode_endpoints(encoder, upstreams)
    }

    fn encode_endpoints(
        &self,
        encoder: &mut DescriptorEncoder,
        upstreams: &[Arc<Upstream>],
    ) -> std::fmt::Result {
        type Read = fn(&crate::upstream::endpoint::Endpoint) -> u64;
        let per_endpoint: [(Descriptor, Read); 12] = [
            (
                (
                    "upstream_endpoint_connections",
                    "Live HTTP/2 connections to the endpoint",
                    MetricType::Gauge,
                ),
                |e| e.connected() as u64,
            ),
            (
                (
                    "upstream_endpoint_connections_wanted",
                    "Connections the endpoint keeps when all is well",
                    MetricType::Gauge,
                ),
                |e| e.size() as u64,
            ),
            (
                (
                    "upstream_endpoint_calls_in_flight",
                    "Calls in flight on the endpoint",
                    MetricType::Gauge,
                ),
                |e| e.in_flight() as u64,
            ),
            (
                (
                    "upstream_endpoint_healthy",
                    "1 while the active health check lets the endpoint take calls",
                    MetricType::Gauge,
                ),
                |e| u64::from(e.is_healthy()),
            ),
            (
                (
                    "upstream_endpoint_ejected",
                    "1 while outlier detection has ejected the endpoint",
                    MetricType::Gauge,
                ),
                |e| u64::from(e.outlier().is_ejected()),
            ),
            (
                (
                    "upstream_endpoint_ejections",
                    "Times outlier detection ejected the endpoint",
                    MetricType::Counter,
                ),
                |e| e.outlier().ejections(),
            ),
            (
                (
                    "upstream_endpoint_dial_failures",
                    "Dials to the endpoint that failed (refused, timed out, not HTTP/2, TLS)",
                    MetricType::Counter,
                ),
                |e| e.dial_failures(),
            ),
            (
                (
                    "upstream_endpoint_connections_closed_by_upstream",
                    "Connections the endpoint closed cleanly (after a GOAWAY)",
                    MetricType::Counter,
                ),
                |e| e.connections_closed_by_upstream(),
            ),
            (
                (
                    "upstream_endpoint_connections_lost",
                    "Connections to the endpoint lost to an error (reset, keepalive timeout)",
                    MetricType::Counter,
                ),
                |e| e.connections_lost(),
            ),
            (
                (
                    "upstream_endpoint_abandoned_calls_reset",
                    "Calls whose client left that were cancelled upstream at once (RST_STREAM)",
                    MetricType::Counter,
                ),
                |e| e.abandoned_calls_reset(),
            ),
            (
                (
                    "upstream_endpoint_abandoned_calls_left_running",
                    "Calls whose client left that were left to finish: their connection's reset budget was spent",
                    MetricType::Counter,
                ),
                |e| e.abandoned_calls_left_running(),
            ),
            (
                (
                    "upstream_endpoint_abandoned_calls_running",
                    "Calls whose client left that are still running to their end or deadline",
                    MetricType::Gauge,
                ),
                |e| e.abandoned_calls_running() as u64,
            ),
        ];
        let endpoints: Vec<_> = upstreams
            .iter()
            .map(|u| (u.name.clone(), u.pool.endpoints()))
            .collect();
        for (descriptor, read) in per_endpoint {
            let values = endpoints.iter().flat_map(|(name, endpoints)| {
                endpoints.iter().map(move |e| {
                    let labels = [
                        ("upstream", name.clone()),
                        ("endpoint", e.authority().to_string()),
                    ];
                    (labels, read(e))
                })
            });
            encode_family(encoder, descriptor, values)?;
        }
        Ok(())
    }

    fn encode_cache(
        &self,
        encoder: &mut DescriptorEncoder,
        snapshot: &Snapshot,
    ) -> std::fmt::Result {
        let Some(cache) = &snapshot.response_cache else {
            return Ok(());
        };
        let none: [(&str, String); 0] = [];
        encode_family(
            encoder,
            (
                "cache_bytes",
                "Bytes the gateway response cache holds",
                MetricType::Gauge,
            ),
            [(none.clone(), cache.weighted_size())],
        )?;
        encode_family(
            encoder,
            (
                "cache_coalesced",
                "Requests that waited on another's upstream fetch instead of making their own",
                MetricType::Counter,
            ),
            [(none, cache.coalesced())],
        )
    }

    fn encode_process(&self, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
        let none: [(&str, String); 0] = [];
        let gauge = |name, help| (name, help, MetricType::Gauge);
        encode_family(
            encoder,
            gauge("build_info", "Always 1; the version is the label"),
            [([("version", env!("CARGO_PKG_VERSION").to_string())], 1)],
        )?;
        encode_family(
            encoder,
            gauge("uptime_seconds", "Seconds since the gateway started"),
            [(none.clone(), self.started.elapsed().as_secs())],
        )?;
        if self.reloaded.load(Ordering::Relaxed) {
            encode_family(
                encoder,
                gauge(
                    "config_last_reload_ok",
                    "1 if the last reload was installed, 0 if it was refused",
                ),
                [(
                    none.clone(),
                    u64::from(self.last_reload_ok.load(Ordering::Relaxed)),
                )],
            )?;
        }
        encode_family(
            encoder,
            (
                "log_lines_dropped",
                "Log lines dropped because the writer fell behind",
                MetricType::Counter,
            ),
            [(none.clone(), crate::logging::dropped_lines())],
        )?;
        if let Some(rss) = resident_bytes() {
            encode_family(
                encoder,
                gauge("process_resident_memory_bytes", "Resident set size"),
                [(none.clone(), rss)],
            )?;
        }
        if let Some(fds) = open_fds() {
            encode_family(
                encoder,
                gauge("process_open_fds", "Open file descriptors"),
                [(none, fds)],
            )?;
        }
        Ok(())
    }
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let snapshot = self.snapshot.load_full();
        self.encode_upstreams(&mut encoder, &snapshot.upstreams)?;
        self.encode_cache(&mut encoder, &snapshot)?;
        encode_idempotency(&mut encoder, &snapshot)?;
        encode_providers(&mut encoder, &snapshot)?;
        self.encode_process(&mut encoder)
    }
}

/// Each JWT provider the routes use: keys held, JWKS fetches and failures.
fn encode_providers(encoder: &mut DescriptorEncoder, snapshot: &Snapshot) -> std::fmt::Result {
    let mut providers: Vec<&Arc<JwtProvider>> = Vec::new();
    for way in snapshot.plans.iter().flat_map(|plan| &plan.auth.ways) {
        if let Way::Jwt(provider, _) = way
            && !providers.iter().any(|p| p.name == provider.name)
        {
            providers.push(provider);
        }
    }
    type Read = fn(&JwtProvider) -> u64;
    let per_provider: [(Descriptor, Read); 3] = [
        (
            (
                "auth_provider_keys",
                "Keys the provider holds now",
                MetricType::Gauge,
            ),
            |p| p.key_count() as u64,
        ),
        (
            (
                "auth_jwks_fetches",
                "JWKS fetches made (refreshes and unknown-kid refetches)",
                MetricType::Counter,
            ),
            |p| p.jwks().map_or(0, |j| j.fetch_count()),
        ),
        (
            (
                "auth_jwks_fetch_failures",
                "JWKS fetches that failed (the last good keys stay in use)",
                MetricType::Counter,
            ),
            |p| p.jwks().map_or(0, |j| j.failure_count()),
        ),
    ];
    for (descriptor, read) in per_provider {
        let values = providers
            .iter()
            .map(|p| ([("provider", p.name.clone())], read(p)));
        encode_family(encoder, descriptor, values)?;
    }
    Ok(())
}

/// The `Idempotency-Key` store: keys held here, and what retries met.
fn encode_idempotency(encoder: &mut DescriptorEncoder, snapshot: &Snapshot) -> std::fmt::Result {
    // Exported (as zeros) without a store too, so dashboards need no special case.
    let idle = crate::idempotency::Counters::default();
    let store = snapshot.idempotency.as_ref();
    let none: [(&str, String); 0] = [];
    encode_family(
        encoder,
        (
            "idempotency_keys",
            "Idempotency keys the memory store holds (completed and in flight)",
            MetricType::Gauge,
        ),
        [(none, store.map_or(0, |s| s.memory_entries() as u64))],
    )?;
    let counters = store.map_or(&idle, |s| s.counters());
    let outcome = |name: &str, counter: &std::sync::atomic::AtomicU64| {
        (
            [("outcome", name.to_string())],
            counter.load(Ordering::Relaxed),
        )
    };
    encode_family(
        encoder,
        (
            "idempotency_outcomes",
            "Keyed writes that did not run: replayed answers, 409 in flight, 422 key reused; answers too large to store; Redis failures answered from memory",
            MetricType::Counter,
        ),
        [
            outcome("replayed", &counters.replays),
            outcome("in_flight", &counters.in_flight),
            outcome("key_reused", &counters.key_reused),
            outcome("too_large", &counters.too_large),
            outcome("redis_failure", &counters.redis_failures),
        ],
    )
}

/// Writes one family of constant values, each with its labels.
fn encode_family<const N: usize>(
    encoder: &mut DescriptorEncoder,
    (name, help, metric_type): Descriptor,
    values: impl IntoIterator<Item = ([(&'static str, String); N], u64)>,
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (labels, value) in values {
        let labels = labels.to_vec();
        let metric = family.encode_family(&labels)?;
        match metric_type {
            MetricType::Counter => ConstCounter::new(value).encode(metric)?,
            _ => ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(metric)?,
        }
    }
    Ok(())
}

/// The process's resident set size, from /proc (Linux); `None` elsewhere.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The process's open file descriptors, from /proc (Linux); `None` elsewhere.
fn open_fds() -> Option<u64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}
