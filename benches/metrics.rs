//! What observability adds to one request, alone: recording its metrics
//! (in-flight guard, count, three latency histograms, bytes, a cache
//! lookup) and its trace context (a span id, the upstream `traceparent`).
//! The budget is 2 µs of CPU per request for all of it.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use protogate::metrics::Observation;
use protogate::response_cache::CacheStatus;
use protogate::trace::Trace;

const PROTO_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");

/// The Bookstore's routes on an upstream nobody serves: only the
/// snapshot's bindings matter here.
fn gateway(runtime: &tokio::runtime::Runtime) -> std::sync::Arc<protogate::pipeline::Gateway> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("routes.toml");
    std::fs::write(
        &path,
        format!(
            "[proto]\nfiles = [\"bookstore/v1/bookstore.proto\"]\ninclude = [\"{PROTO_DIR}\"]\n\
             [upstreams.bookstore]\nendpoints = [\"http://127.0.0.1:9\"]\n\
             [[routes]]\nservice = \"bookstore.v1.Bookstore\"\nupstream = \"bookstore\"\nauth = \"none\"\n"
        ),
    )
    .expect("write routes.toml");
    let loaded = protogate::config::load(&path).expect("parses");
    let compiled = protogate::snapshot::compile_for_serving(&loaded).expect("compiles");
    runtime.block_on(async { protogate::pipeline::Gateway::new(compiled.start().await) })
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let gateway = gateway(&runtime);
    let routes = gateway.metrics().routes(&gateway.snapshot());
    let observed = Observation {
        binding: Some(0),
        grpc_web: false,
        status: StatusCode::OK,
        total: Duration::from_micros(900),
        upstream: Some(Duration::from_micros(700)),
        request_bytes: 0,
        response_bytes: 120,
    };
    c.bench_function("metrics/record_one_request", |b| {
        b.iter(|| {
            let in_flight = gateway.metrics().in_flight();
            gateway.metrics().cache_lookup(CacheStatus::Miss);
            routes.record(&Method::GET, std::hint::black_box(&observed));
            drop(in_flight);
        })
    });
    let mut client = HeaderMap::new();
    client.insert(
        "traceparent",
        HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    );
    c.bench_function("trace/continue_and_propagate", |b| {
        b.iter(|| {
            let trace = Trace::start(std::hint::black_box(&client), true);
            let mut metadata = HeaderMap::new();
            trace.propagate(&mut metadata);
            std::hint::black_box(metadata);
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
