//! CORS at the edge, over real sockets with a scripted upstream that counts
//! calls: exact origins and one-label `*` patterns are admitted, preflights
//! are answered by the gateway without an upstream call, a disallowed origin
//! gets no `Access-Control-*` header at all, and credentials, max-age and
//! exposed headers follow `[cors]`.

mod support;

use http::HeaderMap;
use support::*;

/// `[cors]` with an exact origin, a pattern, credentials and an exposed header.
const CORS: &str = r#"
[cors]
allow_origins = ["http://localhost:3000", "https://*.example.com"]
expose_headers = ["x-tenant"]
allow_credentials = true
max_age = "1h"
"#;

/// The scripted Echo upstream behind a gateway with `cors` appended.
async fn setup(cors: &str) -> (Scripted, TestGateway) {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, cors)).await;
    (scripted, gateway)
}

/// GET /v1/echo from `origin`.
async fn get_from(gateway: &TestGateway, origin: Option<&str>) -> HeaderMap {
    let mut request = client().get(format!("{}/v1/echo", gateway.base));
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    let response = request.send().await.expect("send");
    assert_eq!(response.status(), 200);
    response.headers().clone()
}

/// A preflight for `method` with `headers` from `origin` to `path`.
async fn preflight(
    gateway: &TestGateway,
    path: &str,
    origin: &str,
    method: &str,
    headers: &str,
) -> reqwest::Response {
    client()
        .request(http::Method::OPTIONS, format!("{}{path}", gateway.base))
        .header("origin", origin)
        .header("access-control-request-method", method)
        .header("access-control-request-headers", headers)
        .send()
        .await
        .expect("send")
}

fn text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| v.to_str().expect("ASCII").to_string())
}

/// The comma-separated tokens of every `name` line, lower-cased.
fn tokens(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.to_str().expect("ASCII").split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Every `Access-Control-*` header name present.
fn access_control(headers: &HeaderMap) -> Vec<String> {
    headers
        .keys()
        .map(|k| k.as_str().to_string())
        .filter(|k| k.starts_with("access-control-"))
        .collect()
}

#[tokio::test]
async fn exact_origin_is_echoed_with_credentials_and_exposed_headers() {
    let (scripted, gateway) = setup(CORS).await;
    let headers = get_from(&gateway, Some("http://localhost:3000")).await;
    assert_eq!(
        text(&headers, "access-control-allow-origin").as_deref(),
        Some("http://localhost:3000")
    );
    assert_eq!(
        text(&headers, "access-control-allow-credentials").as_deref(),
        Some("true")
    );
    let exposed = tokens(&headers, "access-control-expose-headers");
    for name in ["x-request-id", "server-timing", "etag", "x-tenant"] {
        assert!(exposed.contains(&name.to_string()), "{name} in {exposed:?}");
    }
    assert!(tokens(&headers, "vary").contains(&"origin".to_string()));
    assert_eq!(scripted.call_count(), 1);
}

#[tokio::test]
async fn star_pattern_admits_exactly_one_subdomain_label() {
    let (_scripted, gateway) = setup(CORS).await;
    for allowed in ["https://app.example.com", "https://a-1.example.com"] {
        let headers = get_from(&gateway, Some(allowed)).await;
        assert_eq!(
            text(&headers, "access-control-allow-origin").as_deref(),
            Some(allowed)
        );
    }
    for refused in [
        "https://example.com",
        "https://a.b.example.com",
        "http://app.example.com",
        "https://app.example.com.evil.net",
        "https://app.example.com:8443",
        "https://evilexample.com",
        "http://localhost:3001",
        "null",
    ] {
        let headers = get_from(&gateway, Some(refused)).await;
        assert_eq!(access_control(&headers), Vec::<String>::new(), "{refused}");
    }
}

#[tokio::test]
async fn preflight_is_answered_by_the_gateway_without_an_upstream_call() {
    let (scripted, gateway) = setup(CORS).await;
    let response = preflight(
        &gateway,
        "/v1/echo",
        "https://app.example.com",
        "POST",
        "content-type, authorization, x-request-id",
    )
    .await;
    assert!(response.status().is_success(), "{}", response.status());
    let headers = response.headers().clone();
    assert_eq!(
        text(&headers, "access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    assert!(tokens(&headers, "access-control-allow-methods").contains(&"post".to_string()));
    let allowed = tokens(&headers, "access-control-allow-headers");
    for name in ["content-type", "authorization", "x-request-id"] {
        assert!(allowed.contains(&name.to_string()), "{name} in {allowed:?}");
    }
    assert_eq!(
        text(&headers, "access-control-max-age").as_deref(),
        Some("3600")
    );
    assert_eq!(
        text(&headers, "access-control-allow-credentials").as_deref(),
        Some("true")
    );
    assert!(response.bytes().await.expect("body").is_empty());
    // Preflights for a path no route serves are answered the same way.
    let response = preflight(
        &gateway,
        "/v1/nowhere",
        "http://localhost:3000",
        "PUT",
        "content-type",
    )
    .await;
    assert!(response.status().is_success());
    assert_eq!(
        scripted.call_count(),
        0,
        "no preflight reached the upstream"
    );
}

#[tokio::test]
async fn disallowed_origin_gets_no_access_control_headers_at_all() {
    let (scripted, gateway) = setup(CORS).await;
    let headers = get_from(&gateway, Some("https://evil.example.net")).await;
    assert_eq!(access_control(&headers), Vec::<String>::new());
    let response = preflight(
        &gateway,
        "/v1/echo",
        "https://evil.example.net",
        "POST",
        "content-type, authorization",
    )
    .await;
    assert_eq!(access_control(response.headers()), Vec::<String>::new());
    // CORS is enforced by browsers: the simple GET was served, the preflight was not forwarded.
    assert_eq!(scripted.call_count(), 1);
}

#[tokio::test]
async fn requests_without_origin_get_no_access_control_headers() {
    let (_scripted, gateway) = setup(CORS).await;
    let headers = get_from(&gateway, None).await;
    assert_eq!(access_control(&headers), Vec::<String>::new());
    assert!(tokens(&headers, "vary").contains(&"origin".to_string()));
}

#[tokio::test]
async fn requests_without_origin_vary_as_cross_origin_ones_do() {
    let (_scripted, gateway) = setup(CORS).await;
    let without = tokens(&get_from(&gateway, None).await, "vary");
    for origin in ["https://evil.example.net", "http://localhost:3000"] {
        let with = tokens(&get_from(&gateway, Some(origin)).await, "vary");
        assert_eq!(without, with, "from {origin}");
    }
    // Origins are matched by pattern, methods and headers are fixed lists.
    assert!(without.contains(&"origin".to_string()), "{without:?}");
    assert!(
        !without
            .iter()
            .any(|name| name.starts_with("access-control-"))
    );
}

#[tokio::test]
async fn credentials_are_allowed_only_when_configured() {
    let (_scripted, gateway) = setup("[cors]\nallow_origins = [\"http://localhost:3000\"]\n").await;
    let headers = get_from(&gateway, Some("http://localhost:3000")).await;
    assert_eq!(
        text(&headers, "access-control-allow-origin").as_deref(),
        Some("http://localhost:3000")
    );
    assert_eq!(text(&headers, "access-control-allow-credentials"), None);
    let response = preflight(
        &gateway,
        "/v1/echo",
        "http://localhost:3000",
        "POST",
        "content-type",
    )
    .await;
    assert_eq!(
        text(response.headers(), "access-control-allow-credentials"),
        None
    );
}

#[tokio::test]
async fn preflight_max_age_defaults_to_ten_minutes() {
    let (_scripted, gateway) = setup("[cors]\nallow_origins = [\"http://localhost:3000\"]\n").await;
    let response = preflight(
        &gateway,
        "/v1/echo",
        "http://localhost:3000",
        "POST",
        "content-type",
    )
    .await;
    assert_eq!(
        text(response.headers(), "access-control-max-age").as_deref(),
        Some("600")
    );
}

#[tokio::test]
async fn preflight_lists_only_the_configured_methods_and_headers() {
    let (scripted, gateway) = setup(
        "[cors]\nallow_origins = [\"http://localhost:3000\"]\nallow_methods = [\"get\", \"POST\"]\nallow_headers = [\"Content-Type\"]\n",
    )
    .await;
    let response = preflight(
        &gateway,
        "/v1/echo",
        "http://localhost:3000",
        "DELETE",
        "authorization",
    )
    .await;
    let headers = response.headers();
    assert_eq!(
        tokens(headers, "access-control-allow-methods"),
        ["get", "post"]
    );
    assert_eq!(
        tokens(headers, "access-control-allow-headers"),
        ["content-type"]
    );
    assert_eq!(scripted.call_count(), 0);
}

#[tokio::test]
async fn error_answers_carry_cors_headers_for_allowed_origins() {
    let (scripted, gateway) = setup(CORS).await;
    scripted.set_reply(Reply::Status {
        code: 5,
        message: "gone".into(),
        details: None,
    });
    for path in ["/v1/echo", "/v1/nowhere"] {
        let response = client()
            .get(format!("{}{path}", gateway.base))
            .header("origin", "http://localhost:3000")
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 404, "{path}");
        let headers = response.headers();
        assert_eq!(
            text(headers, "access-control-allow-origin").as_deref(),
            Some("http://localhost:3000"),
            "{path}: a page can read the error"
        );
        assert!(
            tokens(headers, "access-control-expose-headers").contains(&"x-request-id".to_string())
        );
    }
}
