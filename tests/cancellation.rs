//! Clients that leave before their answer: the gateway cancels their
//! upstream calls with RST_STREAM within a reset budget per connection, and
//! leaves the calls beyond it to finish (bounded by their deadline and a
//! count), so a burst of departures never looks like an HTTP/2 rapid-reset
//! attack to the upstream and never costs other clients their connection.
//! Real gateway, real HTTP/2 upstream, real sockets; tokio's paused clock.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use protogate::upstream::endpoint::Endpoint;
use support::*;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

/// An upstream that holds every call until the test releases it, and a
/// gateway with one connection to it, `cancel_budget`, and `route_extra`
/// in the route's table.
async fn held(cancel_budget: &str, route_extra: &str) -> (Scripted, TestGateway, Arc<Semaphore>) {
    let release = Arc::new(Semaphore::new(0));
    let reply = Reply::Hold {
        arrived: Arc::new(Notify::new()),
        release: release.clone(),
        reply: Box::new(Reply::Echo),
    };
    let scripted = spawn_scripted(pool(), reply).await;
    let toml = everything_toml_with(
        scripted.addr,
        &format!("cancel_budget = {cancel_budget}"),
        route_extra,
    );
    let gateway = spawn_gateway(&toml).await;
    (scripted, gateway, release)
}

/// `count` clients send `request(i)` to the held upstream and leave once
/// every call has reached it.
async fn clients_leave(
    scripted: &Scripted,
    count: usize,
    request: impl Fn(usize) -> reqwest::RequestBuilder,
) {
    let before = scripted.call_count();
    let clients: Vec<_> = (0..count)
        .map(|i| tokio::spawn(request(i).send()))
        .collect();
    wait_until("every call reaches the upstream", || {
        scripted.call_count() == before + count
    })
    .await;
    for client in clients {
        client.abort();
    }
}

fn post_echo(gateway: &TestGateway) -> reqwest::RequestBuilder {
    let request = client().post(format!("{}/v1/echo", gateway.base));
    request
        .header("content-type", "application/json")
        .body("{}")
}

fn endpoint(gateway: &TestGateway) -> Arc<Endpoint> {
    gateway.gateway.snapshot().upstreams[0].pool.endpoints()[0].clone()
}

/// Polls `done` on the paused clock; fails after a virtual minute.
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(60), "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn cancelled(scripted: &Scripted) -> usize {
    scripted.cancelled.load(Ordering::SeqCst)
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_departures_resets_only_the_budget_and_keeps_the_connection() {
    let budget = "{ burst = 3, per_second = 0.001, max_left_running = 100 }";
    let (scripted, gateway, release) = held(budget, "timeout = \"60s\"").await;
    clients_leave(&scripted, 10, |_| post_echo(&gateway)).await;
    let endpoint = endpoint(&gateway);
    wait_until("every departure is handled", || {
        endpoint.abandoned_calls_reset() + endpoint.abandoned_calls_left_running() == 10
    })
    .await;
    assert_eq!(endpoint.abandoned_calls_reset(), 3);
    assert_eq!(endpoint.abandoned_calls_left_running(), 7);
    assert_eq!(endpoint.abandoned_calls_running(), 7);
    wait_until("the upstream sees the three resets", || {
        cancelled(&scripted) == 3
    })
    .await;
    // The upstream answers the seven it still has; the gateway reads and
    // discards the answers, so none of them is reset.
    release.add_permits(7);
    wait_until("the calls left running end", || {
        endpoint.abandoned_calls_running() == 0
    })
    .await;
    assert_eq!(cancelled(&scripted), 3);
    assert_eq!(endpoint.in_flight(), 0);
    // The connection lives on and serves the next client.
    scripted.set_reply(Reply::Echo);
    let response = post_echo(&gateway).send().await.expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(
        scripted.accepted.load(Ordering::SeqCst),
        1,
        "one connection throughout"
    );
    let metrics = gateway.gateway.metrics().render();
    for line in [
        "protogate_upstream_endpoint_abandoned_calls_reset_total{",
        "protogate_upstream_endpoint_abandoned_calls_left_running_total{",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
}

#[tokio::test(start_paused = true)]
async fn beyond_max_left_running_a_departure_is_reset_anyway() {
    let budget = "{ burst = 0, per_second = 0, max_left_running = 2 }";
    let (scripted, gateway, release) = held(budget, "timeout = \"60s\"").await;
    clients_leave(&scripted, 5, |_| post_echo(&gateway)).await;
    let endpoint = endpoint(&gateway);
    wait_until("the upstream sees the resets", || cancelled(&scripted) == 3).await;
    assert_eq!(endpoint.abandoned_calls_left_running(), 2);
    assert_eq!(endpoint.abandoned_calls_reset(), 3);
    release.add_permits(2);
    wait_until("the calls left running end", || {
        endpoint.abandoned_calls_running() == 0
    })
    .await;
    assert_eq!(cancelled(&scripted), 3);
}

#[tokio::test(start_paused = true)]
async fn a_call_left_running_is_still_cancelled_at_its_deadline() {
    let budget = "{ burst = 0, per_second = 0 }";
    let (scripted, gateway, _release) = held(budget, "timeout = \"2s\"").await;
    let started = Instant::now();
    clients_leave(&scripted, 1, |_| post_echo(&gateway)).await;
    let endpoint = endpoint(&gateway);
    wait_until("the departure is handled", || {
        endpoint.abandoned_calls_left_running() == 1
    })
    .await;
    assert_eq!(cancelled(&scripted), 0);
    wait_until("the upstream sees the reset", || cancelled(&scripted) == 1).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(2),
        "reset before the deadline: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(2500),
        "reset long after it: {elapsed:?}"
    );
    wait_until("it no longer counts as running", || {
        endpoint.abandoned_calls_running() == 0 && endpoint.in_flight() == 0
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn within_the_budget_a_departure_cancels_the_call_at_once() {
    let (scripted, gateway, _release) = held("{}", "timeout = \"60s\"").await;
    let started = Instant::now();
    clients_leave(&scripted, 1, |_| post_echo(&gateway)).await;
    wait_until("the upstream sees the reset", || cancelled(&scripted) == 1).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let endpoint = endpoint(&gateway);
    assert_eq!(endpoint.abandoned_calls_reset(), 1);
    assert_eq!(endpoint.abandoned_calls_left_running(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_write_holding_an_idempotency_key_is_reset_not_left_running() {
    // With no budget at all, an unkeyed write would be left running; a keyed
    // one is reset, since its key is released for the client's retry.
    let route = "timeout = \"60s\"\nidempotency = { ttl = \"1h\" }";
    let (scripted, gateway, _release) = held("{ burst = 0, per_second = 0 }", route).await;
    clients_leave(&scripted, 1, |_| {
        post_echo(&gateway).header("idempotency-key", "\"order-1\"")
    })
    .await;
    wait_until("the upstream sees the reset", || cancelled(&scripted) == 1).await;
    let endpoint = endpoint(&gateway);
    assert_eq!(endpoint.abandoned_calls_reset(), 1);
    assert_eq!(endpoint.abandoned_calls_left_running(), 0);
    // The same budget leaves an unkeyed write running.
    clients_leave(&scripted, 1, |_| post_echo(&gateway)).await;
    wait_until("the departure is handled", || {
        endpoint.abandoned_calls_left_running() == 1
    })
    .await;
    assert_eq!(cancelled(&scripted), 1);
}
