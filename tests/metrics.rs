//! `/metrics` on the admin listener: after a scripted mix of requests the
//! Prometheus text parses and counts exactly what was sent, per route
//! template, method and status class.

mod stream_upstream;
mod support;

use std::collections::BTreeMap;
use std::io::BufRead;

use prometheus_parse::{Scrape, Value};
use support::*;
use tokio::net::TcpListener;

/// sha256("test"): the API key the partner sends.
const KEY_SHA256: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

/// The Everything service (cached GET /v1/echo) on `echo`, and the
/// Bookstore behind an API key on `down`, an address that refuses.
fn mixed_toml(echo: std::net::SocketAddr, down: std::net::SocketAddr) -> String {
    format!(
        r#"
[server]
access_log = false

[proto]
files = ["testing/v1/everything.proto", "bookstore/v1/bookstore.proto"]
include = ["{{proto}}"]

[upstreams.echo]
endpoints = ["http://{echo}"]
connections = 1

[upstreams.bookstore]
endpoints = ["http://{down}"]
connections = 1

[auth.api_keys]
source = {{ header = "x-api-key" }}
keys = [{{ consumer = "partner", sha256 = "{KEY_SHA256}" }}]

[[routes]]
service = "testing.v1.EverythingService"
upstream = "echo"
auth = "none"
cache = {{ public = true, gateway = true, max_age = "1h" }}

[[routes]]
service = "bookstore.v1.Bookstore"
upstream = "bookstore"
auth = "api_key"
"#
    )
}

/// Serves the gateway's admin router on 127.0.0.1:0.
async fn spawn_admin(gateway: &TestGateway) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
    let addr = listener.local_addr().expect("addr");
    let router = protogate::admin::router(gateway.gateway.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

/// One scrape, parsed: (metric name, sorted labels) → value.
struct Scraped(BTreeMap<(String, Vec<(String, String)>), f64>);

impl Scraped {
    async fn fetch(admin: &str) -> Scraped {
        let response = client()
            .get(format!("{admin}/metrics"))
            .send()
            .await
            .expect("scrape");
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let text = response.text().await.expect("body");
        let scrape = Scrape::parse(text.as_bytes().lines()).expect("Prometheus text format");
        let mut values = BTreeMap::new();
        for sample in scrape.samples {
            let value = match sample.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                // Only the _count and _sum lines of histograms are read here.
                Value::Histogram(_) | Value::Summary(_) => continue,
            };
            let mut labels: Vec<(String, String)> = sample
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            labels.sort();
            let previous = values.insert((sample.metric, labels), value);
            assert!(previous.is_none(), "a series appears twice in:\n{text}");
        }
        Scraped(values)
    }

    /// The value of `metric` with exactly `labels`; 0 when absent.
    fn get(&self, metric: &str, labels: &[(&str, &str)]) -> f64 {
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        labels.sort();
        self.0
            .get(&(metric.to_string(), labels))
            .copied()
            .unwrap_or(0.0)
    }

    /// Every series of `metric` with a non-zero value.
    fn non_zero(&self, metric: &str) -> Vec<(Vec<(String, String)>, f64)> {
        self.0
            .iter()
            .filter(|((m, _), v)| m == metric && **v != 0.0)
            .map(|((_, l), v)| (l.clone(), *v))
            .collect()
    }
}

async fn get(url: String, key: Option<&str>) -> u16 {
    let mut request = client().get(url);
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    request.send().await.expect("send").status().as_u16()
}

#[tokio::test]
async fn a_scripted_mix_is_counted_exactly_per_route_method_and_status() {
    let echo = spawn_scripted(pool(), Reply::Echo).await;
    let (_refusing, down) = refusing_addr();
    let gateway = spawn_gateway(&mixed_toml(echo.addr, down)).await;
    let admin = spawn_admin(&gateway).await;
    let base = &gateway.base;

    // Three 200s on the cached route: one miss, then two hits.
    for _ in 0..3 {
        assert_eq!(
            get(format!("{base}/v1/echo?stringValue=a"), None).await,
            200
        );
    }
    // Two route misses.
    for path in ["/nope", "/v1/nope/deeper"] {
        assert_eq!(get(format!("{base}{path}"), None).await, 404);
    }
    // Two refusals: no key, a wrong key.
    assert_eq!(get(format!("{base}/v1/shelves"), None).await, 401);
    assert_eq!(get(format!("{base}/v1/shelves"), Some("wrong")).await, 401);
    // Two accepted calls to an upstream that is down.
    for _ in 0..2 {
        assert_eq!(get(format!("{base}/v1/shelves"), Some("test")).await, 503);
    }

    let m = Scraped::fetch(&admin).await;
    let requests = "protogate_requests_total";
    let count = |route, status| {
        m.get(
            requests,
            &[("route", route), ("method", "GET"), ("status", status)],
        )
    };
    assert_eq!(count("/v1/echo", "2xx"), 3.0);
    assert_eq!(count("unmatched", "4xx"), 2.0);
    assert_eq!(count("/v1/shelves", "4xx"), 2.0);
    assert_eq!(count("/v1/shelves", "5xx"), 2.0);
    assert_eq!(
        m.non_zero(requests).len(),
        4,
        "no other series counted anything: {:?}",
        m.non_zero(requests)
    );

    let seconds_count = |metric: &str, route| m.get(metric, &[("route", route)]);
    assert_eq!(
        seconds_count("protogate_request_duration_seconds_count", "/v1/echo"),
        3.0
    );
    assert_eq!(
        seconds_count("protogate_gateway_duration_seconds_count", "/v1/echo"),
        3.0
    );
    assert_eq!(
        seconds_count("protogate_upstream_duration_seconds_count", "/v1/echo"),
        1.0,
        "only the miss waited on the upstream"
    );
    assert_eq!(
        seconds_count("protogate_request_duration_seconds_count", "unmatched"),
        2.0
    );
    // The echoed body {"stringValue":"a"}, three times.
    assert_eq!(
        m.get("protogate_response_bytes_total", &[("route", "/v1/echo")]),
        3.0 * r#"{"stringValue":"a"}"#.len() as f64
    );

    let cache = |result| m.get("protogate_cache_lookups_total", &[("result", result)]);
    assert_eq!(
        (cache("miss"), cache("hit"), cache("stale")),
        (1.0, 2.0, 0.0)
    );
    assert!(m.get("protogate_cache_bytes", &[]) > 0.0);

    let refused = |reason| m.get("protogate_auth_rejections_total", &[("reason", reason)]);
    assert_eq!((refused("missing"), refused("invalid_key")), (1.0, 1.0));

    // Read from the pools' own counters at scrape time.
    assert_eq!(echo.call_count(), 1);
    assert_eq!(
        m.get("protogate_upstream_calls_total", &[("upstream", "echo")]),
        1.0
    );
    assert_eq!(
        m.get(
            "protogate_upstream_calls_total",
            &[("upstream", "bookstore")]
        ),
        2.0
    );
    let endpoint = |name, address: String, metric| {
        m.get(metric, &[("upstream", name), ("endpoint", &address)])
    };
    let connections = "protogate_upstream_endpoint_connections";
    assert_eq!(endpoint("echo", echo.addr.to_string(), connections), 1.0);
    assert_eq!(endpoint("bookstore", down.to_string(), connections), 0.0);
    assert_eq!(
        endpoint(
            "bookstore",
            down.to_string(),
            "protogate_upstream_endpoint_connections_wanted"
        ),
        1.0
    );

    assert_eq!(m.get("protogate_requests_in_flight", &[]), 0.0);
    assert_eq!(m.get("protogate_config_generation", &[]), 1.0);
    assert_eq!(
        m.get(
            "protogate_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert!(m.get("protogate_process_open_fds", &[]) > 0.0);
    assert!(m.get("protogate_process_resident_memory_bytes", &[]) > 0.0);
}

#[tokio::test]
async fn a_reload_bumps_the_generation_and_keeps_the_counts() {
    let echo = spawn_scripted(pool(), Reply::Echo).await;
    let (_refusing, down) = refusing_addr();
    let toml = mixed_toml(echo.addr, down);
    let gateway = spawn_gateway(&toml).await;
    let admin = spawn_admin(&gateway).await;
    let echo_url = format!("{}/v1/echo?stringValue=b", gateway.base);
    assert_eq!(get(echo_url.clone(), None).await, 200);

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, toml.replace("{proto}", PROTO_DIR)).expect("write");
    gateway.gateway.replace(compile_snapshot(&path).await);
    gateway.gateway.metrics().config_reloaded(false);
    assert_eq!(get(echo_url, None).await, 200);

    let m = Scraped::fetch(&admin).await;
    assert_eq!(m.get("protogate_config_generation", &[]), 2.0);
    assert_eq!(
        m.get("protogate_config_reloads_total", &[("result", "ok")]),
        1.0
    );
    assert_eq!(
        m.get("protogate_config_reloads_total", &[("result", "error")]),
        1.0
    );
    assert_eq!(m.get("protogate_config_last_reload_ok", &[]), 0.0);
    assert_eq!(
        m.get(
            "protogate_requests_total",
            &[("route", "/v1/echo"), ("method", "GET"), ("status", "2xx")]
        ),
        2.0,
        "counts span the two snapshots"
    );
}

/// An address on 127.0.0.1 that refuses connections: a socket bound to it
/// that never listens, kept for as long as the test holds it.
fn refusing_addr() -> (socket2::Socket, std::net::SocketAddr) {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    let addr = socket
        .local_addr()
        .expect("addr")
        .as_socket()
        .expect("an IP address");
    (socket, addr)
}

/// Every `protogate_*` name in `text`, without histogram sample suffixes.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("protogate_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        names.insert(base.to_string());
        rest = &tail[end..];
    }
    names
}

#[tokio::test]
async fn the_dashboard_and_the_readme_name_only_metrics_the_gateway_exports() {
    let echo = spawn_scripted(pool(), Reply::Echo).await;
    let (_refusing, down) = refusing_addr();
    let streams = stream_upstream::spawn_stream_upstream().await;
    let toml = mixed_toml(echo.addr, down).replace(
        "\"bookstore/v1/bookstore.proto\"]",
        "\"bookstore/v1/bookstore.proto\", \"testing/v1/streaming.proto\"]",
    ) + &format!(
        "\n[upstreams.streams]\nendpoints = [\"http://{}\"]\n\n[[routes]]\nservice = \"testing.v1.Streaming\"\nupstream = \"streams\"\nauth = \"none\"\nrate_limits = [{{ name = \"one\", key = \"route\", rate = 1, per = \"1h\" }}]\n",
        streams.addr
    );
    let gateway = spawn_gateway(&toml).await;
    let admin = spawn_admin(&gateway).await;
    // And a stream, so the stream families have a series.
    let ticks = client()
        .get(format!("{}/v1/ticks?count=1", gateway.base))
        .send()
        .await
        .expect("send");
    assert_eq!(ticks.text().await.expect("body").lines().count(), 1);
    // The stream's route allows one call an hour: a second is rate limited.
    assert_eq!(
        get(format!("{}/v1/ticks?count=1", gateway.base), None).await,
        429
    );
    // One of each: a cached answer, a refusal, a reload.
    assert_eq!(
        get(format!("{}/v1/echo?stringValue=c", gateway.base), None).await,
        200
    );
    assert_eq!(get(format!("{}/v1/shelves", gateway.base), None).await, 401);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, toml.replace("{proto}", PROTO_DIR)).expect("write");
    gateway.gateway.replace(compile_snapshot(&path).await);

    let text = client()
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    let exported: std::collections::BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect();
    let root = env!("CARGO_MANIFEST_DIR");
    for file in ["examples/grafana-dashboard.json", "README.md"] {
        let named = metric_names(&std::fs::read_to_string(format!("{root}/{file}")).expect("read"));
        assert!(!named.is_empty(), "{file} names no metric");
        let unknown: Vec<_> = named.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{file} names {unknown:?}, not exported:\n{text}"
        );
    }
    let documented =
        metric_names(&std::fs::read_to_string(format!("{root}/README.md")).expect("read"));
    let undocumented: Vec<_> = exported.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "README.md does not list {undocumented:?}"
    );
}

#[tokio::test]
async fn dial_failures_and_ejections_are_counted_per_endpoint() {
    let unavailable = || Reply::Status {
        code: 14,
        message: "busy".into(),
        details: None,
    };
    let failing = spawn_scripted(pool(), unavailable()).await;
    let healthy = spawn_scripted(pool(), Reply::Echo).await;
    let (_refusing, down) = refusing_addr();
    let gateway = spawn_gateway(&everything_toml_on(
        &[failing.addr, healthy.addr, down],
        "outlier = { consecutive_unavailable = 3, base_ejection_time = \"1h\" }",
        "",
    ))
    .await;
    let admin = spawn_admin(&gateway).await;
    for i in 0..20 {
        assert_eq!(
            get(format!("{}/v1/echo?stringValue=n{i}", gateway.base), None).await,
            200
        );
    }
    let m = Scraped::fetch(&admin).await;
    let at = |addr: std::net::SocketAddr| {
        [
            ("upstream", "echo".to_string()),
            ("endpoint", addr.to_string()),
        ]
    };
    let value = |metric: &str, addr| {
        let labels = at(addr);
        let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        m.get(metric, &labels)
    };
    assert!(value("protogate_upstream_endpoint_dial_failures_total", down) >= 1.0);
    assert_eq!(
        value(
            "protogate_upstream_endpoint_dial_failures_total",
            healthy.addr
        ),
        0.0
    );
    assert_eq!(
        value("protogate_upstream_endpoint_ejections_total", failing.addr),
        1.0
    );
    assert_eq!(
        value("protogate_upstream_endpoint_ejected", failing.addr),
        1.0
    );
    assert_eq!(
        value("protogate_upstream_endpoint_ejections_total", healthy.addr),
        0.0
    );
}

#[tokio::test]
async fn token_rejections_are_counted_by_kind_and_jwks_fetches_and_keys_per_provider() {
    let key = TestKey::ec("k1");
    let jwks = JwksServer::start(jwks_of(&[&key])).await;
    let tables = format!(
        "\n[auth.providers.idp]\nissuer = \"iss\"\nalgorithms = [\"ES256\"]\njwks_url = \"{}\"\n",
        jwks.url
    );
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&auth_toml(scripted.addr, "auth = \"idp\"", &tables)).await;
    let admin = spawn_admin(&gateway).await;
    let now = unix_now();
    let post = |token: String| {
        client()
            .post(format!("{}/v1/echo", gateway.base))
            .header("authorization", format!("Bearer {token}"))
            .json(&serde_json::json!({"stringValue": "x"}))
            .send()
    };
    let expired = key.sign(&serde_json::json!({"iss": "iss", "sub": "a", "exp": now - 600}));
    assert_eq!(post(expired).await.expect("send").status(), 401);
    let other = TestKey::ec("k1");
    let forged = other.sign(&serde_json::json!({"iss": "iss", "sub": "a", "exp": now + 600}));
    assert_eq!(post(forged).await.expect("send").status(), 401);
    let good = key.sign(&serde_json::json!({"iss": "iss", "sub": "a", "exp": now + 600}));
    assert_eq!(post(good).await.expect("send").status(), 200);

    let m = Scraped::fetch(&admin).await;
    let refused = |reason| m.get("protogate_auth_rejections_total", &[("reason", reason)]);
    assert_eq!((refused("expired"), refused("bad_signature")), (1.0, 1.0));
    let provider = [("provider", "idp")];
    assert_eq!(m.get("protogate_auth_provider_keys", &provider), 1.0);
    assert_eq!(
        m.get("protogate_auth_jwks_fetches_total", &provider),
        jwks.requests() as f64
    );
    assert!(m.get("protogate_auth_jwks_fetches_total", &provider) >= 1.0);
    assert_eq!(
        m.get("protogate_auth_jwks_fetch_failures_total", &provider),
        0.0
    );
}

#[tokio::test]
async fn streams_are_counted_open_and_by_how_they_ended() {
    let upstream = stream_upstream::spawn_stream_upstream().await;
    let toml = stream_upstream::streaming_toml(upstream.addr, r#"stream_timeout = "60s""#);
    let gateway = spawn_gateway(&toml).await;
    let admin = spawn_admin(&gateway).await;
    let http = client();
    let ok = http
        .get(format!("{}/v1/ticks?count=3", gateway.base))
        .send()
        .await
        .expect("send");
    assert_eq!(ok.text().await.expect("body").lines().count(), 3);
    let failed = http
        .get(format!("{}/v1/ticks?count=2&fail_code=9", gateway.base))
        .send()
        .await
        .expect("send");
    assert_eq!(failed.text().await.expect("body").lines().count(), 3);
    // A client that leaves mid-stream: counted when the gateway drops its
    // side, which is before the upstream sees the reset.
    let mut gone = reqwest::Client::new()
        .get(format!(
            "{}/v1/ticks?count=1000&interval_ms=20",
            gateway.base
        ))
        .send()
        .await
        .expect("send");
    gone.chunk().await.expect("read").expect("a first line");
    drop(gone);
    upstream.state.next_cancellation().await;

    let scraped = Scraped::fetch(&admin).await;
    let ended = |outcome| {
        scraped.get(
            "protogate_streams_total",
            &[
                ("route", "/v1/ticks"),
                ("transport", "http"),
                ("outcome", outcome),
            ],
        )
    };
    assert_eq!(ended("ok"), 1.0);
    assert_eq!(ended("failed"), 1.0);
    assert_eq!(ended("client_gone"), 1.0);
    let messages = scraped.get(
        "protogate_stream_messages_total",
        &[("route", "/v1/ticks"), ("transport", "http")],
    );
    assert!((6.0..=10.0).contains(&messages), "{messages} messages");
    assert_eq!(scraped.get("protogate_streams_open", &[]), 0.0);
}
