//! Connection pooling over real sockets: a burst of thousands of concurrent
//! requests rides exactly the configured number of upstream connections,
//! dialled at start-up, even when the upstream caps its streams.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use support::*;

const CONNECTIONS: usize = 3;
/// Enough to run every connection hot for a while; bounded so a debug build
/// on a loaded 2-core machine finishes a burst in a few seconds.
const REQUESTS: usize = 2000;
const CONCURRENCY: usize = 256;

/// A Bookstore routes.toml with `connections` connections to `upstream`.
fn pooled_toml(upstream: SocketAddr, connections: usize) -> String {
    bookstore_toml(upstream, "").replace(
        "connections = 2",
        &format!("connections = {connections}\ntimeout = \"20s\""),
    )
}

/// Waits (briefly) for the upstream to have accepted `expected` connections,
/// then checks no more arrive.
async fn assert_accepted_settles_at(accepted: &AtomicUsize, expected: usize) {
    let started = tokio::time::Instant::now();
    while accepted.load(Ordering::SeqCst) < expected && started.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(accepted.load(Ordering::SeqCst), expected);
}

/// A client allowed as many connections to the gateway as there are requests in flight.
fn wide_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .expect("client")
}

/// One burst at a time: two at once would only slow each other down.
static ONE_BURST_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Sends `REQUESTS` GETs, `CONCURRENCY` at a time; returns how many were 200
/// with the right book.
async fn burst(gateway: &TestGateway) -> usize {
    let _turn = ONE_BURST_AT_A_TIME.lock().await;
    let client = wide_client();
    let ok = Arc::new(AtomicUsize::new(0));
    futures_util::stream::iter(0..REQUESTS)
        .for_each_concurrent(CONCURRENCY, |i| {
            let client = client.clone();
            let ok = ok.clone();
            let url = format!("{}/v1/shelves/1/books/{}", gateway.base, 1 + i % 2);
            async move {
                let Ok(response) = client.get(&url).send().await else {
                    return;
                };
                if response.status() != 200 {
                    return;
                }
                let Ok(body) = response.json::<serde_json::Value>().await else {
                    return;
                };
                if body["name"] == format!("shelves/1/books/{}", 1 + i % 2) {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
        .await;
    ok.load(Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_dialled_at_start_up_before_any_request() {
    let (upstream, accepted) = spawn_bookstore().await;
    assert_eq!(accepted.load(Ordering::SeqCst), 0);
    let _gateway = spawn_gateway(&pooled_toml(upstream, CONNECTIONS)).await;
    assert_accepted_settles_at(&accepted, CONNECTIONS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_concurrent_requests_share_exactly_k_connections() {
    let (upstream, accepted) = spawn_bookstore().await;
    let gateway = spawn_gateway(&pooled_toml(upstream, CONNECTIONS)).await;
    assert_accepted_settles_at(&accepted, CONNECTIONS).await;
    assert_eq!(burst(&gateway).await, REQUESTS);
    assert_eq!(accepted.load(Ordering::SeqCst), CONNECTIONS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_stream_cap_queues_requests_on_the_same_k_connections() {
    let (upstream, accepted) = spawn_bookstore_with(Some(10)).await;
    let gateway = spawn_gateway(&pooled_toml(upstream, CONNECTIONS)).await;
    assert_accepted_settles_at(&accepted, CONNECTIONS).await;
    assert_eq!(burst(&gateway).await, REQUESTS);
    assert_eq!(accepted.load(Ordering::SeqCst), CONNECTIONS);
}
