//! The demo Bookstore through the gateway: the happy path works end to end.

mod support;

use support::*;

#[tokio::test]
async fn get_book_is_transcoded_to_json() {
    let (upstream, _) = spawn_bookstore().await;
    let gateway = spawn_gateway(&bookstore_toml(upstream, "")).await;
    let response = client()
        .get(format!("{}/v1/shelves/1/books/2", gateway.base))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["title"], "Kindred");
    assert_eq!(body["pageCount"], "264");
}

#[tokio::test]
async fn scripted_upstream_records_the_request_message() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, "")).await;
    let response = client()
        .post(format!("{}/v1/echo", gateway.base))
        .header("content-type", "application/json")
        .body(r#"{"int64Value":"5","stringValue":"hi"}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["int64Value"], "5");
    let calls = scripted.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].path, "/testing.v1.EverythingService/Echo");
    assert_eq!(calls[0].message["string_value"], "hi");
}
