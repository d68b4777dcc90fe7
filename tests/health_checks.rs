//! Active health checks: a real `grpc.health.v1` server (tonic-health)
//! beside the Bookstore on each endpoint. An endpoint that answers
//! NOT_SERVING gets no calls once two checks have seen it, and gets calls
//! again after it passes.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::Request;
use support::*;
use tokio::net::TcpListener;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// A Bookstore with a health service, counting Bookstore calls and health checks.
struct Instance {
    addr: SocketAddr,
    reporter: HealthReporter,
    calls: Arc<AtomicUsize>,
    checks: Arc<AtomicUsize>,
}

async fn spawn_instance() -> Instance {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    let calls = Arc::new(AtomicUsize::new(0));
    let checks = Arc::new(AtomicUsize::new(0));
    let (count_calls, count_checks) = (calls.clone(), checks.clone());
    let counter = tower::util::MapRequestLayer::new(move |request: Request<tonic::body::Body>| {
        if request.uri().path().starts_with("/grpc.health") {
            count_checks.fetch_add(1, Ordering::SeqCst);
        } else {
            count_calls.fetch_add(1, Ordering::SeqCst);
        }
        request
    });
    let bookstore = protogate::cli::demo::pb::bookstore::v1::bookstore_server::BookstoreServer::new(
        protogate::cli::demo::Store::with_sample_data(),
    );
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .layer(counter)
            .add_service(health)
            .add_service(bookstore)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await;
    });
    Instance {
        addr,
        reporter,
        calls,
        checks,
    }
}

/// Waits until `instance` has answered `more` health checks beyond `seen`.
async fn checks_after(instance: &Instance, seen: usize, more: usize) {
    for _ in 0..500 {
        if instance.checks.load(Ordering::SeqCst) >= seen + more {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the gateway did not check the endpoint {more} more times");
}

async fn get_books(gateway: &TestGateway, count: usize) {
    for _ in 0..count {
        let answer = client()
            .get(format!("{}/v1/shelves/1/books/1", gateway.base))
            .send()
            .await
            .expect("send");
        assert_eq!(answer.status(), 200);
    }
}

#[tokio::test]
async fn an_endpoint_answering_not_serving_gets_no_calls_after_two_checks_and_returns_when_serving()
{
    let a = spawn_instance().await;
    let b = spawn_instance().await;
    let toml = bookstore_toml(a.addr, "").replace(
        &format!("endpoints = [\"http://{}\"]", a.addr),
        &format!(
            "endpoints = [\"http://{}\", \"http://{}\"]\nhealth_check = {{ interval = \"50ms\", timeout = \"1s\" }}",
            a.addr, b.addr
        ),
    );
    let gateway = spawn_gateway(&toml).await;
    get_books(&gateway, 20).await;
    assert!(
        b.calls.load(Ordering::SeqCst) > 0,
        "both endpoints take calls while serving"
    );

    b.reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    // Two check intervals: two checks that saw NOT_SERVING.
    checks_after(&b, b.checks.load(Ordering::SeqCst), 2).await;
    let before = b.calls.load(Ordering::SeqCst);
    get_books(&gateway, 30).await;
    assert_eq!(
        b.calls.load(Ordering::SeqCst),
        before,
        "no calls to a NOT_SERVING endpoint"
    );

    b.reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    checks_after(&b, b.checks.load(Ordering::SeqCst), 2).await;
    get_books(&gateway, 30).await;
    assert!(
        b.calls.load(Ordering::SeqCst) > before,
        "back in after passing a check"
    );
}

#[tokio::test]
async fn health_checks_ask_about_the_configured_service() {
    let a = spawn_instance().await;
    let b = spawn_instance().await;
    // Only the Bookstore service is NOT_SERVING on b; the server as a whole is fine.
    b.reporter
        .set_service_status("bookstore.v1.Bookstore", ServingStatus::NotServing)
        .await;
    a.reporter
        .set_service_status("bookstore.v1.Bookstore", ServingStatus::Serving)
        .await;
    let toml = bookstore_toml(a.addr, "").replace(
        &format!("endpoints = [\"http://{}\"]", a.addr),
        &format!(
            "endpoints = [\"http://{}\", \"http://{}\"]\nhealth_check = {{ interval = \"50ms\", service = \"bookstore.v1.Bookstore\" }}",
            a.addr, b.addr
        ),
    );
    let gateway = spawn_gateway(&toml).await;
    checks_after(&b, 0, 2).await;
    let before = b.calls.load(Ordering::SeqCst);
    get_books(&gateway, 30).await;
    assert_eq!(b.calls.load(Ordering::SeqCst), before);
    assert!(a.calls.load(Ordering::SeqCst) >= 30);
}
