//! Client streams through the gateway: NDJSON request lines are sent
//! upstream one message each as they arrive, a bad line is a 400 that names
//! it (and resets the upstream stream), and google.api.HttpBody bodies
//! stream raw in both directions.

mod stream_upstream;
mod support;

use std::sync::atomic::Ordering;

use bytes::Bytes;
use stream_upstream::*;
use support::{client, spawn_gateway};

#[tokio::test]
async fn ndjson_lines_are_sent_upstream_as_they_arrive() {
    let upstream = spawn_stream_upstream().await;
    let gateway = spawn_gateway(&streaming_toml(upstream.addr, "")).await;
    let (body, answer) =
        h2c_post_stream(gateway.addr, "/v1/sums/pens", "application/x-ndjson").await;
    body.send(Bytes::from_static(b"{\"value\": 1}\n"))
        .await
        .expect("send");
    // The upstream has the first message while the client still holds the
    // rest: the gateway streamed it, it did not wait for the body's end.
    upstream.state.until_received(1).await;
    body.send(Bytes::from_static(b"{\"value\": 2}\r\n\n{\"val"))
        .await
        .expect("send");
    body.send(Bytes::from_static(b"ue\": \"39\"}"))
        .await
        .expect("send");
    drop(body);
    let (head, text) = answer.await.expect("answer");
    assert_eq!(head.status, 200, "{text:?}");
    assert_eq!(head.headers["cache-control"], "no-store");
    let total: serde_json::Value = serde_json::from_slice(&text).expect("json");
    assert_eq!(
        total,
        serde_json::json!({"sum": "42", "count": "3", "label": "pens"})
    );
    // Every message got the path variable.
    assert_eq!(
        *upstream.state.labels.lock().expect("lock"),
        ["pens", "pens", "pens"]
    );
}

#[tokio::test]
async fn a_bad_line_is_a_400_that_names_it() {
    let upstream = spawn_stream_upstream().await;
    let gateway = spawn_gateway(&streaming_toml(upstream.addr, "")).await;
    let response = client()
        .post(format!("{}/v1/sums/pens", gateway.base))
        .header("content-type", "application/x-ndjson")
        .body("{\"value\": 1}\n{\"value\": \"one\"}\n{\"value\": 3}\n")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.expect("json");
    let message = body["message"].as_str().expect("message");
    assert!(
        message.starts_with("message 2 of the request stream: "),
        "{message}"
    );
}

#[tokio::test]
async fn a_line_over_the_message_limit_is_a_413_and_a_wrong_type_a_415() {
    let upstream = spawn_stream_upstream().await;
    let toml = streaming_toml(upstream.addr, "").replace(
        "[server]\n",
        "[limits]\nmax_body_bytes = 1024\n\n[server]\n",
    );
    let gateway = spawn_gateway(&toml).await;
    let long = format!("{{\"value\": 1, \"label\": \"{}\"}}\n", "x".repeat(2000));
    let response = client()
        .post(format!("{}/v1/sums/pens", gateway.base))
        .header("content-type", "application/x-ndjson")
        .body(long)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 413);
    let body: serde_json::Value = response.json().await.expect("json");
    assert!(
        body["message"].as_str().expect("message").contains("1024"),
        "{body}"
    );

    let calls = upstream.state.calls.load(Ordering::SeqCst);
    let response = client()
        .post(format!("{}/v1/sums/pens", gateway.base))
        .header("content-type", "text/csv")
        .body("1,2,3\n")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 415);
    assert_eq!(
        upstream.state.calls.load(Ordering::SeqCst),
        calls,
        "nothing was sent"
    );
}

#[tokio::test]
async fn an_http_body_upload_streams_raw_chunks() {
    let upstream = spawn_stream_upstream().await;
    let gateway = spawn_gateway(&streaming_toml(upstream.addr, "")).await;
    let (body, answer) = h2c_post_stream(gateway.addr, "/v1/upload", "image/png").await;
    let pieces: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 10_000]).collect();
    let mut expected = FNV_OFFSET;
    for (i, piece) in pieces.iter().enumerate() {
        expected = fnv1a(expected, piece);
        body.send(Bytes::from(piece.clone())).await.expect("send");
        upstream.state.until_received(i as u64 + 1).await;
    }
    drop(body);
    let (head, text) = answer.await.expect("answer");
    assert_eq!(head.status, 200);
    let summary: serde_json::Value = serde_json::from_slice(&text).expect("json");
    assert_eq!(summary["bytes"], "50000");
    assert_eq!(summary["contentType"], "image/png");
    assert_eq!(summary["checksum"], expected.to_string());
    assert!(
        summary["messages"]
            .as_str()
            .expect("count")
            .parse::<u64>()
            .expect("number")
            >= 5
    );
}

#[tokio::test]
async fn an_http_body_download_streams_raw_bytes_under_their_content_type() {
    let upstream = spawn_stream_upstream().await;
    let gateway = spawn_gateway(&streaming_toml(upstream.addr, "")).await;
    let response = client()
        .get(format!(
            "{}/v1/download?size=100000&chunk=3000",
            gateway.base
        ))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/x-test-bytes"
    );
    let bytes = response.bytes().await.expect("body");
    let expected: Vec<u8> = (0..100_000usize).map(|i| (i % 251) as u8).collect();
    assert_eq!(bytes.len(), expected.len());
    assert!(bytes[..] == expected[..]);
}

#[tokio::test]
async fn lines_split_anywhere_make_the_same_messages() {
    let upstream = spawn_stream_upstream().await;
    let gateway = spawn_gateway(&streaming_toml(upstream.addr, "")).await;
    let (body, answer) = h2c_post_stream(gateway.addr, "/v1/sums/bytes", "application/jsonl").await;
    for byte in b"{\"value\": 5}\n\n  \n{\"value\": 6}\r\n{\"value\": 7}" {
        body.send(Bytes::copy_from_slice(&[*byte]))
            .await
            .expect("send");
    }
    drop(body);
    let (head, text) = answer.await.expect("answer");
    assert_eq!(head.status, 200, "{text:?}");
    let total: serde_json::Value = serde_json::from_slice(&text).expect("json");
    assert_eq!(total["sum"], "18");
    assert_eq!(total["count"], "3");
}

#[tokio::test]
async fn a_bidi_method_with_a_body_rule_streams_both_ways_over_plain_http2() {
    use http_body_util::BodyExt as _;
    let upstream = spawn_stream_upstream().await;
    let route = r#"
[routes.methods.Double]
http = { post = "/v1/doubles", body = "*" }"#;
    let gateway = spawn_gateway(&streaming_toml(upstream.addr, route)).await;
    let mut sender = h2c_sender(gateway.addr).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        let data = rx.recv().await?;
        Some((
            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(data)),
            rx,
        ))
    });
    let request = http::Request::post(format!("http://{}/v1/doubles", gateway.addr))
        .header("content-type", "application/x-ndjson")
        .body(http_body_util::StreamBody::new(Box::pin(frames)))
        .expect("request");
    tx.send(Bytes::from_static(b"{\"value\": 1}\n"))
        .await
        .expect("send");
    let response = sender.send_request(request).await.expect("response");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let mut body = response.into_body();
    // Full duplex: each answer comes back while the request is still open.
    for (value, doubled) in [(1, "2"), (20, "40"), (300, "600")] {
        if value != 1 {
            tx.send(Bytes::from(format!("{{\"value\": {value}}}\n")))
                .await
                .expect("send");
        }
        let mut line = Vec::new();
        while !line.ends_with(b"\n") {
            let frame = body.frame().await.expect("a frame").expect("read");
            if let Ok(data) = frame.into_data() {
                line.extend_from_slice(&data);
            }
        }
        let answer: serde_json::Value = serde_json::from_slice(&line).expect("json");
        assert_eq!(answer["value"], doubled);
    }
    drop(tx);
    let rest = body.collect().await.expect("the end").to_bytes();
    assert!(rest.is_empty(), "{rest:?}");
}
