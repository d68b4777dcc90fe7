//! The gateway's own response cache: coalescing, stale-while-revalidate,
//! stale-if-error, and never sharing authenticated answers.

mod support;

use std::time::Duration;

use support::*;

/// EchoQuery (GET /v1/echo) with the gateway cache on.
fn cached_toml(scripted: &Scripted, cache: &str) -> String {
    everything_toml(
        scripted.addr,
        &format!("cache = {{ public = true, gateway = true, {cache} }}\n"),
    )
}

async fn get(gateway: &TestGateway, query: &str) -> reqwest::Response {
    client()
        .get(format!("{}/v1/echo?{query}", gateway.base))
        .send()
        .await
        .expect("send")
}

#[tokio::test]
async fn two_hundred_concurrent_misses_make_one_upstream_call() {
    // The answer is fresh for 1 ms only: a request that arrived after the
    // fetch ended would find it stale and call again. One upstream call for
    // all 200 therefore proves they overlapped the one fetch (held 2 s).
    let scripted = spawn_scripted(
        pool(),
        Reply::Delay(Duration::from_secs(2), Box::new(Reply::Echo)),
    )
    .await;
    let gateway = spawn_gateway(&cached_toml(&scripted, "max_age = \"1ms\"")).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .expect("client");
    // Spawned all at once (a lazy iterator would send them one by one).
    let requests: Vec<_> = (0..200)
        .map(|_| {
            let client = client.clone();
            let url = format!("{}/v1/echo?stringValue=same", gateway.base);
            tokio::spawn(async move { client.get(url).send().await.expect("send") })
        })
        .collect();
    let mut statuses = Vec::new();
    for request in requests {
        let response = request.await.expect("task");
        statuses.push((
            response.status().as_u16(),
            response.headers().get("x-cache").cloned(),
        ));
        assert_eq!(
            response.text().await.expect("body"),
            r#"{"stringValue":"same"}"#
        );
    }
    assert!(statuses.iter().all(|(s, _)| *s == 200));
    assert_eq!(
        scripted.call_count(),
        1,
        "coalesced into exactly one upstream call"
    );
    // And the entry really is stale at once: the next request calls again.
    get(&gateway, "stringValue=same").await;
    assert_eq!(scripted.call_count(), 2, "the 1 ms entry was not reused");
    let misses = statuses
        .iter()
        .filter(|(_, c)| c.as_ref().is_some_and(|v| v == "miss"))
        .count();
    assert_eq!(
        misses, 1,
        "exactly one caller fetched; the others shared its answer"
    );
}

#[tokio::test]
async fn different_queries_are_different_entries_and_query_order_does_not_matter() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&cached_toml(&scripted, "max_age = \"30s\"")).await;
    assert_eq!(
        get(&gateway, "stringValue=a&int32Value=1").await.headers()["x-cache"],
        "miss"
    );
    assert_eq!(
        get(&gateway, "int32Value=1&stringValue=a").await.headers()["x-cache"],
        "hit"
    );
    assert_eq!(
        get(&gateway, "stringValue=b").await.headers()["x-cache"],
        "miss"
    );
    assert_eq!(scripted.call_count(), 2);
}

/// The `Server-Timing` metric names of an answer, in order.
fn timing_names(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .get_all("server-timing")
        .iter()
        .flat_map(|v| v.to_str().expect("ASCII").split(','))
        .map(|metric| metric.trim().split(';').next().unwrap_or("").to_string())
        .collect()
}

#[tokio::test]
async fn a_cache_hit_reports_no_upstream_time() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&cached_toml(&scripted, "max_age = \"30s\"")).await;
    let miss = get(&gateway, "stringValue=t").await;
    assert_eq!(miss.headers()["x-cache"], "miss");
    assert_eq!(timing_names(&miss), ["upstream", "gateway"]);
    let hit = get(&gateway, "stringValue=t").await;
    assert_eq!(hit.headers()["x-cache"], "hit");
    assert_eq!(
        timing_names(&hit),
        ["gateway"],
        "the stored upstream time was the first request's, not this one's"
    );
    assert_eq!(scripted.call_count(), 1);
}

// On the paused clock, as the cache's freshness and the upstream's hold
// are: the waits below are exact however loaded the box is.
#[tokio::test(start_paused = true)]
async fn stale_answer_is_served_while_one_background_refresh_runs() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let toml = cached_toml(
        &scripted,
        "max_age = \"1s\", stale_while_revalidate = \"30s\"",
    );
    let gateway = spawn_gateway(&toml).await;
    assert_eq!(
        get(&gateway, "stringValue=x").await.headers()["x-cache"],
        "miss"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    scripted.set_reply(Reply::Delay(Duration::from_secs(2), Box::new(Reply::Echo)));
    let started = tokio::time::Instant::now();
    for i in 0..5 {
        let response = get(&gateway, "stringValue=x").await;
        assert_eq!(
            response.headers()["x-cache"],
            "stale",
            "request {i} after {:?}",
            started.elapsed()
        );
        assert!(response.headers().contains_key("age"));
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "stale answers do not wait for the refresh"
    );
    // Past the refresh's 2 s hold: the clock moves on only when every task
    // waits, so the refreshed answer has been stored by then.
    tokio::time::sleep_until(started + Duration::from_millis(2100)).await;
    assert_eq!(
        scripted.call_count(),
        2,
        "one background refresh for five stale answers"
    );
    assert_eq!(
        get(&gateway, "stringValue=x").await.headers()["x-cache"],
        "hit"
    );
}

#[tokio::test(start_paused = true)]
async fn stale_answer_is_served_when_the_upstream_fails() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let toml = cached_toml(&scripted, "max_age = \"1s\", stale_if_error = \"30s\"");
    let gateway = spawn_gateway(&toml).await;
    assert_eq!(get(&gateway, "stringValue=y").await.status(), 200);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    scripted.set_reply(Reply::Status {
        code: 14,
        message: "down".into(),
        details: None,
    });
    let response = get(&gateway, "stringValue=y").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-cache"], "stale");
    assert_eq!(
        response.text().await.expect("body"),
        r#"{"stringValue":"y"}"#
    );
    // A business error is not a failure to hide: INVALID_ARGUMENT passes through.
    scripted.set_reply(Reply::Status {
        code: 3,
        message: "bad".into(),
        details: None,
    });
    assert_eq!(get(&gateway, "stringValue=y").await.status(), 400);
}

#[tokio::test]
async fn authenticated_answers_are_never_served_from_the_gateway_cache() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let secret = "a-test-secret-that-is-long-enough-for-hs256!";
    let secret_dir = tempfile::tempdir().expect("tempdir");
    let secret_file = secret_dir.path().join("secret");
    std::fs::write(&secret_file, secret).expect("write secret");
    let toml = everything_toml(scripted.addr, "")
        .replace("auth = \"none\"", "auth = [\"t\", \"none\"]")
        .replace(
            "auth = [\"t\", \"none\"]",
            "auth = \"t\"\ncache = { public = true, gateway = true, max_age = \"30s\" }",
        )
        + "\n[auth.providers.t]\nissuer = \"i\"\nalgorithms = [\"HS256\"]\nsecret_file = \""
        + secret_file.to_str().expect("utf-8")
        + "\"\n";
    let gateway = spawn_gateway(&toml).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let token = |sub: &str| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &serde_json::json!({"iss": "i", "sub": sub, "exp": now + 300}),
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("token")
    };
    for user in ["alice", "bob", "alice"] {
        let response = client()
            .get(format!("{}/v1/echo?stringValue=mine", gateway.base))
            .bearer_auth(token(user))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 200);
        assert!(!response.headers().contains_key("x-cache"));
        assert!(
            response.headers()["cache-control"]
                .to_str()
                .expect("ascii")
                .starts_with("private")
        );
    }
    assert_eq!(
        scripted.call_count(),
        3,
        "every authenticated call reaches the upstream"
    );
}

#[tokio::test]
async fn a_hit_carries_the_etag_of_its_body_and_revalidates_to_a_304() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&cached_toml(&scripted, "max_age = \"30s\"")).await;
    let miss = get(&gateway, "stringValue=tagged").await;
    assert_eq!(miss.headers()["x-cache"], "miss");
    let tag = miss.headers()["etag"].clone();
    // The hit's tag is the one stored with the entry, not hashed again:
    // it must still name the same bytes, and a different body another tag.
    let hit = get(&gateway, "stringValue=tagged").await;
    assert_eq!(hit.headers()["x-cache"], "hit");
    assert_eq!(hit.headers()["etag"], tag);
    let other = get(&gateway, "stringValue=other").await;
    assert_ne!(other.headers()["etag"], tag);
    let revalidated = client()
        .get(format!("{}/v1/echo?stringValue=tagged", gateway.base))
        .header("if-none-match", tag.clone())
        .send()
        .await
        .expect("send");
    assert_eq!(revalidated.status(), 304);
    assert_eq!(revalidated.headers()["x-cache"], "hit");
    assert_eq!(revalidated.headers()["etag"], tag);
    assert_eq!(scripted.call_count(), 2, "one call per distinct query");
}
