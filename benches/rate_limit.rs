//! The cost of a local rate-limit check per request: a binding's compiled
//! `ratelimit::Policy` counting one request, as the pipeline does after
//! authentication. Keys cycle over 10 000 client addresses (or consumers),
//! so every bucket stays well inside its quota and each check takes the
//! path an accepted request takes: find or create the key's bucket, run
//! GCRA, build the RateLimit fields.

use std::future::Future;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::task::{Context, Poll, Waker};

use criterion::{Criterion, criterion_group, criterion_main};
use http::HeaderMap;
use protogate::auth::Identity;
use protogate::ratelimit::{Caller, Policy};

const KEYS: u32 = 10_000;

/// The GET /v1/echo binding's policy, compiled from `rate_limits`.
fn policy(rate_limits: &str) -> Policy {
    let dir = std::env::temp_dir().join(format!("protogate-bench-rl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("routes.toml");
    let toml = format!(
        r#"
[proto]
files = ["testing/v1/everything.proto"]
include = ["{proto}"]

[upstreams.echo]
endpoints = ["http://127.0.0.1:50051"]

[auth.api_keys]
keys = [{{ consumer = "bench", sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" }}]

[[routes]]
service = "testing.v1.EverythingService"
upstream = "echo"
auth = "api_key"
rate_limits = [{rate_limits}]
"#,
        proto = concat!(env!("CARGO_MANIFEST_DIR"), "/proto"),
    );
    std::fs::write(&path, toml).expect("write routes.toml");
    let loaded = protogate::config::load(&path).unwrap_or_else(|_| panic!("parse"));
    let compiled = protogate::snapshot::compile(&loaded)
        .unwrap_or_else(|errors| panic!("{}", loaded.source.render(&errors)));
    let plan = compiled
        .plans
        .iter()
        .find(|p| p.http_method == "GET" && p.template.to_string() == "/v1/echo")
        .expect("GET /v1/echo");
    plan.rate_limit.clone()
}

fn checks(c: &mut Criterion) {
    let headers = HeaderMap::new();
    let identities: Vec<Identity> = (0..KEYS)
        .map(|i| Identity {
            consumer: Some(format!("consumer-{i}")),
            via: Some("api_key".into()),
            ..Identity::default()
        })
        .collect();
    let addresses: Vec<IpAddr> = (0..KEYS)
        .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))
        .collect();
    let cases = [
        (
            "one_limit_by_ip",
            r#"{ name = "per-ip", key = "ip", rate = 1000, per = "1s" }"#,
        ),
        (
            "one_limit_by_consumer",
            r#"{ name = "per-consumer", key = "consumer", rate = 1000, per = "1s" }"#,
        ),
        (
            "three_limits",
            r#"{ name = "per-ip", key = "ip", rate = 1000, per = "1s" },
               { name = "per-consumer", key = "consumer", rate = 1000, per = "1s" },
               { name = "route", key = "route", rate = 1000000000, per = "1s" }"#,
        ),
    ];
    let mut group = c.benchmark_group("rate_limit_check");
    for (name, limits) in cases {
        let policy = policy(limits);
        let mut i = 0usize;
        group.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % KEYS as usize;
                let caller = Caller {
                    identity: &identities[i],
                    client_ip: Some(addresses[i]),
                    headers: &headers,
                };
                let checked = ready(policy.check(caller));
                assert!(checked.refused.is_none(), "{name}: a request was refused");
                black_box(checked)
            })
        });
    }
    group.finish();
}

/// A local check never waits (only a Redis call would): poll it once.
fn ready<F: Future>(future: F) -> F::Output {
    let mut context = Context::from_waker(Waker::noop());
    match std::pin::pin!(future).poll(&mut context) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a local rate-limit check waited"),
    }
}

criterion_group!(benches, checks);
criterion_main!(benches);
