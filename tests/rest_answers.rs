//! Per-method success statuses through the real gateway: 201 with a
//! `Location` rendered (and percent-encoded) from the response message,
//! 202, 204 with no body and no Content-Type; GET bindings keep 200 with
//! their cache headers and HEAD; an idempotent replay keeps the 201.

mod support;

use serde_json::json;
use support::{Reply, bookstore_toml, client, pool, spawn_gateway, spawn_scripted};

const METHODS: &str = r#"
[routes.methods.CreateBook]
success_status = 201
location = "/v1/{+name}"
idempotency = {}

[routes.methods.CreateShelf]
success_status = 201
location = "/v1/shelves/{theme}"

[routes.methods.PublishBook]
success_status = 202

[routes.methods.DeleteBook]
success_status = 204
"#;

#[tokio::test]
async fn created_answers_201_with_a_location_from_the_response() {
    let upstream = spawn_scripted(
        pool(),
        Reply::Json(json!({"name": "shelves/1/books/a b", "title": "Dune"})),
    )
    .await;
    let gateway = spawn_gateway(&bookstore_toml(upstream.addr, METHODS)).await;
    let created = client()
        .post(format!("{}/v1/shelves/1/books", gateway.base))
        .header("idempotency-key", "\"c-1\"")
        .json(&json!({"title": "Dune"}))
        .send()
        .await
        .expect("send");
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()["location"], "/v1/shelves/1/books/a%20b");
    assert_eq!(created.headers()["cache-control"], "no-store");
    let body: serde_json::Value = created.json().await.expect("JSON");
    assert_eq!(body["title"], "Dune");

    let replayed = client()
        .post(format!("{}/v1/shelves/1/books", gateway.base))
        .header("idempotency-key", "\"c-1\"")
        .json(&json!({"title": "Dune"}))
        .send()
        .await
        .expect("send");
    assert_eq!(replayed.status(), 201, "a replay keeps its status");
    assert_eq!(replayed.headers()["location"], "/v1/shelves/1/books/a%20b");
    assert_eq!(upstream.call_count(), 1);
}

#[tokio::test]
async fn a_plain_expression_encodes_slashes_in_the_location() {
    let upstream = spawn_scripted(pool(), Reply::Json(json!({"theme": "sci/fi"}))).await;
    let gateway = spawn_gateway(&bookstore_toml(upstream.addr, METHODS)).await;
    let created = client()
        .post(format!("{}/v1/shelves", gateway.base))
        .json(&json!({"theme": "sci/fi"}))
        .send()
        .await
        .expect("send");
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()["location"], "/v1/shelves/sci%2Ffi");
}

#[tokio::test]
async fn accepted_is_202_with_the_body_and_no_content_is_204_without_one() {
    let upstream = spawn_scripted(pool(), Reply::Json(json!({"title": "Dune"}))).await;
    let gateway = spawn_gateway(&bookstore_toml(upstream.addr, METHODS)).await;
    let accepted = client()
        .post(format!("{}/v1/shelves/1/books/2:publish", gateway.base))
        .json(&json!({}))
        .send()
        .await
        .expect("send");
    assert_eq!(accepted.status(), 202);
    assert!(accepted.headers().get("location").is_none());
    assert_eq!(
        accepted.json::<serde_json::Value>().await.expect("JSON")["title"],
        "Dune"
    );

    upstream.set_reply(Reply::Json(json!({})));
    let deleted = client()
        .delete(format!("{}/v1/shelves/1/books/2", gateway.base))
        .send()
        .await
        .expect("send");
    assert_eq!(deleted.status(), 204);
    assert!(deleted.headers().get("content-type").is_none());
    assert!(deleted.headers().get("content-length").is_none());
    assert!(deleted.bytes().await.expect("body").is_empty());
}

#[tokio::test]
async fn get_and_head_keep_200_with_their_cache_headers() {
    let upstream = spawn_scripted(pool(), Reply::Json(json!({"title": "Dune"}))).await;
    let gateway = spawn_gateway(&bookstore_toml(upstream.addr, METHODS)).await;
    let url = format!("{}/v1/shelves/1/books/2", gateway.base);
    let got = client().get(&url).send().await.expect("send");
    assert_eq!(got.status(), 200);
    assert!(got.headers().contains_key("etag"));
    let head = client().head(&url).send().await.expect("send");
    assert_eq!(head.status(), 200);
    assert!(head.headers().contains_key("etag"));
    assert!(head.bytes().await.expect("body").is_empty());
}
