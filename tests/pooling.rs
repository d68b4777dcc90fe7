//! Connection pooling over real sockets: a burst of thousands of concurrent
//! requests rides exactly the configured number of upstream connections,
//! every one of them (counted per connection at the upstream), dialled at
//! start-up, even when the upstream caps its streams; turns are fair when a
//! connection is down, and an upstream that is not HTTP/2 is redialled
//! with a growing backoff.

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

/// The streams each upstream connection carried, after checking that there
/// are exactly `connections` of them and that every one carried at least
/// half of its fair share of `requests` (so no slot sat idle).
fn assert_streams_spread(streams: &StreamsPerConnection, connections: usize, requests: usize) {
    let per_connection: Vec<usize> = streams.lock().expect("lock").values().copied().collect();
    assert_eq!(per_connection.len(), connections, "{per_connection:?}");
    assert_eq!(per_connection.iter().sum::<usize>(), requests);
    let fair = requests / connections;
    assert!(
        per_connection.iter().all(|&n| n >= fair / 2),
        "uneven: {per_connection:?}"
    );
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
    let (upstream, accepted, streams) = spawn_counting_bookstore(None).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 0);
    // Start-up returns once every slot has the upstream's SETTINGS, which it
    // sends only after accepting: the count is final here, no waiting.
    let gateway = spawn_gateway(&pooled_toml(upstream, CONNECTIONS)).await;
    assert_eq!(accepted.load(Ordering::SeqCst), CONNECTIONS);
    assert!(streams.lock().expect("lock").is_empty());
    // The first requests ride those connections; none is dialled for them.
    for _ in 0..CONNECTIONS {
        let response = client()
            .get(format!("{}/v1/shelves/1/books/1", gateway.base))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 200);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), CONNECTIONS);
    assert_streams_spread(&streams, CONNECTIONS, CONNECTIONS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_concurrent_requests_share_exactly_k_connections() {
    let (upstream, accepted, streams) = spawn_counting_bookstore(None).await;
    let gateway = spawn_gateway(&pooled_toml(upstream, CONNECTIONS)).await;
    assert_eq!(burst(&gateway).await, REQUESTS);
    assert_eq!(accepted.load(Ordering::SeqCst), CONNECTIONS);
    assert_streams_spread(&streams, CONNECTIONS, REQUESTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_stream_cap_queues_requests_on_the_same_k_connections() {
    let (upstream, accepted, streams) = spawn_counting_bookstore(Some(10)).await;
    let gateway = spawn_gateway(&pooled_toml(upstream, CONNECTIONS)).await;
    assert_eq!(burst(&gateway).await, REQUESTS);
    assert_eq!(accepted.load(Ordering::SeqCst), CONNECTIONS);
    assert_streams_spread(&streams, CONNECTIONS, REQUESTS);
}

/// A pool of three on an upstream that serves only two connections: the
/// third slot never comes up. Each request must go to one of the two live
/// connections in turn, not "the dead slot's turn to its neighbour".
#[tokio::test]
async fn requests_are_spread_evenly_over_the_live_connections_when_one_is_down() {
    const CALLS: usize = 30;
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    scripted.serve_only_first(2);
    let toml = everything_toml(scripted.addr, "").replace(
        "connections = 1",
        "connections = 3\nreconnect_backoff = \"10ms\"\nreconnect_backoff_max = \"40ms\"",
    );
    let gateway = spawn_gateway(&toml).await;
    let client = client();
    for _ in 0..CALLS {
        let response = client
            .post(format!("{}/v1/echo", gateway.base))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 200);
    }
    let per_connection: Vec<usize> = scripted.calls_per_connection().into_values().collect();
    assert_eq!(per_connection, [CALLS / 2, CALLS / 2]);
}

/// Counts WARN events of the gateway's upstream pool.
#[derive(Clone, Default)]
struct PoolWarnings(Arc<AtomicUsize>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PoolWarnings {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let metadata = event.metadata();
        if *metadata.level() == tracing::Level::WARN
            && metadata.target().starts_with("protogate::upstream")
        {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// An upstream that answers the HTTP/2 preface with an HTTP/1 error page
/// is not "connected": its redials back off (10ms, 20ms, 40ms, ... with
/// jitter down to half) instead of restarting at 10ms after every
/// "successful" dial, and the failure is logged once, not per dial.
#[tokio::test(start_paused = true)]
async fn upstream_that_is_not_http2_is_redialled_with_growing_backoff_and_one_warning() {
    use tracing_subscriber::layer::SubscriberExt;
    let warnings = PoolWarnings::default();
    let _log =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(warnings.clone()));
    let (upstream, mut accepts) = spawn_garbage_upstream().await;
    let toml = everything_toml(upstream, "").replace(
        "connections = 1",
        "connections = 1\nreconnect_backoff = \"10ms\"\nreconnect_backoff_max = \"10s\"",
    );
    let _gateway = spawn_gateway(&toml).await;
    let first = accepts.recv().await.expect("the pool dials at start-up");
    // Paused time runs only as fast as the gateway's timers let it.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut dials = vec![first];
    while let Ok(at) = accepts.try_recv() {
        dials.push(at);
    }
    // Redials after 10, 20, 40, ... ms, each jittered down to half: a
    // growing backoff fits 7 or 8 dials in 1s; one reset after every dial
    // fits over 100.
    assert!(
        (4..=8).contains(&dials.len()),
        "{} dials in 1s: {dials:?}",
        dials.len()
    );
    let gaps: Vec<Duration> = dials.windows(2).map(|w| w[1] - w[0]).collect();
    for pair in gaps.windows(3) {
        assert!(pair[2] > pair[0], "the backoff does not grow: {gaps:?}");
    }
    assert_eq!(
        warnings.0.load(Ordering::SeqCst),
        1,
        "{} dials",
        dials.len()
    );
}
