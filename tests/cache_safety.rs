//! What a cache may share: an answer to a request that forwarded a
//! credential is the caller's own; the gateway cache keys on everything the
//! upstream sees (authority, forwarded headers) and `Vary` names those
//! headers; a coalesced waiter keeps its own deadline; a successful write
//! invalidates what was cached for the resource.

mod support;

use std::time::Duration;

use support::*;

/// EchoQuery (GET /v1/echo) with the gateway cache on, plus `extra`.
fn cached_echo(scripted: &Scripted, route_extra: &str, tables: &str) -> String {
    everything_toml(
        scripted.addr,
        &format!(
            "cache = {{ public = true, gateway = true, max_age = \"30s\" }}\n{route_extra}\n{tables}"
        ),
    )
}

async fn get(gateway: &TestGateway, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = client().get(format!("{}/v1/echo?stringValue=same", gateway.base));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("send")
}

#[tokio::test]
async fn a_forwarded_authorization_makes_the_answer_private_and_uncached() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&cached_echo(&scripted, "forward_authorization = true", "")).await;

    let personal = get(&gateway, &[("authorization", "Bearer alice-session")]).await;
    assert_eq!(personal.status(), 200);
    let control = personal.headers()["cache-control"].to_str().expect("ascii");
    assert!(control.starts_with("private"), "{control}");
    assert!(
        personal.headers().get("x-cache").is_none(),
        "never from the gateway cache"
    );
    assert_eq!(
        scripted.calls()[0].headers["authorization"],
        "Bearer alice-session",
        "the credential did reach the upstream"
    );

    // The anonymous caller of the same URL must not get alice's answer.
    let anonymous = get(&gateway, &[]).await;
    assert_eq!(anonymous.headers()["x-cache"], "miss");
    assert_eq!(
        scripted.call_count(),
        2,
        "the personal answer was not stored"
    );
    assert!(scripted.calls()[1].headers.get("authorization").is_none());
    let control = anonymous.headers()["cache-control"]
        .to_str()
        .expect("ascii");
    assert!(control.starts_with("public"), "{control}");
    // Anonymous answers are still shared with other anonymous callers.
    assert_eq!(get(&gateway, &[]).await.headers()["x-cache"], "hit");
    assert_eq!(scripted.call_count(), 2);
    // And a later personal request is not served the anonymous entry either.
    let again = get(&gateway, &[("authorization", "Bearer bob-session")]).await;
    assert!(again.headers().get("x-cache").is_none());
    assert_eq!(scripted.call_count(), 3);
}

#[tokio::test]
async fn the_authority_is_part_of_the_gateway_cache_key() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&cached_echo(&scripted, "", "")).await;
    let poisoned = get(&gateway, &[("host", "evil.example")]).await;
    assert_eq!(poisoned.headers()["x-cache"], "miss");
    assert_eq!(
        scripted.calls()[0].headers["x-forwarded-host"],
        "evil.example"
    );

    let honest = get(&gateway, &[]).await;
    assert_eq!(
        honest.headers()["x-cache"],
        "miss",
        "not the evil.example entry"
    );
    assert_eq!(scripted.call_count(), 2);
    let host = scripted.calls()[1].headers["x-forwarded-host"].clone();
    assert_eq!(host, gateway.addr.to_string().as_str());
    // Authorities compare case-insensitively.
    assert_eq!(
        get(&gateway, &[("host", "EVIL.example")]).await.headers()["x-cache"],
        "hit"
    );
}

#[tokio::test]
async fn forwarded_request_headers_key_the_cache_and_are_named_in_vary() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let tables = "[headers]\nforward_request = [\"x-tenant\"]\n";
    let gateway = spawn_gateway(&cached_echo(&scripted, "", tables)).await;

    let a = get(&gateway, &[("x-tenant", "a")]).await;
    assert_eq!(a.headers()["x-cache"], "miss");
    let vary: Vec<_> = a.headers().get_all("vary").iter().collect();
    assert!(
        vary.iter()
            .any(|v| v.to_str().unwrap_or("").contains("x-tenant")),
        "{vary:?}"
    );
    let b = get(&gateway, &[("x-tenant", "b")]).await;
    assert_eq!(
        b.headers()["x-cache"],
        "miss",
        "tenant b must not get tenant a's answer"
    );
    assert_eq!(scripted.call_count(), 2);
    assert_eq!(scripted.calls()[1].headers["x-tenant"], "b");
    assert_eq!(
        get(&gateway, &[("x-tenant", "a")]).await.headers()["x-cache"],
        "hit"
    );
    assert_eq!(scripted.call_count(), 2);
}

#[tokio::test]
async fn a_coalesced_waiter_gets_its_504_at_its_own_deadline() {
    // The upstream holds the first call for longer than the route's 5 s
    // budget, so the first caller's fetch ends only at its deadline.
    let scripted = spawn_scripted(
        pool(),
        Reply::Delay(Duration::from_secs(30), Box::new(Reply::Echo)),
    )
    .await;
    let gateway = spawn_gateway(&cached_echo(&scripted, "", "")).await;
    let url = format!("{}/v1/echo?stringValue=same", gateway.base);
    let first = tokio::spawn(client().get(url.clone()).send());
    while scripted.call_count() == 0 {
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let waiter = tokio::time::timeout(
        Duration::from_secs(4),
        client().get(url).header("grpc-timeout", "300m").send(),
    )
    .await
    .expect("the waiter was held past its own deadline")
    .expect("send");
    assert_eq!(waiter.status(), 504);
    assert!(
        !first.is_finished(),
        "the first caller's fetch is still running"
    );
    assert_eq!(
        scripted.call_count(),
        1,
        "the waiter shared the fetch, it did not call"
    );
    let body: serde_json::Value = waiter.json().await.expect("json");
    assert!(
        body["message"].as_str().unwrap_or("").contains("300ms"),
        "its own budget: {body}"
    );
    first.abort();
}

#[tokio::test]
async fn a_successful_write_invalidates_the_cached_read_and_its_surrogate_keys() {
    let (upstream, _) = spawn_bookstore().await;
    let toml = bookstore_toml(
        upstream,
        r#"
[routes.methods.GetBook]
cache = { public = true, max_age = "1h", gateway = true, surrogate_keys = "book-{shelf}-{book}" }

[routes.methods.GetBookAuthor]
cache = { public = true, max_age = "1h", gateway = true, surrogate_keys = "book-{shelf}-{book}" }

[routes.methods.UpdateBook]
cache = { surrogate_keys = "book-{shelf}-{book.id}" }
"#,
    );
    let gateway = spawn_gateway(&toml).await;
    let read = |path: &'static str| {
        let url = format!("{}{path}", gateway.base);
        async move { client().get(url).send().await.expect("send") }
    };
    let rating = |body: serde_json::Value| body["rating"].clone();

    assert_eq!(
        read("/v1/shelves/1/books/2").await.headers()["x-cache"],
        "miss"
    );
    let author = "/v1/shelves/1/books/2/author";
    assert_eq!(read(author).await.headers()["x-cache"], "miss");
    assert_eq!(read(author).await.headers()["x-cache"], "hit");
    let cached = read("/v1/shelves/1/books/2").await;
    assert_eq!(cached.headers()["x-cache"], "hit");
    let before = rating(cached.json().await.expect("json"));

    let patched = client()
        .patch(format!(
            "{}/v1/shelves/1/books/2?updateMask=rating",
            gateway.base
        ))
        .json(&serde_json::json!({"rating": 1.5}))
        .send()
        .await
        .expect("send");
    assert_eq!(
        patched.status(),
        200,
        "{}",
        patched.text().await.unwrap_or_default()
    );

    // The target URI's entry is gone...
    let fresh = read("/v1/shelves/1/books/2").await;
    assert_eq!(fresh.headers()["x-cache"], "miss");
    let after = rating(fresh.json().await.expect("json"));
    assert_eq!(after, serde_json::json!(1.5), "was {before}");
    // ...and so is another URI's that carries the same surrogate key.
    assert_eq!(read(author).await.headers()["x-cache"], "miss");
    // Another book's entry is untouched.
    read("/v1/shelves/1/books/1").await;
    assert_eq!(
        read("/v1/shelves/1/books/1").await.headers()["x-cache"],
        "hit"
    );
}
