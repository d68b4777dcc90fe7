//! The whole gateway in process (edge layers, routing, transcoding, the
//! upstream call over loopback to the demo Bookstore) for GetBook: a miss
//! that goes through to the upstream versus a hit in the gateway's own
//! response cache. Only the client socket is left out.

use std::sync::Arc;

use axum::body::Body;
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use http_body_util::BodyExt;
use tower::ServiceExt;

const PROTO_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");

async fn gateway(
    upstream: std::net::SocketAddr,
    gateway_cache: bool,
) -> protogate::pipeline::Public {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("routes.toml");
    let cache = if gateway_cache {
        ", gateway = true"
    } else {
        ""
    };
    std::fs::write(
        &path,
        format!(
            "[server]\naccess_log = false\n[proto]\nfiles = [\"bookstore/v1/bookstore.proto\"]\ninclude = [\"{PROTO_DIR}\"]\n\
             [upstreams.bookstore]\nendpoints = [\"http://{upstream}\"]\n\
             [[routes]]\nservice = \"bookstore.v1.Bookstore\"\nupstream = \"bookstore\"\nauth = \"none\"\n\
             cache = {{ public = true, max_age = \"1h\"{cache} }}\n"
        ),
    )
    .expect("write routes.toml");
    let loaded = protogate::config::load(&path).expect("parses");
    let compiled = protogate::snapshot::compile_for_serving(&loaded).expect("compiles");
    protogate::pipeline::service(protogate::pipeline::Gateway::new(compiled.start().await))
}

async fn get_book(router: &protogate::pipeline::Public) {
    let request = Request::get("/v1/shelves/1/books/2")
        .body(Body::empty())
        .expect("request");
    let response = router.clone().oneshot(request).await.expect("infallible");
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.expect("body");
    std::hint::black_box(body);
}

fn bench(c: &mut Criterion) {
    let runtime = Arc::new(tokio::runtime::Runtime::new().expect("runtime"));
    let (miss, hit) = runtime.block_on(async {
        let upstream = protogate::cli::demo::spawn("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bookstore");
        (
            gateway(upstream, false).await,
            gateway(upstream, true).await,
        )
    });
    c.bench_function("pipeline/get_book_through_upstream", |b| {
        b.to_async(runtime.as_ref()).iter(|| get_book(&miss))
    });
    runtime.block_on(get_book(&hit));
    c.bench_function("pipeline/get_book_gateway_cache_hit", |b| {
        b.to_async(runtime.as_ref()).iter(|| get_book(&hit))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
