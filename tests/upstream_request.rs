//! What reaches the upstream over real sockets: a gRPC request carries the
//! headers of the gRPC over HTTP/2 protocol and the metadata the gateway
//! built, nothing its HTTP/2 client adds on its own.

mod support;

use support::*;

#[tokio::test]
async fn upstream_request_carries_no_content_length() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, "")).await;
    let response = client()
        .post(format!("{}/v1/echo", gateway.base))
        .header("content-type", "application/json")
        .body(r#"{"stringValue":"sized"}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let calls = scripted.calls();
    assert_eq!(calls.len(), 1);
    let received = &calls[0].headers;
    assert!(
        !received.contains_key("content-length"),
        "the upstream received content-length as metadata: {received:?}"
    );
    // The protocol's own headers still arrive.
    assert_eq!(received["content-type"], "application/grpc");
    assert_eq!(received["te"], "trailers");
    assert!(received.contains_key("grpc-timeout"));
}
