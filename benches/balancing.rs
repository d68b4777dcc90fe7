//! What balancing and retry bookkeeping cost each call: picking one of
//! three live endpoints by power of two choices (with its health, ejection
//! and in-flight checks), counting the outcome for outlier detection, and
//! the retry budget's deposit. The endpoints are demo Bookstores on
//! loopback, so the connections are real; no call is made.

use std::net::SocketAddr;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use protogate::upstream::outlier::{Outcome, OutlierConfig};
use protogate::upstream::retry::RetryBudget;
use protogate::upstream::{CancelPolicy, Discovery, Pool, PoolConfig, RetrySettings};

async fn pool(endpoints: &[SocketAddr]) -> Pool {
    Pool::start(PoolConfig {
        name: "bench".into(),
        discovery: Discovery::Static(
            endpoints
                .iter()
                .map(|a| a.to_string().parse().expect("authority"))
                .collect(),
        ),
        connections: Some(2),
        connect_timeout: Duration::from_secs(1),
        keepalive_interval: Duration::from_secs(20),
        keepalive_timeout: Duration::from_secs(10),
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_secs(5),
        outlier: OutlierConfig {
            consecutive_transport_failures: 5,
            consecutive_unavailable: 5,
            base_ejection_time: Duration::from_secs(10),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 50,
        },
        health: None,
        tls: None,
        cancel: CancelPolicy {
            burst: 10,
            per_second: 5.0,
            max_left_running: 100,
        },
    })
    .await
}

fn balancing(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let pool = runtime.block_on(async {
        let mut endpoints = Vec::new();
        for _ in 0..3 {
            let addr = SocketAddr::from(([127, 0, 0, 1], 0));
            endpoints.push(protogate::cli::demo::spawn(addr).await.expect("bookstore"));
        }
        pool(&endpoints).await
    });
    assert_eq!(pool.connected(), 6, "every connection is up");
    let _guard = runtime.enter();
    c.bench_function("p2c lease and outcome, 3 endpoints", |b| {
        b.iter(|| {
            let lease = pool.lease(None).expect("a live endpoint");
            pool.record(lease.endpoint(), Outcome::Answered);
        })
    });
    let budget = RetryBudget::new(&RetrySettings {
        budget_percent: 20.0,
        budget_min_per_second: 10,
        budget_window: Duration::from_secs(10),
        backoff: Duration::from_millis(25),
        backoff_max: Duration::from_millis(250),
        min_remaining: Duration::from_millis(5),
    });
    c.bench_function("retry budget deposit", |b| b.iter(|| budget.deposit()));
}

criterion_group!(benches, balancing);
criterion_main!(benches);
