//! Browser and CDN caching headers over real sockets, with the demo
//! Bookstore or a scripted upstream behind the gateway: `Cache-Control` per
//! route and per method (and `no-store` for errors and writes, a short
//! negative cache for 404s, private answers for authenticated callers), a
//! strong `ETag` with `If-None-Match` → 304, HEAD, `Surrogate-Key` /
//! `Cache-Tag`, `Vary`, `Server-Timing`, immunity to the usual
//! cache-poisoning headers, and gzip/br/zstd compression both ways.

mod support;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::io::Write as _;

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use support::*;
use tower::ServiceExt as _;

/// A route-wide public policy, as the demo's routes.toml has it.
const PUBLIC: &str = r#"cache = { public = true, max_age = "10s", s_maxage = "60s" }"#;

/// The demo Bookstore behind a gateway whose Bookstore route gets `extra`.
async fn bookstore_gateway(extra: &str) -> TestGateway {
    let (addr, _) = spawn_bookstore().await;
    spawn_gateway(&bookstore_toml(addr, extra)).await
}

/// The scripted Echo upstream behind a gateway for EverythingService with `extra`.
async fn echo_gateway(extra: &str) -> (Scripted, TestGateway) {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, extra)).await;
    (scripted, gateway)
}

/// Sends `method path` with `headers` and no body.
async fn send(
    gateway: &TestGateway,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = client().request(
        method.parse().expect("method"),
        format!("{}{path}", gateway.base),
    );
    for &(name, value) in headers {
        request = request.header(name, value);
    }
    request.send().await.expect("send")
}

/// GET `path` with `headers`: status, headers and raw body bytes.
async fn get(
    gateway: &TestGateway,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, HeaderMap, Bytes) {
    read(send(gateway, "GET", path, headers).await).await
}

async fn read(response: reqwest::Response) -> (u16, HeaderMap, Bytes) {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("body");
    (status, headers, body)
}

/// The one value of `name`, as text.
fn one(headers: &HeaderMap, name: &str) -> Option<String> {
    let values: Vec<_> = headers.get_all(name).iter().collect();
    assert!(values.len() <= 1, "{name} sent {} times", values.len());
    values
        .first()
        .map(|v| v.to_str().expect("visible ASCII").to_string())
}

/// `Cache-Control`, which every answer must carry.
fn cache_control(headers: &HeaderMap) -> String {
    one(headers, "cache-control").unwrap_or_else(|| panic!("no Cache-Control in {headers:?}"))
}

/// The `ETag`, which every successful GET must carry.
fn etag(headers: &HeaderMap) -> String {
    one(headers, "etag").unwrap_or_else(|| panic!("no ETag in {headers:?}"))
}

/// Every `Vary` token, lower-cased, over all `Vary` lines.
fn vary(headers: &HeaderMap) -> BTreeSet<String> {
    headers
        .get_all("vary")
        .iter()
        .flat_map(|v| v.to_str().expect("ASCII").split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Header names of the gateway's internal bookkeeping, which must never leave it.
fn internal_headers(headers: &HeaderMap) -> Vec<String> {
    headers
        .keys()
        .map(|k| k.as_str().to_string())
        .filter(|k| k.starts_with("x-protogate"))
        .collect()
}

/// Decodes `bytes` sent with `Content-Encoding: coding` (gzip with flate2;
/// br and zstd with tower-http's decoders).
async fn decode(coding: &str, bytes: Bytes) -> Vec<u8> {
    if coding == "gzip" {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut out)
            .expect("valid gzip");
        return out;
    }
    let coding = http::HeaderValue::from_str(coding).expect("coding");
    let service = tower::service_fn(move |_: http::Request<()>| {
        let mut response = http::Response::new(Full::new(bytes.clone()));
        response
            .headers_mut()
            .insert("content-encoding", coding.clone());
        async move { Ok::<_, Infallible>(response) }
    });
    let response = tower_http::decompression::Decompression::new(service)
        .oneshot(http::Request::new(()))
        .await
        .expect("infallible");
    assert!(
        !response.headers().contains_key("content-encoding"),
        "tower-http did not know the coding"
    );
    response
        .into_body()
        .collect()
        .await
        .expect("valid compressed body")
        .to_bytes()
        .to_vec()
}

/// Compresses `bytes` with `coding` (tower-http's encoders; flate2 for gzip).
async fn encode(coding: &'static str, bytes: Bytes) -> Bytes {
    if coding == "gzip" {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&bytes).expect("gzip");
        return encoder.finish().expect("gzip").into();
    }
    let service = tower::service_fn(move |_: http::Request<()>| {
        let mut response = http::Response::new(Full::new(bytes.clone()));
        response
            .headers_mut()
            .insert("content-type", http::HeaderValue::from_static("text/plain"));
        async move { Ok::<_, Infallible>(response) }
    });
    let mut request = http::Request::new(());
    request
        .headers_mut()
        .insert("accept-encoding", http::HeaderValue::from_static(coding));
    let response = tower_http::compression::Compression::new(service)
        .oneshot(request)
        .await
        .expect("infallible");
    assert_eq!(response.headers()["content-encoding"], coding);
    response
        .into_body()
        .collect()
        .await
        .expect("compressed")
        .to_bytes()
}

/// `GET /v1/echo?string_value=…` on the Echo upstream: a JSON answer of
/// about `len` bytes.
fn echo_path(len: usize) -> String {
    format!("/v1/echo?string_value={}", "ab".repeat(len / 2))
}

// === Cache-Control ===

#[tokio::test]
async fn route_without_a_cache_table_answers_private_no_cache() {
    let gateway = bookstore_gateway("").await;
    let (status, headers, _) = get(&gateway, "/v1/shelves/1", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(cache_control(&headers), "private, no-cache");
    etag(&headers);
}

#[tokio::test]
async fn route_cache_table_renders_every_directive_in_order() {
    let gateway = bookstore_gateway(
        r#"cache = { public = true, max_age = "10s", s_maxage = "1m", stale_while_revalidate = "30s", stale_if_error = "1h", immutable = true }"#,
    )
    .await;
    for path in ["/v1/shelves", "/v1/shelves/1", "/v1/shelves/1/books/1"] {
        let (status, headers, _) = get(&gateway, path, &[]).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(
            cache_control(&headers),
            "public, max-age=10, s-maxage=60, stale-while-revalidate=30, stale-if-error=3600, immutable",
            "{path}"
        );
    }
}

#[tokio::test]
async fn method_cache_table_replaces_the_route_table_for_that_method_only() {
    let gateway = bookstore_gateway(&format!(
        "{PUBLIC}\n\
         [routes.methods.GetShelf]\n\
         cache = {{ max_age = \"5s\", s_maxage = \"60s\" }}\n\
         [routes.methods.ListBooks]\n\
         cache = {{ no_store = true }}\n\
         [routes.methods.GetBook]\n\
         cache = {{ public = true }}\n"
    ))
    .await;
    for (path, expected) in [
        ("/v1/shelves", "public, max-age=10, s-maxage=60"),
        // s-maxage only speaks to shared caches, which a private answer never reaches.
        ("/v1/shelves/1", "private, max-age=5"),
        ("/v1/shelves/1/books", "no-store"),
        // public without max_age: stored, but revalidated before every use.
        ("/v1/shelves/1/books/1", "public, no-cache"),
    ] {
        let (status, headers, _) = get(&gateway, path, &[]).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(cache_control(&headers), expected, "{path}");
    }
}

#[tokio::test]
async fn no_store_answers_still_carry_an_etag() {
    let gateway = bookstore_gateway("cache = { no_store = true }").await;
    let (status, headers, _) = get(&gateway, "/v1/shelves/1", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(cache_control(&headers), "no-store");
    etag(&headers);
}

#[tokio::test]
async fn writes_on_a_public_route_answer_no_store_without_an_etag() {
    let gateway = bookstore_gateway(PUBLIC).await;
    let created = client()
        .post(format!("{}/v1/shelves", gateway.base))
        .header("content-type", "application/json")
        .body(r#"{"theme": "Poetry"}"#)
        .send()
        .await
        .expect("send");
    let (status, headers, body) = read(created).await;
    assert_eq!(status, 200, "{body:?}");
    assert_eq!(cache_control(&headers), "no-store");
    assert_eq!(one(&headers, "etag"), None);
    let shelf: Value = serde_json::from_slice(&body).expect("JSON");
    let id = shelf["id"].as_str().expect("int64 ids are JSON strings");
    let deleted = send(&gateway, "DELETE", &format!("/v1/shelves/{id}"), &[]).await;
    let (status, headers, _) = read(deleted).await;
    assert_eq!(status, 200);
    assert_eq!(cache_control(&headers), "no-store");
    assert_eq!(one(&headers, "etag"), None);
}

#[tokio::test]
async fn errors_on_a_public_route_answer_no_store() {
    let (scripted, gateway) =
        echo_gateway(r#"cache = { public = true, max_age = "10s", not_found_max_age = "5s" }"#)
            .await;
    scripted.set_reply(Reply::Status {
        code: 13,
        message: "boom".into(),
        details: None,
    });
    let (status, headers, _) = get(&gateway, "/v1/echo", &[]).await;
    assert_eq!(status, 500);
    assert_eq!(cache_control(&headers), "no-store");
    scripted.set_reply(Reply::Status {
        code: 14,
        message: "later".into(),
        details: None,
    });
    let (status, headers, _) = get(&gateway, "/v1/echo", &[]).await;
    assert_eq!(status, 503);
    assert_eq!(cache_control(&headers), "no-store");
    for (path, expected) in [
        ("/v1/echo?int32_value=abc", 400),
        ("/v1/no-such-route", 404),
    ] {
        let (status, headers, _) = get(&gateway, path, &[]).await;
        assert_eq!(status, expected, "{path}");
        assert_eq!(cache_control(&headers), "no-store", "{path}");
        assert_eq!(one(&headers, "etag"), None, "{path}");
    }
    let (status, headers, _) = read(send(&gateway, "DELETE", "/v1/echo", &[]).await).await;
    assert_eq!(status, 405);
    assert_eq!(cache_control(&headers), "no-store");
}

#[tokio::test]
async fn not_found_max_age_caches_upstream_404s_briefly_and_nothing_else() {
    let gateway = bookstore_gateway(&format!(
        "cache = {{ public = true, max_age = \"10s\", not_found_max_age = \"5s\" }}\n\
         [routes.methods.GetBook]\n\
         cache = {{ max_age = \"10s\", not_found_max_age = \"3s\" }}\n\
         [routes.methods.ListBooks]\n\
         {PUBLIC}\n"
    ))
    .await;
    for (path, expected) in [
        ("/v1/shelves/999", "public, max-age=5"),
        ("/v1/shelves/1/books/999", "private, max-age=3"),
        // No not_found_max_age on this method: a 404 is not stored.
        ("/v1/shelves/999/books", "no-store"),
        // Not an upstream NOT_FOUND: the gateway has no such route.
        ("/v1/nowhere", "no-store"),
    ] {
        let (status, headers, body) = get(&gateway, path, &[]).await;
        assert_eq!(status, 404, "{path}: {body:?}");
        assert_eq!(cache_control(&headers), expected, "{path}");
        assert_eq!(one(&headers, "etag"), None, "{path}");
    }
    let (status, headers, _) = get(&gateway, "/v1/shelves/x", &[]).await;
    assert_eq!(status, 400);
    assert_eq!(cache_control(&headers), "no-store");
}

#[tokio::test]
async fn authenticated_answers_stay_private_on_a_public_route() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (provider, mint) = hmac_provider(dir.path());
    let gateway = bookstore_gateway(&format!(
        "{PUBLIC}\n\
         [routes.methods.GetShelf]\n\
         auth = \"t\"\n\
         cache = {{ public = true, max_age = \"30s\", s_maxage = \"300s\", stale_while_revalidate = \"10s\" }}\n\
         {provider}"
    ))
    .await;
    let token = format!("Bearer {}", mint("alice"));
    let (status, headers, body) =
        get(&gateway, "/v1/shelves/1", &[("authorization", &token)]).await;
    assert_eq!(status, 200, "{body:?}");
    assert_eq!(
        cache_control(&headers),
        "private, max-age=30, stale-while-revalidate=10"
    );
    etag(&headers);
    let (status, headers, _) = get(&gateway, "/v1/shelves/1", &[]).await;
    assert_eq!(status, 401);
    assert_eq!(cache_control(&headers), "no-store");
    // The anonymous route next to it keeps its public policy.
    let (_, headers, _) = get(&gateway, "/v1/shelves", &[("authorization", &token)]).await;
    assert_eq!(cache_control(&headers), "public, max-age=10, s-maxage=60");
}

#[tokio::test]
async fn allow_public_with_auth_makes_authenticated_answers_public() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (provider, mint) = hmac_provider(dir.path());
    let gateway = bookstore_gateway(&format!(
        "[routes.methods.GetShelf]\n\
         auth = \"t\"\n\
         cache = {{ public = true, max_age = \"30s\", s_maxage = \"300s\", allow_public_with_auth = true }}\n\
         {provider}"
    ))
    .await;
    let token = format!("Bearer {}", mint("alice"));
    let (status, headers, _) = get(&gateway, "/v1/shelves/1", &[("authorization", &token)]).await;
    assert_eq!(status, 200);
    assert_eq!(cache_control(&headers), "public, max-age=30, s-maxage=300");
}

// === ETag and If-None-Match ===

#[tokio::test]
async fn etag_is_strong_stable_and_names_the_body() {
    let gateway = bookstore_gateway(PUBLIC).await;
    let (_, first, body) = get(&gateway, "/v1/shelves/1", &[]).await;
    let (_, again, same_body) = get(&gateway, "/v1/shelves/1", &[]).await;
    let (_, other, other_body) = get(&gateway, "/v1/shelves/2", &[]).await;
    let tag = etag(&first);
    assert!(
        tag.len() == 34
            && tag.starts_with('"')
            && tag.ends_with('"')
            && tag[1..33].bytes().all(|b| b.is_ascii_hexdigit()),
        "a strong opaque tag: {tag}"
    );
    assert_eq!(body, same_body);
    assert_eq!(etag(&again), tag);
    assert_ne!(body, other_body);
    assert_ne!(etag(&other), tag);
}

#[tokio::test]
async fn matching_if_none_match_answers_304_with_the_same_cache_headers() {
    let gateway = bookstore_gateway(&format!(
        "{PUBLIC}\n\
         [routes.methods.GetBook]\n\
         cache = {{ public = true, max_age = \"10s\", vary = [\"Accept-Language\"], surrogate_keys = \"book-{{shelf}}-{{book}} shelf-{{shelf}}\" }}\n\
         [cors]\n\
         allow_origins = [\"https://app.example.com\"]\n"
    ))
    .await;
    let path = "/v1/shelves/1/books/2";
    let origin = ("origin", "https://app.example.com");
    let (status, full, body) = get(&gateway, path, &[origin]).await;
    assert_eq!(status, 200);
    assert!(!body.is_empty());
    let tag = etag(&full);
    let weak = format!("W/{tag}");
    let listed = format!("\"0123\", {tag}, \"4567\"");
    for condition in [tag.as_str(), listed.as_str(), "*", weak.as_str()] {
        let (status, headers, body) =
            get(&gateway, path, &[origin, ("if-none-match", condition)]).await;
        assert_eq!(status, 304, "If-None-Match: {condition}");
        assert!(body.is_empty(), "a 304 has no body: {body:?}");
        for name in [
            "cache-control",
            "etag",
            "surrogate-key",
            "cache-tag",
            "access-control-allow-origin",
        ] {
            assert_eq!(
                one(&headers, name),
                one(&full, name),
                "{name} on the 304 for {condition}"
            );
        }
        assert_eq!(
            vary(&headers),
            vary(&full),
            "Vary on the 304 for {condition}"
        );
        assert_eq!(one(&headers, "content-type"), None);
        assert_eq!(internal_headers(&headers), Vec::<String>::new());
    }
    for stale in ["\"0123\"", "W/\"0123\"", "\"\""] {
        let (status, headers, again) =
            get(&gateway, path, &[origin, ("if-none-match", stale)]).await;
        assert_eq!(status, 200, "If-None-Match: {stale}");
        assert_eq!(again, body);
        assert_eq!(etag(&headers), tag);
    }
}

#[tokio::test]
async fn revalidating_a_compressed_answer_keeps_its_coding_etag_and_vary() {
    let (_scripted, gateway) = echo_gateway(PUBLIC).await;
    let path = echo_path(4000);
    let (status, gzipped, _) = get(&gateway, &path, &[("accept-encoding", "gzip")]).await;
    assert_eq!(status, 200);
    assert_eq!(one(&gzipped, "content-encoding").as_deref(), Some("gzip"));
    let tag = etag(&gzipped);
    assert!(tag.ends_with("-gzip\""), "{tag}");
    let (status, headers, body) = get(
        &gateway,
        &path,
        &[("accept-encoding", "gzip"), ("if-none-match", &tag)],
    )
    .await;
    assert_eq!(status, 304);
    assert!(body.is_empty());
    assert_eq!(etag(&headers), tag, "the 304 names the gzip representation");
    assert_eq!(vary(&headers), vary(&gzipped));
    assert_eq!(cache_control(&headers), cache_control(&gzipped));
    assert_eq!(internal_headers(&headers), Vec::<String>::new());
    // A client that holds the identity representation revalidates it as such.
    let (_, identity, _) = get(&gateway, &path, &[]).await;
    let plain = etag(&identity);
    let (status, headers, _) = get(&gateway, &path, &[("if-none-match", &plain)]).await;
    assert_eq!(status, 304);
    assert_eq!(etag(&headers), plain);
    assert_eq!(vary(&headers), vary(&identity));
}

#[tokio::test]
async fn head_answers_with_the_headers_of_get_and_no_body() {
    let gateway = bookstore_gateway(
        "[routes.methods.GetBook]\n\
         cache = { public = true, max_age = \"10s\", surrogate_keys = \"book-{shelf}-{book}\" }\n",
    )
    .await;
    let path = "/v1/shelves/1/books/2";
    let (_, got, body) = get(&gateway, path, &[]).await;
    let (status, headed, head_body) = read(send(&gateway, "HEAD", path, &[]).await).await;
    assert_eq!(status, 200);
    assert!(head_body.is_empty());
    for name in [
        "cache-control",
        "etag",
        "content-type",
        "content-length",
        "surrogate-key",
    ] {
        assert_eq!(one(&headed, name), one(&got, name), "{name}");
    }
    assert_eq!(one(&headed, "content-length"), Some(body.len().to_string()));
    let tag = etag(&got);
    let (status, _, _) = read(send(&gateway, "HEAD", path, &[("if-none-match", &tag)]).await).await;
    assert_eq!(status, 304);
}

#[tokio::test]
async fn head_of_a_compressible_answer_names_the_same_representation_as_get() {
    let (_scripted, gateway) = echo_gateway(PUBLIC).await;
    let path = echo_path(4000);
    for coding in ["gzip", "br", "zstd"] {
        let accept = [("accept-encoding", coding)];
        let (_, got, _) = get(&gateway, &path, &accept).await;
        let (status, headed, body) = read(send(&gateway, "HEAD", &path, &accept).await).await;
        assert_eq!(status, 200);
        assert!(body.is_empty());
        for name in ["content-encoding", "etag", "cache-control", "content-type"] {
            assert_eq!(one(&headed, name), one(&got, name), "{coding}: {name}");
        }
        assert_eq!(vary(&headed), vary(&got), "{coding}");
    }
}

// === Surrogate keys, Vary, poisoning, Server-Timing ===

#[tokio::test]
async fn surrogate_keys_and_cache_tags_render_the_path_variables() {
    let gateway = bookstore_gateway(
        "[routes.methods.GetBook]\n\
         cache = { public = true, max_age = \"10s\", surrogate_keys = \"book-{shelf}-{book} shelf-{shelf}\" }\n\
         [routes.methods.ListBooks]\n\
         cache = { public = true, max_age = \"10s\", surrogate_keys = \"shelf-{shelf} books\" }\n",
    )
    .await;
    let (_, headers, _) = get(&gateway, "/v1/shelves/2/books/3", &[]).await;
    assert_eq!(
        one(&headers, "surrogate-key").as_deref(),
        Some("book-2-3 shelf-2")
    );
    assert_eq!(
        one(&headers, "cache-tag").as_deref(),
        Some("book-2-3,shelf-2")
    );
    let (_, headers, _) = get(&gateway, "/v1/shelves/1/books", &[]).await;
    assert_eq!(
        one(&headers, "surrogate-key").as_deref(),
        Some("shelf-1 books")
    );
    assert_eq!(one(&headers, "cache-tag").as_deref(), Some("shelf-1,books"));
    // GetBook's other binding (/v1/books/{name=shelves/*/books/*}) binds
    // neither variable: its keys are left out rather than rendered empty.
    let (status, headers, _) = get(&gateway, "/v1/books/shelves/2/books/3", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(one(&headers, "surrogate-key"), None);
    assert_eq!(one(&headers, "cache-tag"), None);
}

#[tokio::test]
async fn vary_names_accept_encoding_origin_and_the_route_headers() {
    let (_scripted, gateway) = echo_gateway(
        "cache = { public = true, max_age = \"10s\", vary = [\"Accept-Language\", \"X-Tenant\"] }\n\
         [cors]\n\
         allow_origins = [\"https://app.example.com\"]\n",
    )
    .await;
    let (_, headers, _) = get(&gateway, &echo_path(4000), &[("accept-encoding", "gzip")]).await;
    assert_eq!(
        vary(&headers),
        ["accept-encoding", "accept-language", "origin", "x-tenant"]
            .map(String::from)
            .into()
    );
    // Uncompressible (small) answer: no Accept-Encoding in Vary.
    let (_, headers, _) = get(&gateway, &echo_path(10), &[("accept-encoding", "gzip")]).await;
    assert_eq!(
        vary(&headers),
        ["accept-language", "origin", "x-tenant"]
            .map(String::from)
            .into()
    );
}

#[tokio::test]
async fn small_answers_without_cors_or_route_vary_send_no_vary() {
    let (_scripted, gateway) = echo_gateway(PUBLIC).await;
    let (_, headers, _) = get(&gateway, &echo_path(10), &[("accept-encoding", "gzip")]).await;
    assert_eq!(vary(&headers), BTreeSet::new());
}

#[tokio::test]
async fn forwarded_host_scheme_and_url_override_headers_change_nothing() {
    let gateway = bookstore_gateway(&format!(
        "{PUBLIC}\n\
         [routes.methods.GetBook]\n\
         cache = {{ public = true, max_age = \"10s\", surrogate_keys = \"book-{{shelf}}-{{book}}\" }}\n\
         [cors]\n\
         allow_origins = [\"https://app.example.com\"]\n"
    ))
    .await;
    let path = "/v1/shelves/1/books/2";
    let comparable = |mut headers: HeaderMap| {
        for varying in ["date", "x-request-id", "server-timing"] {
            headers.remove(varying);
        }
        headers
    };
    let (status, baseline, body) = get(&gateway, path, &[]).await;
    assert_eq!(status, 200);
    let baseline = comparable(baseline);
    for poison in [
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-scheme", "http"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-port", "1337"),
        ("forwarded", "host=evil.example;proto=http"),
        ("x-host", "evil.example"),
        ("x-original-url", "/v1/shelves/2"),
        ("x-rewrite-url", "/v1/shelves/2"),
        ("x-http-method-override", "DELETE"),
    ] {
        let (status, headers, poisoned) = get(&gateway, path, &[poison]).await;
        assert_eq!(status, 200, "{poison:?}");
        assert_eq!(poisoned, body, "{poison:?}");
        assert_eq!(comparable(headers), baseline, "{poison:?}");
    }
    // The method override did not delete the book either.
    let (status, _, again) = get(&gateway, path, &[]).await;
    assert_eq!((status, again), (200, body));
}

#[tokio::test]
async fn server_timing_reports_upstream_and_gateway_durations() {
    let gateway = bookstore_gateway(PUBLIC).await;
    let (_, headers, _) = get(&gateway, "/v1/shelves/1", &[]).await;
    let metrics: Vec<(String, f64)> = headers
        .get_all("server-timing")
        .iter()
        .flat_map(|v| v.to_str().expect("ASCII").split(','))
        .map(|metric| {
            let (name, duration) = metric
                .trim()
                .split_once(";dur=")
                .unwrap_or_else(|| panic!("metric without dur: {metric}"));
            (
                name.to_string(),
                duration.parse().expect("dur is a number of milliseconds"),
            )
        })
        .collect();
    let names: Vec<&str> = metrics.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["upstream", "gateway"]);
    assert!(metrics.iter().all(|(_, d)| *d >= 0.0));
    assert!(
        metrics[1].1 >= metrics[0].1,
        "the gateway's time includes the upstream's: {metrics:?}"
    );
}

// === compression ===

#[tokio::test]
async fn gzip_br_and_zstd_answers_decode_to_the_identity_body() {
    let (_scripted, gateway) = echo_gateway(PUBLIC).await;
    let path = echo_path(4000);
    let (_, identity, plain) = get(&gateway, &path, &[]).await;
    assert_eq!(one(&identity, "content-encoding"), None);
    assert!(plain.len() >= 4000);
    let plain_tag = etag(&identity);
    for coding in ["gzip", "br", "zstd"] {
        let (status, headers, body) = get(&gateway, &path, &[("accept-encoding", coding)]).await;
        assert_eq!(status, 200);
        assert_eq!(one(&headers, "content-encoding").as_deref(), Some(coding));
        assert!(vary(&headers).contains("accept-encoding"));
        assert!(body.len() < plain.len(), "{coding} made it smaller");
        assert_eq!(decode(coding, body).await, plain, "{coding}");
        assert_eq!(
            etag(&headers),
            format!("{}-{coding}\"", &plain_tag[..plain_tag.len() - 1])
        );
    }
    // A client that accepts several codings gets one of them.
    let (_, headers, body) = get(
        &gateway,
        &path,
        &[("accept-encoding", "gzip, deflate, br, zstd")],
    )
    .await;
    let coding = one(&headers, "content-encoding").expect("compressed");
    assert_eq!(decode(&coding, body).await, plain);
    // q=0 refuses a coding.
    let (_, headers, body) = get(
        &gateway,
        &path,
        &[("accept-encoding", "gzip;q=0, identity")],
    )
    .await;
    assert_eq!(one(&headers, "content-encoding"), None);
    assert_eq!(body, plain);
}

#[tokio::test]
async fn answers_below_min_bytes_are_sent_uncompressed() {
    let (_scripted, gateway) =
        echo_gateway(&format!("{PUBLIC}\n[compression]\nmin_bytes = 2000\n")).await;
    let (_, headers, body) = get(
        &gateway,
        &echo_path(1500),
        &[("accept-encoding", "gzip, br, zstd")],
    )
    .await;
    assert!(body.len() < 2000);
    assert_eq!(one(&headers, "content-encoding"), None);
    assert_eq!(
        one(&headers, "content-length"),
        Some(body.len().to_string())
    );
    let (_, headers, _) = get(
        &gateway,
        &echo_path(2500),
        &[("accept-encoding", "gzip, br, zstd")],
    )
    .await;
    assert!(one(&headers, "content-encoding").is_some());
}

#[tokio::test]
async fn compression_disabled_sends_identity_even_when_large() {
    let (_scripted, gateway) =
        echo_gateway(&format!("{PUBLIC}\n[compression]\nenabled = false\n")).await;
    let (_, headers, _) = get(
        &gateway,
        &echo_path(4000),
        &[("accept-encoding", "gzip, br, zstd")],
    )
    .await;
    assert_eq!(one(&headers, "content-encoding"), None);
    assert!(!vary(&headers).contains("accept-encoding"));
    let tag = etag(&headers);
    let (status, revalidated, _) = get(
        &gateway,
        &echo_path(4000),
        &[("accept-encoding", "gzip"), ("if-none-match", &tag)],
    )
    .await;
    assert_eq!(status, 304);
    assert_eq!(etag(&revalidated), tag);
    assert_eq!(internal_headers(&revalidated), Vec::<String>::new());
}

/// A scripted Bookstore whose GetBookCover answers `content_type` with `len` bytes.
async fn cover_gateway(content_type: &str, data: Vec<u8>) -> (Scripted, TestGateway) {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
    let scripted = spawn_scripted(
        pool(),
        Reply::Json(json!({"content_type": content_type, "data": encoded})),
    )
    .await;
    let gateway = spawn_gateway(&bookstore_toml(scripted.addr, PUBLIC)).await;
    (scripted, gateway)
}

#[tokio::test]
async fn png_answers_are_never_compressed() {
    // Compressible bytes, so only the content type can be the reason.
    let (_scripted, gateway) = cover_gateway("image/png", vec![b'a'; 8000]).await;
    let (status, headers, body) = get(
        &gateway,
        "/v1/shelves/1/books/1/cover",
        &[("accept-encoding", "gzip, br, zstd")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(one(&headers, "content-type").as_deref(), Some("image/png"));
    assert_eq!(one(&headers, "content-encoding"), None);
    assert!(!vary(&headers).contains("accept-encoding"));
    assert_eq!(body.len(), 8000);
}

#[tokio::test]
async fn svg_answers_are_compressed_like_text() {
    // tower-http's IMAGES predicate excepts image/svg+xml: it is XML text.
    let svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\">{}</svg>",
        "<g/>".repeat(1000)
    );
    let (_scripted, gateway) = cover_gateway("image/svg+xml", svg.clone().into_bytes()).await;
    let (status, headers, body) = get(
        &gateway,
        "/v1/shelves/1/books/1/cover",
        &[("accept-encoding", "gzip")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(one(&headers, "content-encoding").as_deref(), Some("gzip"));
    assert_eq!(decode("gzip", body).await, svg.into_bytes());
}

#[tokio::test]
async fn compressed_request_bodies_are_decoded_before_transcoding() {
    let (scripted, gateway) = echo_gateway("").await;
    let json = Bytes::from(format!(r#"{{"stringValue": "{}"}}"#, "z".repeat(3000)));
    for coding in ["gzip", "br", "zstd"] {
        let body = encode(coding, json.clone()).await;
        assert!(body.len() < json.len());
        let response = client()
            .post(format!("{}/v1/echo", gateway.base))
            .header("content-type", "application/json")
            .header("content-encoding", coding)
            .body(body)
            .send()
            .await
            .expect("send");
        let (status, headers, answer) = read(response).await;
        assert_eq!(status, 200, "{coding}: {answer:?}");
        assert_eq!(cache_control(&headers), "no-store");
        let answer: Value = serde_json::from_slice(&answer).expect("JSON");
        assert_eq!(answer["stringValue"], "z".repeat(3000), "{coding}");
    }
    let calls = scripted.calls();
    assert_eq!(calls.len(), 3);
    assert!(
        calls
            .iter()
            .all(|c| c.message["string_value"] == "z".repeat(3000))
    );
}
