//! A 400 about a field carries a `google.rpc.BadRequest` detail whose
//! field violation names that field as the client sent it: a path
//! variable, a query parameter, an unknown or duplicated body field.

mod support;

use serde_json::{Value, json};
use support::{Reply, bookstore_toml, client, pool, spawn_gateway, spawn_scripted};

async fn violation(response: reqwest::Response) -> (String, String) {
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("JSON");
    let detail = body["details"]
        .as_array()
        .expect("details")
        .iter()
        .find(|d| d["@type"] == "type.googleapis.com/google.rpc.BadRequest")
        .unwrap_or_else(|| panic!("no BadRequest detail in {body}"))
        .clone();
    let first = &detail["fieldViolations"][0];
    (
        first["field"].as_str().expect("field").to_string(),
        first["description"]
            .as_str()
            .expect("description")
            .to_string(),
    )
}

#[tokio::test]
async fn each_field_400_names_its_field() {
    let upstream = spawn_scripted(pool(), Reply::Json(json!({}))).await;
    let gateway = spawn_gateway(&bookstore_toml(upstream.addr, "")).await;
    let base = &gateway.base;

    let path = client()
        .get(format!("{base}/v1/shelves/abc/books/2"))
        .send()
        .await
        .expect("send");
    assert_eq!(violation(path).await.0, "shelf", "a path variable");

    let query = client()
        .get(format!("{base}/v1/books:search?genres=GENRE_NOPE"))
        .send()
        .await
        .expect("send");
    assert_eq!(violation(query).await.0, "genres", "a query parameter");

    let unknown = client()
        .post(format!("{base}/v1/shelves/1/books"))
        .json(&json!({"title": "Dune", "colour": "red"}))
        .send()
        .await
        .expect("send");
    assert_eq!(
        violation(unknown).await.0,
        "colour",
        "an unknown body field"
    );

    let duplicate = client()
        .post(format!("{base}/v1/shelves/1/books"))
        .header("content-type", "application/json")
        .body(r#"{"title": "Dune", "title": "Emma"}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(
        violation(duplicate).await.0,
        "title",
        "a duplicated body field"
    );
    assert_eq!(upstream.call_count(), 0);
}
