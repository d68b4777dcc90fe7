//! Rate limits counted in the gateway (no Redis), through real HTTP into a
//! scripted upstream: each key kind, tiers, several limits on one route,
//! the 429 (Retry-After, RetryInfo, QuotaFailure), the RateLimit fields on
//! every answer of a limited route, and the bound on tracked keys.
//!
//! Windows are an hour long, so the few milliseconds (or, on the paused
//! clock, the seconds to the next idle timer) a test takes never give a
//! bucket back a request: every count below is exact.

mod support;

use std::time::Duration;

use reqwest::header::HeaderMap;
use support::*;

const HOUR: u64 = 3600;

/// A routes.toml for the Everything service with `route` lines in its
/// `[[routes]]` table and `tables` after it.
fn limited_toml(upstream: std::net::SocketAddr, route: &str, tables: &str) -> String {
    format!(
        r#"
[server]
access_log = false
trusted_proxy_hops = 1

[proto]
files = ["testing/v1/everything.proto"]
include = ["{{proto}}"]

[upstreams.echo]
endpoints = ["http://{upstream}"]
connections = 1

[[routes]]
service = "testing.v1.EverythingService"
upstream = "echo"
{route}
{tables}
"#
    )
}

/// An `[auth.api_keys]` table reading `keys.toml` in `dir`, written with
/// `(consumer, key, tier)` entries.
fn api_keys(dir: &std::path::Path, keys: &[(&str, &str, Option<&str>)]) -> String {
    let mut file = String::new();
    for (consumer, key, tier) in keys {
        let digest = protogate::auth::api_key::digest_hex(key);
        file.push_str(&format!(
            "[[keys]]\nconsumer = \"{consumer}\"\nsha256 = \"{digest}\"\n"
        ));
        if let Some(tier) = tier {
            file.push_str(&format!("tier = \"{tier}\"\n"));
        }
    }
    let path = dir.join("keys.toml");
    std::fs::write(&path, file).expect("write keys file");
    format!("[auth.api_keys]\nkeys_file = \"{}\"\n", path.display())
}

thread_local! {
    /// One client per test (each runs on its own thread and runtime), so
    /// hundreds of requests do not each build one.
    static HTTP: reqwest::Client = client();
}

async fn get(gateway: &TestGateway, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = HTTP
        .with(reqwest::Client::clone)
        .get(format!("{}{path}", gateway.base));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("request")
}

/// The statuses of `n` GETs of /v1/echo with `headers`.
async fn statuses(gateway: &TestGateway, n: usize, headers: &[(&str, &str)]) -> Vec<u16> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(get(gateway, "/v1/echo", headers).await.status().as_u16());
    }
    out
}

fn field<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header in {headers:?}"))
        .to_str()
        .expect("ascii")
}

#[tokio::test]
async fn a_consumer_limit_counts_each_api_key_consumer_apart() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = api_keys(
        dir.path(),
        &[("partner-a", "key-a", None), ("partner-b", "key-b", None)],
    );
    let route = r#"auth = "api_key"
rate_limits = [{ name = "per-consumer", key = "consumer", rate = 2, per = "1h" }]"#;
    let gateway = spawn_gateway(&limited_toml(scripted.addr, route, &keys)).await;
    assert_eq!(
        statuses(&gateway, 3, &[("x-api-key", "key-a")]).await,
        [200, 200, 429]
    );
    assert_eq!(
        statuses(&gateway, 2, &[("x-api-key", "key-b")]).await,
        [200, 200]
    );
    assert_eq!(
        scripted.call_count(),
        4,
        "a refused request never reaches the upstream"
    );
}

#[tokio::test]
async fn a_tier_in_the_keys_file_gives_its_consumers_the_tiers_rate() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = api_keys(
        dir.path(),
        &[
            ("free-co", "key-free", None),
            ("gold-co", "key-gold", Some("gold")),
        ],
    );
    let route = r#"auth = "api_key"
rate_limits = [{ name = "per-consumer", key = "consumer", rate = 1, per = "1h", tiers = { gold = { rate = 4 } } }]"#;
    let gateway = spawn_gateway(&limited_toml(scripted.addr, route, &keys)).await;
    assert_eq!(
        statuses(&gateway, 2, &[("x-api-key", "key-free")]).await,
        [200, 429]
    );
    let gold = get(&gateway, "/v1/echo", &[("x-api-key", "key-gold")]).await;
    assert_eq!(gold.status(), 200);
    assert_eq!(
        field(gold.headers(), "ratelimit-policy"),
        "\"per-consumer\";q=4;w=3600",
        "a tier's caller is told its own quota"
    );
    assert_eq!(
        field(gold.headers(), "ratelimit"),
        "\"per-consumer\";r=3;t=900"
    );
    assert_eq!(
        statuses(&gateway, 4, &[("x-api-key", "key-gold")]).await,
        [200, 200, 200, 429]
    );
}

#[tokio::test]
async fn an_ip_limit_counts_the_address_the_trusted_proxy_saw() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let route = r#"auth = "none"
rate_limits = [{ name = "per-ip", key = "ip", rate = 1, per = "1h" }]"#;
    let gateway = spawn_gateway(&limited_toml(scripted.addr, route, "")).await;
    // One trusted hop: the rightmost entry is the client; what it wrote to
    // the left of it is its own invention and does not make a new key.
    let first = [("x-forwarded-for", "1.1.1.1, 203.0.113.7")];
    let spoofed = [("x-forwarded-for", "2.2.2.2, 203.0.113.7")];
    let other = [("x-forwarded-for", "203.0.113.8")];
    assert_eq!(statuses(&gateway, 1, &first).await, [200]);
    let refused = get(&gateway, "/v1/echo", &spoofed).await;
    assert_eq!(refused.status(), 429);
    let body: serde_json::Value = refused.json().await.expect("json");
    assert_eq!(
        body["details"][2]["violations"][0]["subject"],
        "ip:203.0.113.7"
    );
    assert_eq!(statuses(&gateway, 1, &other).await, [200]);
}

#[tokio::test]
async fn a_route_limit_is_one_bucket_per_binding() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let route = r#"auth = "none"
rate_limits = [{ name = "whole-route", key = "route", rate = 1, per = "1h" }]"#;
    let gateway = spawn_gateway(&limited_toml(scripted.addr, route, "")).await;
    let from_a = [("x-forwarded-for", "198.51.100.1")];
    let from_b = [("x-forwarded-for", "198.51.100.2")];
    assert_eq!(statuses(&gateway, 1, &from_a).await, [200]);
    assert_eq!(
        statuses(&gateway, 1, &from_b).await,
        [429],
        "callers share it"
    );
    let other_binding = client()
        .post(format!("{}/v1/echo", gateway.base))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("post");
    assert_eq!(
        other_binding.status(),
        200,
        "POST /v1/echo has its own bucket"
    );
}

#[tokio::test]
async fn a_header_limit_counts_each_value_apart() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let route = r#"auth = "none"
rate_limits = [{ name = "per-tenant", key = "header:x-tenant", rate = 1, per = "1h" }]"#;
    let gateway = spawn_gateway(&limited_toml(scripted.addr, route, "")).await;
    assert_eq!(
        statuses(&gateway, 2, &[("x-tenant", "acme")]).await,
        [200, 429]
    );
    assert_eq!(
        statuses(&gateway, 1, &[("x-tenant", "globex")]).await,
        [200]
    );
    // No header at all is one more bucket of its own.
    assert_eq!(statuses(&gateway, 2, &[]).await, [200, 429]);
}

#[tokio::test]
async fn every_limit_must_pass_and_the_answer_reports_the_tightest() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let route = r#"auth = "none"
rate_limits = [
  { name = "route-wide", key = "route", rate = 5, per = "1h" },
  { name = "per-ip", key = "ip", rate = 2, per = "1h" },
]"#;
    let gateway = spawn_gateway(&limited_toml(scripted.addr, route, "")).await;
    let a = [("x-forwarded-for", "192.0.2.1")];
    let first = get(&gateway, "/v1/echo", &a).await;
    assert_eq!(first.status(), 200);
    assert_eq!(
        field(first.headers(), "ratelimit-policy"),
        "\"route-wide\";q=5;w=3600, \"per-ip\";q=2;w=3600"
    );
    assert_eq!(field(first.headers(), "ratelimit"), "\"per-ip\";r=1;t=1800");
    assert_eq!(statuses(&gateway, 2, &a).await, [200, 429]);
    // Three of route-wide's five are gone: the refusal came from per-ip,
    // which is checked after it, so route-wide was charged for it too. A
    // second address finds route-wide the tightest (ties go to the first).
    let b = [("x-forwarded-for", "192.0.2.2")];
    let from_b = get(&gateway, "/v1/echo", &b).await;
    assert_eq!(
        field(from_b.headers(), "ratelimit"),
        "\"route-wide\";r=1;t=2880"
    );
    assert_eq!(statuses(&gateway, 1, &b).await, [200]);
    let refused = get(&gateway, "/v1/echo", &[("x-forwarded-for", "192.0.2.3")]).await;
    assert_eq!(refused.status(), 429);
    // route-wide's fifth slot frees up 12 minutes after the first request,
    // however long this test has taken so far.
    let retry_after: u64 = field(refused.headers(), "retry-after")
        .parse()
        .expect("seconds");
    assert!((600..=720).contains(&retry_after), "{retry_after}");
    assert_eq!(
        field(refused.headers(), "ratelimit"),
        format!("\"route-wide\";r=0;t={retry_after}")
    );
}

#[tokio::test]
async fn a_refusal_is_429_with_retry_after_retry_info_and_quota_failure() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let route = r#"auth = "none"
rate_limits = [{ name = "per-ip", key = "ip", rate = 4, per = "1h", burst = 1 }]"#;
    let gateway = spawn_gateway(&limited_toml(scripted.addr, route, "")).await;
    assert_eq!(statuses(&gateway, 1, &[]).await, [200]);
    let refused = get(&gateway, "/v1/echo", &[]).await;
    assert_eq!(refused.status(), 429);
    let headers = refused.headers().clone();
    // One request every 15 minutes; the one just made took this one's slot.
    let retry_after: u64 = field(&headers, "retry-after").parse().expect("seconds");
    assert!(
        (HOUR / 4 - 1..=HOUR / 4).contains(&retry_after),
        "{retry_after}"
    );
    assert_eq!(field(&headers, "content-type"), "application/json");
    assert_eq!(
        field(&headers, "ratelimit-policy"),
        "\"per-ip\";q=4;w=3600;protogate-burst=1"
    );
    assert_eq!(
        field(&headers, "ratelimit"),
        format!("\"per-ip\";r=0;t={retry_after}"),
        "Retry-After is not earlier than the end of the effective window"
    );
    let body: serde_json::Value = refused.json().await.expect("json");
    assert_eq!(body["code"], 8, "RESOURCE_EXHAUSTED: {body}");
    let details = body["details"].as_array().expect("details");
    assert_eq!(
        details[0]["@type"],
        "type.googleapis.com/google.rpc.ErrorInfo"
    );
    assert_eq!(details[0]["reason"], "RATE_LIMITED");
    assert_eq!(details[0]["metadata"]["limit"], "per-ip");
    assert_eq!(
        details[1]["@type"],
        "type.googleapis.com/google.rpc.RetryInfo"
    );
    let delay = details[1]["retryDelay"]
        .as_str()
        .expect("a Duration string");
    let seconds: f64 = delay.trim_end_matches('s').parse().expect("seconds");
    assert!(
        delay.ends_with('s') && seconds.ceil() as u64 == retry_after,
        "{delay}"
    );
    assert_eq!(
        details[2]["@type"],
        "type.googleapis.com/google.rpc.QuotaFailure"
    );
    assert_eq!(details[2]["violations"][0]["subject"], "ip:127.0.0.1");
    assert_eq!(
        details[2]["violations"][0]["description"],
        "4 requests per 3600 s (limit 'per-ip')"
    );
    assert_eq!(scripted.call_count(), 1);
}

#[tokio::test]
async fn every_answer_of_a_limited_route_carries_the_fields() {
    let scripted = spawn_scripted(
        pool(),
        Reply::Status {
            code: 14,
            message: "down".into(),
            details: None,
        },
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = api_keys(dir.path(), &[("partner", "the-key", None)]);
    let route = r#"auth = "api_key"
rate_limits = [{ name = "per-consumer", key = "consumer", rate = 10, per = "1h" }]
[routes.methods.EchoQuery]
auth = "none"
rate_limits = [{ name = "per-ip", key = "ip", rate = 10, per = "1h" }]
cache = { max_age = "1m", public = true }"#;
    let gateway = spawn_gateway(&limited_toml(scripted.addr, route, &keys)).await;
    let policy = "\"per-consumer\";q=10;w=3600";
    // An upstream failure (503).
    let failed = client()
        .post(format!("{}/v1/echo", gateway.base))
        .header("x-api-key", "the-key")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("post");
    assert_eq!(failed.status(), 503);
    assert_eq!(field(failed.headers(), "ratelimit-policy"), policy);
    assert_eq!(
        field(failed.headers(), "ratelimit"),
        "\"per-consumer\";r=9;t=360"
    );
    // A bad body (400), counted before the body was read.
    let bad = client()
        .post(format!("{}/v1/echo", gateway.base))
        .header("x-api-key", "the-key")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("post");
    assert_eq!(bad.status(), 400);
    assert_eq!(
        field(bad.headers(), "ratelimit"),
        "\"per-consumer\";r=8;t=720"
    );
    // Refused by authentication: the caller is unknown, the policy is not.
    let unauthenticated = client()
        .post(format!("{}/v1/echo", gateway.base))
        .body("{}")
        .send()
        .await
        .expect("post");
    assert_eq!(unauthenticated.status(), 401);
    assert_eq!(field(unauthenticated.headers(), "ratelimit-policy"), policy);
    assert!(unauthenticated.headers().get("ratelimit").is_none());
    // A success and a 304 on the method's own limit.
    scripted.set_reply(Reply::Echo);
    let ok = get(&gateway, "/v1/echo", &[]).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(
        field(ok.headers(), "ratelimit-policy"),
        "\"per-ip\";q=10;w=3600"
    );
    let etag = field(ok.headers(), "etag").to_string();
    let not_modified = get(&gateway, "/v1/echo", &[("if-none-match", &etag)]).await;
    assert_eq!(not_modified.status(), 304);
    assert_eq!(
        field(not_modified.headers(), "ratelimit"),
        "\"per-ip\";r=8;t=720"
    );
}

#[tokio::test]
async fn a_flood_of_new_addresses_keeps_tracked_keys_bounded() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let route = r#"auth = "none"
rate_limits = [{ name = "per-ip", key = "ip", rate = 1, per = "1h" }]"#;
    let tables = "[rate_limits]\nmax_tracked_keys = 50\n";
    let gateway = spawn_gateway(&limited_toml(scripted.addr, route, tables)).await;
    let mut answered = Vec::new();
    for i in 0..400u32 {
        let address = format!("10.0.{}.{}", i / 256, i % 256);
        answered.push(statuses(&gateway, 1, &[("x-forwarded-for", &address)]).await[0]);
    }
    let snapshot = gateway.gateway.snapshot();
    let plan = snapshot
        .plans
        .iter()
        .find(|p| p.http_method == "GET" && p.template.to_string() == "/v1/echo");
    let tracked = plan.expect("GET /v1/echo").rate_limit.tracked_keys();
    assert_eq!(
        tracked,
        [("per-ip".to_string(), 50)],
        "memory stays bounded"
    );
    // The first 50 got their own buckets; past the bound, new addresses
    // share one bucket (its one request, then refusals), so a flood cannot
    // buy itself a fresh quota per address either.
    assert!(answered[..50].iter().all(|s| *s == 200));
    assert_eq!(answered[50], 200);
    assert!(
        answered[51..].iter().all(|s| *s == 429),
        "{:?}",
        &answered[51..60]
    );
    // An address tracked before the flood keeps its own bucket.
    assert_eq!(
        statuses(&gateway, 1, &[("x-forwarded-for", "10.0.0.0")]).await,
        [429]
    );
}

#[tokio::test(start_paused = true)]
async fn a_refused_caller_is_let_in_again_once_retry_after_has_passed() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let route = r#"auth = "none"
rate_limits = [{ name = "per-ip", key = "ip", rate = 1, per = "1h" }]"#;
    let gateway = spawn_gateway(&limited_toml(scripted.addr, route, "")).await;
    assert_eq!(statuses(&gateway, 1, &[]).await, [200]);
    let refused = get(&gateway, "/v1/echo", &[]).await;
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = field(refused.headers(), "retry-after")
        .parse()
        .expect("seconds");
    tokio::time::advance(Duration::from_secs(retry_after)).await;
    assert_eq!(statuses(&gateway, 1, &[]).await, [200]);
}

#[tokio::test]
async fn refusals_are_counted_by_route_and_key_and_browsers_may_read_the_fields() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let route = r#"auth = "none"
rate_limits = [{ name = "per-ip", key = "ip", rate = 1, per = "1h" }]"#;
    let tables = "[cors]\nallow_origins = [\"https://app.example\"]\n";
    let gateway = spawn_gateway(&limited_toml(scripted.addr, route, tables)).await;
    let origin = [("origin", "https://app.example")];
    assert_eq!(statuses(&gateway, 3, &origin).await, [200, 429, 429]);
    let answer = get(&gateway, "/v1/echo", &origin).await;
    let exposed = field(answer.headers(), "access-control-expose-headers").to_ascii_lowercase();
    for name in ["ratelimit-policy", "ratelimit", "retry-after"] {
        assert!(exposed.split(',').any(|e| e.trim() == name), "{exposed}");
    }
    let metrics = gateway.gateway.metrics().render();
    assert!(
        metrics.contains("protogate_rate_limited_total{route=\"/v1/echo\",key=\"ip\"} 3"),
        "{metrics}"
    );
}
