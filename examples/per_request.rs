//! Runs one request shape a fixed number of times, in one thread, so that
//! a tool counting instructions or allocations sees the same work on every
//! run whatever else the machine is doing (docs/performance.md, "Method").
//!
//! ```text
//! per_request SCENARIO N
//!   get_hot | create_hot   route match + request transcode + response
//!                          transcode (what benches/hot_path.rs times)
//!   get | create | cache_hit
//!                          the whole gateway in process (edge layers,
//!                          pipeline, upstream call over loopback to the
//!                          demo Bookstore), as benches/pipeline.rs
//! ```
//!
//! The per-request figure is the difference of two runs divided by the
//! difference of their N, which cancels start-up:
//!
//! ```text
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/per_request get 200
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/per_request get 1200
//! valgrind target/release/examples/per_request get 1200   # "total heap usage: N allocs"
//! ```

use std::net::SocketAddr;
use std::path::Path;

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderValue, Method, Request};
use http_body_util::BodyExt;
use prost::Message;
use protogate::cli::demo::pb::bookstore::v1::{Book, Genre};
use protogate::route::path::normalize;
use protogate::snapshot::Compiled;
use protogate::transcode::{self, request::HttpInput};
use tower::ServiceExt;

const PROTO_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");

/// The body wrk posts in benches/load.sh and the peer harness.
const CREATE_BODY: &str = r#"{"title":"Designing Data-Intensive Gateways","author":"Grace B. Liskov-Knuth","isbn":"978-0-13-468599-1","genre":"GENRE_NONFICTION","pageCount":"512","tags":["api","http","grpc","json"],"publishTime":"2024-03-01T12:00:00Z","description":"Posted by wrk to measure JSON request decoding and transcoding.","rating":4.25,"inStock":true}"#;

fn main() {
    let mut args = std::env::args().skip(1);
    let scenario = args.next().unwrap_or_default();
    let count: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1000);
    let dir = tempfile::tempdir().expect("tempdir");
    match scenario.as_str() {
        "get_hot" => hot(dir.path(), Method::GET, count),
        "create_hot" => hot(dir.path(), Method::POST, count),
        "get" | "create" | "cache_hit" => whole(dir.path(), &scenario, count),
        _ => {
            eprintln!("usage: per_request get_hot|create_hot|get|create|cache_hit N");
            std::process::exit(2);
        }
    }
}

fn routes_toml(dir: &Path, upstream: SocketAddr, gateway_cache: bool) -> Compiled {
    let cache = if gateway_cache {
        ", gateway = true"
    } else {
        ""
    };
    let path = dir.join("routes.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\naccess_log = false\n[proto]\nfiles = [\"bookstore/v1/bookstore.proto\"]\n\
             include = [\"{PROTO_DIR}\"]\n[upstreams.bookstore]\nendpoints = [\"http://{upstream}\"]\n\
             [[routes]]\nservice = \"bookstore.v1.Bookstore\"\nupstream = \"bookstore\"\nauth = \"none\"\n\
             cache = {{ public = true, max_age = \"1h\"{cache} }}\n"
        ),
    )
    .expect("write routes.toml");
    let loaded = protogate::config::load(&path).expect("parses");
    protogate::snapshot::compile_for_serving(&loaded).expect("compiles")
}

/// Route match and both transcodes, no I/O.
fn hot(dir: &Path, method: Method, count: usize) {
    let compiled = routes_toml(dir, "127.0.0.1:1".parse().expect("addr"), false);
    let (table, plans) = (&compiled.routes, &compiled.plans);
    let json = HeaderValue::from_static("application/json");
    let (path, content_type, body, reply) = if method == Method::GET {
        ("/v1/shelves/1/books/2", None, Bytes::new(), sample_book(2))
    } else {
        let body = Bytes::from_static(CREATE_BODY.as_bytes());
        ("/v1/shelves/1/books", Some(&json), body, sample_book(1001))
    };
    let reply = Bytes::from(reply.encode_to_vec());
    for _ in 0..count {
        let normalized = normalize(std::hint::black_box(path)).expect("valid");
        let found = table.find(&method, &normalized).expect("route");
        let plan = &plans.get(found.binding).transcode;
        let input = HttpInput {
            captures: &found.captures,
            query: None,
            content_type,
            body: body.clone(),
            max_json_depth: 64,
            multipart: Some(transcode::MultipartLimits {
                max_part_bytes: 1 << 20,
                max_parts: 64,
            }),
        };
        let framed = transcode::request(plan, input).expect("request");
        let answer = transcode::response(plan, reply.clone()).expect("response");
        std::hint::black_box((framed, answer));
    }
}

/// The in-process gateway against the demo Bookstore, on one thread.
fn whole(dir: &Path, scenario: &str, count: usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let upstream = protogate::cli::demo::spawn("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bookstore");
        let compiled = routes_toml(dir, upstream, scenario == "cache_hit");
        let gateway = protogate::pipeline::Gateway::new(compiled.start().await);
        let router = protogate::pipeline::service(gateway);
        // The first request dials nothing (the pool is eager) but builds the
        // edge layers and, for cache_hit, fills the cache.
        send(&router, scenario).await;
        for _ in 0..count {
            send(&router, scenario).await;
        }
    });
}

async fn send(router: &protogate::pipeline::Public, scenario: &str) {
    let request = if scenario == "create" {
        Request::post("/v1/shelves/1/books")
            .header("content-type", "application/json")
            .body(Body::from(CREATE_BODY))
    } else {
        Request::get("/v1/shelves/1/books/2").body(Body::empty())
    }
    .expect("request");
    let response = router.clone().oneshot(request).await.expect("infallible");
    assert!(response.status().is_success(), "{}", response.status());
    let body = response.into_body().collect().await.expect("body");
    std::hint::black_box(body);
}

fn sample_book(id: i64) -> Book {
    Book {
        name: format!("shelves/1/books/{id}"),
        id,
        title: "The Pragmatic Benchmarker: Measuring Gateways Under Load".into(),
        author: "Ada Q. Lovelace-Hopper".into(),
        isbn: "978-3-16-148410-0".into(),
        genre: Genre::Science as i32,
        page_count: 352,
        tags: vec![
            "grpc".into(),
            "rest".into(),
            "performance".into(),
            "rust".into(),
        ],
        publish_time: Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        }),
        description: "A canned book used to benchmark REST/JSON to gRPC transcoding gateways."
            .into(),
        rating: 4.5,
        in_stock: true,
    }
}
