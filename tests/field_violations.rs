//! A 400 about a field carries a `google.rpc.BadRequest` detail whose
//! field violation names that field as the client sent it: a path
//! variable, a query parameter, an unknown or duplicated body field, and
//! any value inside a JSON body that its field cannot take, by its full
//! path (`nested.children[1].count`, `boolEnumMap["true"]`).

mod support;

use serde_json::{Value, json};
use support::{
    Reply, Scripted, TestGateway, bookstore_toml, client, everything_toml, pool, spawn_gateway,
    spawn_scripted,
};

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
        "book.colour",
        "an unknown body field, from the request message (body = \"book\")"
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
        "book.title",
        "a duplicated body field"
    );
    assert_eq!(upstream.call_count(), 0);
}

async fn echo_gateway() -> (Scripted, TestGateway) {
    let upstream = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml(upstream.addr, "")).await;
    (upstream, gateway)
}

async fn send_json(
    gateway: &TestGateway,
    method: reqwest::Method,
    path: &str,
    body: &str,
) -> reqwest::Response {
    client()
        .request(method, format!("{}{path}", gateway.base))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("send")
}

/// Each `(body, field, words of the description)` posted to `/v1/echo`
/// (`body = "*"`) is a 400 whose violation names `field`.
async fn assert_violations(cases: &[(&str, &str, &str)]) {
    let (upstream, gateway) = echo_gateway().await;
    for (body, field, words) in cases {
        let response = send_json(&gateway, reqwest::Method::POST, "/v1/echo", body).await;
        let (named, description) = violation(response).await;
        assert_eq!(&named, field, "{body}: {description}");
        assert!(description.contains(words), "{body}: {description}");
    }
    assert_eq!(
        upstream.call_count(),
        0,
        "the upstream saw a refused request"
    );
}

#[tokio::test]
async fn a_value_of_the_wrong_type_names_its_full_path() {
    assert_violations(&[
        (r#"{"stringValue": 5}"#, "stringValue", "invalid type"),
        (
            r#"{"nested": {"children": [{"label": "a"}, {"count": "x"}]}}"#,
            "nested.children[1].count",
            "",
        ),
        (
            r#"{"repeatedString": ["a", 1]}"#,
            "repeatedString[1]",
            "invalid type",
        ),
        (
            r#"{"intMap": {"7": {"label": []}}}"#,
            r#"intMap["7"].label"#,
            "invalid type",
        ),
        (
            r#"{"nested": {"child": 3}}"#,
            "nested.child",
            "invalid type",
        ),
    ])
    .await;
}

#[tokio::test]
async fn an_out_of_range_number_names_its_field() {
    assert_violations(&[
        (r#"{"int32Value": 3000000000}"#, "int32Value", ""),
        (
            r#"{"repeatedInt64": ["1", "99999999999999999999"]}"#,
            "repeatedInt64[1]",
            "",
        ),
        (
            r#"{"stringInt64Map": {"k": 1.5}}"#,
            r#"stringInt64Map["k"]"#,
            "",
        ),
    ])
    .await;
}

#[tokio::test]
async fn a_bad_enum_name_names_its_field() {
    assert_violations(&[
        (r#"{"enumValue": "COLOR_NOPE"}"#, "enumValue", ""),
        (
            r#"{"repeatedEnum": ["COLOR_RED", "PURPLE"]}"#,
            "repeatedEnum[1]",
            "",
        ),
        (
            r#"{"boolEnumMap": {"true": "COLOR_NOPE"}}"#,
            r#"boolEnumMap["true"]"#,
            "",
        ),
    ])
    .await;
}

#[tokio::test]
async fn a_bad_well_known_type_string_names_its_field() {
    assert_violations(&[
        (r#"{"timestamp": "yesterday"}"#, "timestamp", ""),
        (
            r#"{"repeatedTimestamp": ["2024-01-01T00:00:00Z", "soon"]}"#,
            "repeatedTimestamp[1]",
            "",
        ),
        (r#"{"duration": "5 minutes"}"#, "duration", ""),
        (r#"{"bytesValue": "not base64!"}"#, "bytesValue", ""),
        (r#"{"fieldMask": "a,,b"}"#, "fieldMask", ""),
        (r#"{"int64Wrapper": "x"}"#, "int64Wrapper", ""),
    ])
    .await;
}

#[tokio::test]
async fn an_unknown_nested_body_field_is_named_by_its_full_path() {
    assert_violations(&[
        (
            r#"{"nested": {"child": {"colour": 1}}}"#,
            "nested.child.colour",
            "unknown field",
        ),
        (
            r#"{"repeatedNested": [{}, {"colour": 1}]}"#,
            "repeatedNested[1].colour",
            "unknown field",
        ),
    ])
    .await;
}

#[tokio::test]
async fn inside_a_body_field_the_path_starts_at_the_request_message() {
    let (upstream, gateway) = echo_gateway().await;
    // PUT /v1/echo/{string_value}/nested takes `body = "nested"`.
    for (body, field) in [
        (r#"{"child": {"count": "x"}}"#, "nested.child.count"),
        (r#"{"colour": 1}"#, "nested.colour"),
        (r#"{"count": 1, "count": 2}"#, "nested.count"),
    ] {
        let response = send_json(&gateway, reqwest::Method::PUT, "/v1/echo/s/nested", body).await;
        assert_eq!(violation(response).await.0, field, "{body}");
    }
    assert_eq!(
        upstream.call_count(),
        0,
        "the upstream saw a refused request"
    );
}

#[tokio::test]
async fn malformed_json_syntax_has_no_field_violation() {
    let (upstream, gateway) = echo_gateway().await;
    for body in [
        r#"{"stringValue": }"#,
        r#"{"nested": {"label": "a"}"#,
        "[1, 2]",
    ] {
        let response = send_json(&gateway, reqwest::Method::POST, "/v1/echo", body).await;
        assert_eq!(response.status(), 400);
        let status: Value = response.json().await.expect("JSON");
        assert_eq!(
            status["details"][0]["reason"], "MALFORMED_JSON",
            "{body}: {status}"
        );
        assert!(
            status["details"]
                .as_array()
                .expect("details")
                .iter()
                .all(|d| d["@type"] != "type.googleapis.com/google.rpc.BadRequest"),
            "{body}: {status}"
        );
    }
    assert_eq!(
        upstream.call_count(),
        0,
        "the upstream saw a refused request"
    );
}

#[tokio::test]
async fn a_duplicated_key_is_named_by_its_full_path() {
    assert_violations(&[
        (
            r#"{"nested": {"child": {"count": 1, "count": 2}}}"#,
            "nested.child.count",
            "duplicate key",
        ),
        (
            r#"{"stringMap": {"k": "1", "k": "2"}}"#,
            r#"stringMap["k"]"#,
            "duplicate key",
        ),
        (
            r#"{"intMap": {"1": {"child": {"label": "a", "label": "b"}}}}"#,
            r#"intMap["1"].child.label"#,
            "duplicate key",
        ),
    ])
    .await;
}
