//! Hot-path micro-benchmarks: route matching, request transcoding and
//! response transcoding for GetBook and CreateBook, and matching in a table
//! of a few hundred templates.

use std::hint::black_box;
use std::path::Path;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderValue, Method};
use prost::Message;
use protogate::cli::demo::pb::bookstore::v1::{Book, Genre};
use protogate::route::RouteTable;
use protogate::route::path::normalize;
use protogate::snapshot::Compiled;
use protogate::transcode::{self, request::HttpInput};

const PROTO_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");

fn compile(dir: &Path, toml: &str) -> Compiled {
    let path = dir.join("routes.toml");
    std::fs::write(&path, toml).expect("write routes.toml");
    let loaded = protogate::config::load(&path).expect("parses");
    protogate::snapshot::compile(&loaded).expect("compiles")
}

fn bookstore(dir: &Path) -> Compiled {
    compile(
        dir,
        &format!(
            "[proto]\nfiles = [\"bookstore/v1/bookstore.proto\"]\ninclude = [\"{PROTO_DIR}\"]\n\
             [upstreams.bookstore]\nendpoints = [\"http://127.0.0.1:1\"]\n\
             [[routes]]\nservice = \"bookstore.v1.Bookstore\"\nupstream = \"bookstore\"\nauth = \"none\"\n"
        ),
    )
}

/// A service with `n` methods, each bound to its own template mixing
/// literals, variables, multi-segment variables and custom verbs.
fn large_table(dir: &Path, n: usize) -> RouteTable {
    let mut proto = String::from(
        "syntax = \"proto3\";\npackage big.v1;\nimport \"google/api/annotations.proto\";\n\
         message Req { string name = 1; string id = 2; string parent = 3; }\nservice Big {\n",
    );
    for i in 0..n {
        let template = match i % 4 {
            0 => format!("/v1/resource{i}/{{id}}"),
            1 => format!("/v1/projects/{{parent}}/resource{i}/{{id}}"),
            2 => format!("/v1/{{name=projects/*/items{i}/*}}"),
            _ => format!("/v1/resource{i}/{{id}}:action{i}"),
        };
        proto.push_str(&format!(
            "  rpc M{i}(Req) returns (Req) {{ option (google.api.http) = {{get: \"{template}\"}}; }}\n"
        ));
    }
    proto.push_str("}\n");
    std::fs::write(dir.join("big.proto"), proto).expect("write proto");
    compile(
        dir,
        &format!(
            "[proto]\nfiles = [\"big.proto\"]\ninclude = [\"{}\"]\n\
             [upstreams.big]\nendpoints = [\"http://127.0.0.1:1\"]\n\
             [[routes]]\nservice = \"big.v1.Big\"\nupstream = \"big\"\nauth = \"none\"\n",
            dir.display()
        ),
    )
    .routes
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

const CREATE_BODY: &str = r#"{"title":"Designing Data-Intensive Gateways","author":"Grace B. Liskov-Knuth","isbn":"978-0-13-468599-1","genre":"GENRE_NONFICTION","pageCount":"512","tags":["api","http","grpc","json"],"publishTime":"2024-03-01T12:00:00Z","description":"Posted by wrk to measure JSON request decoding and transcoding.","rating":4.25,"inStock":true}"#;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let bookstore = bookstore(dir.path());
    let (table, plans) = (&bookstore.routes, &bookstore.plans);
    let book_bytes = Bytes::from(sample_book(2).encode_to_vec());
    let json = HeaderValue::from_static("application/json");

    c.bench_function("get_book/route+request+response", |b| {
        b.iter(|| {
            let path = normalize(black_box("/v1/shelves/1/books/2")).expect("valid");
            let found = table.find(&Method::GET, &path).expect("route");
            let framed = transcode::request(
                &plans.get(found.binding).transcode,
                HttpInput {
                    captures: &found.captures,
                    query: None,
                    content_type: None,
                    body: Bytes::new(),
                    max_json_depth: 64,
                    multipart: Some(transcode::MultipartLimits {
                        max_part_bytes: 1 << 20,
                        max_parts: 64,
                    }),
                },
            )
            .expect("request");
            let reply =
                transcode::response(&plans.get(found.binding).transcode, book_bytes.clone())
                    .expect("response");
            black_box((framed, reply));
        })
    });

    let created = Bytes::from(sample_book(1001).encode_to_vec());
    let body = Bytes::from_static(CREATE_BODY.as_bytes());
    c.bench_function("create_book/route+request+response", |b| {
        b.iter(|| {
            let path = normalize(black_box("/v1/shelves/1/books")).expect("valid");
            let found = table.find(&Method::POST, &path).expect("route");
            let framed = transcode::request(
                &plans.get(found.binding).transcode,
                HttpInput {
                    captures: &found.captures,
                    query: None,
                    content_type: Some(&json),
                    body: body.clone(),
                    max_json_depth: 64,
                    multipart: Some(transcode::MultipartLimits {
                        max_part_bytes: 1 << 20,
                        max_parts: 64,
                    }),
                },
            )
            .expect("request");
            let reply = transcode::response(&plans.get(found.binding).transcode, created.clone())
                .expect("response");
            black_box((framed, reply));
        })
    });

    // The request alone, straight to wire bytes and through DynamicMessage.
    let create_path = normalize("/v1/shelves/1/books").expect("valid");
    let create = table.find(&Method::POST, &create_path).expect("route");
    let create_input = || HttpInput {
        captures: &create.captures,
        query: None,
        content_type: Some(&json),
        body: body.clone(),
        max_json_depth: 64,
        multipart: None,
    };
    let create_plan = &plans.get(create.binding).transcode;
    c.bench_function("create_book/request_only", |b| {
        b.iter(|| black_box(transcode::request(create_plan, create_input()).expect("request")))
    });
    c.bench_function("create_book/request_only_general", |b| {
        b.iter(|| {
            black_box(transcode::request::general(create_plan, create_input()).expect("request"))
        })
    });

    let path = normalize("/v1/shelves/1/books/2").expect("valid");
    c.bench_function("get_book/route_only", |b| {
        b.iter(|| black_box(table.find(&Method::GET, black_box(&path)).expect("route")))
    });
    let found = table.find(&Method::GET, &path).expect("route");
    c.bench_function("get_book/response_only", |b| {
        b.iter(|| {
            black_box(
                transcode::response(&plans.get(found.binding).transcode, book_bytes.clone())
                    .expect("response"),
            )
        })
    });

    let big_dir = tempfile::tempdir().expect("tempdir");
    let big = large_table(big_dir.path(), 400);
    let paths: Vec<_> = [
        "/v1/resource396/abc",
        "/v1/projects/p1/resource397/xyz",
        "/v1/projects/p1/items398/i9",
        "/v1/resource399/abc:action399",
        "/v1/resource0/abc",
    ]
    .iter()
    .map(|p| normalize(p).expect("valid"))
    .collect();
    c.bench_function("route_find/400_templates", |b| {
        b.iter(|| {
            for path in &paths {
                black_box(big.find(&Method::GET, path).expect("route"));
            }
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
