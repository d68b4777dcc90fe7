//! Failures over real sockets: every gRPC code's HTTP status and JSON body,
//! rendered status details, and transport failures kept apart from business
//! errors (503/502 with the gateway's own ErrorInfo, no upstream internals).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use prost_reflect::{DynamicMessage, Value};
use serde_json::json;
use support::*;
use tokio::net::TcpListener;

const ERROR_INFO: &str = "type.googleapis.com/google.rpc.ErrorInfo";

/// A routes.toml for the Everything service with settings of its own upstream.
fn echo_toml(upstream: SocketAddr, upstream_extra: &str) -> String {
    everything_toml_with(upstream, upstream_extra, "")
}

/// An error answer: status, headers and the parsed body.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: serde_json::Value,
    text: String,
}

async fn post_echo(gateway: &TestGateway, body: &str) -> Answer {
    let response = client()
        .post(format!("{}/v1/echo", gateway.base))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("send");
    answer(response).await
}

async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    Answer {
        status,
        headers,
        body,
        text,
    }
}

/// Asserts the answer is shaped like google.rpc.Status and is marked uncacheable.
fn assert_error_shape(answer: &Answer) {
    let object = answer
        .body
        .as_object()
        .unwrap_or_else(|| panic!("error body is not a JSON object: {}", answer.text));
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["code", "details", "message"], "{}", answer.text);
    assert!(answer.body["code"].is_i64());
    assert!(answer.body["message"].is_string());
    assert!(answer.body["details"].is_array());
    assert_eq!(answer.headers["cache-control"], "no-store");
    assert_eq!(answer.headers["content-type"], "application/json");
    let id = answer.headers["x-request-id"].to_str().expect("ascii id");
    assert!(!id.is_empty());
}

/// The gateway's own ErrorInfo reason, if the first detail is one.
fn reason(answer: &Answer) -> &str {
    let detail = &answer.body["details"][0];
    assert_eq!(detail["@type"], ERROR_INFO, "{}", answer.text);
    assert_eq!(detail["domain"], "protogate");
    detail["reason"].as_str().expect("reason")
}

fn status(code: i32, message: &str, details: Option<Bytes>) -> Reply {
    Reply::Status {
        code,
        message: message.into(),
        details,
    }
}

/// A google.rpc.Status whose one detail has a type no descriptor describes.
fn unknown_detail(code: i32, message: &str, type_url: &str, value: &[u8]) -> Bytes {
    let pool = pool();
    let any_type = pool
        .get_message_by_name("google.protobuf.Any")
        .expect("wkt");
    let mut any = DynamicMessage::new(any_type);
    any.set_field_by_name("type_url", Value::String(type_url.into()));
    any.set_field_by_name("value", Value::Bytes(Bytes::copy_from_slice(value)));
    let mut envelope =
        DynamicMessage::new(pool.get_message_by_name("google.rpc.Status").expect("rpc"));
    envelope.set_field_by_name("code", Value::I32(code));
    envelope.set_field_by_name("message", Value::String(message.into()));
    envelope.set_field_by_name("details", Value::List(vec![Value::Message(any)]));
    envelope.encode_to_vec().into()
}

/// An address on 127.0.0.1 that refuses connections: a socket bound to it
/// that never listens, kept for as long as the test holds it (so no other
/// test can take the port meanwhile).
fn refusing_addr() -> (socket2::Socket, SocketAddr) {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    let addr = socket
        .local_addr()
        .expect("addr")
        .as_socket()
        .expect("an IP address");
    (socket, addr)
}

#[tokio::test]
async fn every_grpc_code_maps_to_its_http_status_with_a_status_body() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, "")).await;
    let table: [(i32, &str, u16); 16] = [
        (1, "CANCELLED", 499),
        (2, "UNKNOWN", 500),
        (3, "INVALID_ARGUMENT", 400),
        (4, "DEADLINE_EXCEEDED", 504),
        (5, "NOT_FOUND", 404),
        (6, "ALREADY_EXISTS", 409),
        (7, "PERMISSION_DENIED", 403),
        (8, "RESOURCE_EXHAUSTED", 429),
        (9, "FAILED_PRECONDITION", 400),
        (10, "ABORTED", 409),
        (11, "OUT_OF_RANGE", 400),
        (12, "UNIMPLEMENTED", 501),
        (13, "INTERNAL", 500),
        (14, "UNAVAILABLE", 503),
        (15, "DATA_LOSS", 500),
        (16, "UNAUTHENTICATED", 401),
    ];
    for (code, name, http) in table {
        let message = format!("scripted {name}");
        scripted.set_reply(status(code, &message, None));
        let answer = post_echo(&gateway, "{}").await;
        assert_eq!(answer.status, http, "{name}: {}", answer.text);
        assert_error_shape(&answer);
        assert_eq!(
            answer.body,
            json!({"code": code, "message": message, "details": []}),
            "{name}"
        );
        assert!(!answer.headers.contains_key("retry-after"), "{name}");
    }
    assert_eq!(scripted.call_count(), table.len());
}

#[tokio::test]
async fn known_details_are_rendered_as_json_with_their_type() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, "")).await;
    let details = status_details(
        &pool(),
        3,
        "bad shelf",
        &[
            (
                "google.rpc.ErrorInfo",
                json!({"reason": "SHELF_FULL", "domain": "bookstore.example", "metadata": {"shelf": "7"}}),
            ),
            (
                "google.rpc.BadRequest",
                json!({"fieldViolations": [{"field": "shelf.theme", "description": "must not be empty"}]}),
            ),
            (
                "google.rpc.ResourceInfo",
                json!({"resourceType": "shelf", "resourceName": "shelves/7", "description": "full"}),
            ),
        ],
    );
    scripted.set_reply(status(3, "bad shelf", Some(details)));
    let answer = post_echo(&gateway, "{}").await;
    assert_eq!(answer.status, 400, "{}", answer.text);
    assert_error_shape(&answer);
    assert_eq!(
        answer.body,
        json!({
            "code": 3,
            "message": "bad shelf",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "SHELF_FULL",
                    "domain": "bookstore.example",
                    "metadata": {"shelf": "7"},
                },
                {
                    "@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": [{"field": "shelf.theme", "description": "must not be empty"}],
                },
                {
                    "@type": "type.googleapis.com/google.rpc.ResourceInfo",
                    "resourceType": "shelf",
                    "resourceName": "shelves/7",
                    "description": "full",
                },
            ],
        })
    );
}

#[tokio::test]
async fn retry_info_of_one_and_a_half_seconds_sets_retry_after_2() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, "")).await;
    let details = status_details(
        &pool(),
        8,
        "slow down",
        &[("google.rpc.RetryInfo", json!({"retryDelay": "1.5s"}))],
    );
    scripted.set_reply(status(8, "slow down", Some(details)));
    let answer = post_echo(&gateway, "{}").await;
    assert_eq!(answer.status, 429, "{}", answer.text);
    assert_error_shape(&answer);
    assert_eq!(answer.headers["retry-after"], "2");
    let detail = &answer.body["details"][0];
    assert_eq!(detail["@type"], "type.googleapis.com/google.rpc.RetryInfo");
    let delay = detail["retryDelay"].as_str().expect("duration string");
    assert!(delay == "1.5s" || delay == "1.500s", "{delay}");
}

#[tokio::test]
async fn unknown_detail_type_renders_its_type_url_and_base64_value() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, "")).await;
    let type_url = "type.googleapis.com/acme.v1.QuotaDetail";
    let details = unknown_detail(9, "nope", type_url, &[1, 2, 3, 250]);
    scripted.set_reply(status(9, "nope", Some(details)));
    let answer = post_echo(&gateway, "{}").await;
    assert_eq!(answer.status, 400, "{}", answer.text);
    assert_error_shape(&answer);
    assert_eq!(
        answer.body["details"],
        json!([{"@type": type_url, "value": "AQID+g=="}])
    );
}

#[tokio::test]
async fn percent_encoded_grpc_message_is_decoded() {
    let scripted = spawn_scripted(pool(), status(5, "caf%C3%A9 50%25 gone", None)).await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, "")).await;
    let answer = post_echo(&gateway, "{}").await;
    assert_eq!(answer.status, 404, "{}", answer.text);
    assert_eq!(answer.body["message"], "café 50% gone");
}

/// A `grpc-status-details-bin` the gateway cannot read is the upstream's
/// fault: 502 with the gateway's reason, the upstream's code and message
/// kept, and the gateway keeps serving (nothing panicked).
async fn assert_bad_status_details(reply: Reply) {
    let scripted = spawn_scripted(pool(), reply).await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, "")).await;
    let answer = post_echo(&gateway, "{}").await;
    assert_eq!(answer.status, 502, "{}", answer.text);
    assert_error_shape(&answer);
    assert_eq!(answer.body["code"], 7, "{}", answer.text);
    assert_eq!(answer.body["message"], "denied", "{}", answer.text);
    assert_eq!(reason(&answer), "UPSTREAM_BAD_STATUS_DETAILS");
    scripted.set_reply(Reply::Echo);
    assert_eq!(post_echo(&gateway, "{}").await.status, 200);
    assert_eq!(
        scripted.accepted.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

#[tokio::test]
async fn status_details_that_are_not_base64_are_502_with_the_code_and_message_kept() {
    assert_bad_status_details(Reply::WithMetadata {
        headers: vec![("grpc-status-details-bin", "not*base64!")],
        trailers: vec![],
        reply: Box::new(status(7, "denied", None)),
    })
    .await;
}

#[tokio::test]
async fn status_details_trailer_that_is_not_base64_is_502_with_the_code_and_message_kept() {
    assert_bad_status_details(Reply::WithMetadata {
        headers: vec![],
        trailers: vec![
            ("grpc-status", "7"),
            ("grpc-message", "denied"),
            ("grpc-status-details-bin", "%%%"),
        ],
        reply: Box::new(Reply::Echo),
    })
    .await;
}

#[tokio::test]
async fn status_details_that_are_not_a_google_rpc_status_are_502_with_the_code_and_message_kept() {
    let garbage = Bytes::from_static(&[0xff, 0xff, 0xff]);
    assert_bad_status_details(status(7, "denied", Some(garbage))).await;
}

#[tokio::test]
async fn unpadded_and_padded_status_details_are_both_read() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, "")).await;
    // google.rpc.Status{code: 5, message: "a"}: 4 bytes, so padding matters.
    for encoded in ["CAUSAWE", "CAUSAWE="] {
        scripted.set_reply(Reply::WithMetadata {
            headers: vec![("grpc-status-details-bin", encoded)],
            trailers: vec![],
            reply: Box::new(status(5, "a", None)),
        });
        let answer = post_echo(&gateway, "{}").await;
        assert_eq!(answer.status, 404, "{encoded}: {}", answer.text);
        assert_eq!(
            answer.body,
            json!({"code": 5, "message": "a", "details": []}),
            "{encoded}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn trailer_block_over_the_metadata_limit_is_a_prompt_502() {
    let scripted = spawn_scripted(
        pool(),
        Reply::LargeTrailer {
            name: "grpc-message",
            bytes: 1 << 20,
        },
    )
    .await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, "")).await;
    // The route's budget is 5s of paused time: a gateway that waits for the
    // deadline instead of failing the call lets the clock run to it.
    let started = tokio::time::Instant::now();
    let answer = post_echo(&gateway, "{}").await;
    assert_eq!(answer.status, 502, "{}", answer.text);
    assert_error_shape(&answer);
    assert_eq!(reason(&answer), "UPSTREAM_METADATA_TOO_LARGE");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "answered after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn grpc_status_outside_the_code_range_is_unknown_500() {
    let scripted = spawn_scripted(pool(), status(42, "odd", None)).await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, "")).await;
    let answer = post_echo(&gateway, "{}").await;
    assert_eq!(answer.status, 500, "{}", answer.text);
    assert_error_shape(&answer);
    assert_eq!(answer.body["code"], 2);
}

#[tokio::test]
async fn bookstore_not_found_carries_resource_info_end_to_end() {
    let (upstream, _) = spawn_bookstore().await;
    let gateway = spawn_gateway(&bookstore_toml(upstream, "")).await;
    let response = client()
        .get(format!("{}/v1/shelves/1/books/999", gateway.base))
        .send()
        .await
        .expect("send");
    let answer = answer(response).await;
    assert_eq!(answer.status, 404, "{}", answer.text);
    assert_error_shape(&answer);
    assert_eq!(answer.body["code"], 5);
    let detail = &answer.body["details"][0];
    assert_eq!(
        detail["@type"],
        "type.googleapis.com/google.rpc.ResourceInfo"
    );
    assert_eq!(detail["resourceType"], "book");
    assert_eq!(detail["resourceName"], "shelves/1/books/999");
}

#[tokio::test]
async fn unreachable_upstream_is_503_upstream_unreachable_without_its_address() {
    let (_refusing, nobody) = refusing_addr();
    let gateway = spawn_gateway(&echo_toml(nobody, "")).await;
    let answer = post_echo(&gateway, "{}").await;
    assert_eq!(answer.status, 503, "{}", answer.text);
    assert_error_shape(&answer);
    assert_eq!(answer.body["code"], 14);
    assert_eq!(reason(&answer), "UPSTREAM_UNREACHABLE");
    let port = nobody.port().to_string();
    assert!(
        !answer.text.contains(&port),
        "leaks the endpoint: {}",
        answer.text
    );
    assert!(
        !answer.text.contains("os error"),
        "leaks the OS error: {}",
        answer.text
    );
}

/// Each garbage reply is a 502 UPSTREAM_BAD_RESPONSE, never a business error,
/// and the body says nothing about what exactly the upstream sent.
async fn assert_bad_response(upstream_extra: &str, reply: Reply, leaks: &[&str]) {
    let scripted = spawn_scripted(pool(), reply).await;
    let gateway = spawn_gateway(&echo_toml(scripted.addr, upstream_extra)).await;
    let answer = post_echo(&gateway, r#"{"stringValue":"hello"}"#).await;
    assert_eq!(answer.status, 502, "{}", answer.text);
    assert_error_shape(&answer);
    assert_eq!(reason(&answer), "UPSTREAM_BAD_RESPONSE");
    assert_eq!(answer.body["code"], 13);
    assert_eq!(scripted.call_count(), 1);
    for leak in leaks {
        assert!(
            !answer.text.contains(leak),
            "error body contains {leak:?}: {}",
            answer.text
        );
    }
    assert!(!answer.text.contains(&scripted.addr.port().to_string()));
}

#[tokio::test]
async fn undecodable_message_is_502_bad_response() {
    let garbage = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff]);
    assert_bad_response("", Reply::RawMessage(garbage), &["decode", "Everything"]).await;
}

#[tokio::test]
async fn truncated_frame_is_502_bad_response() {
    let truncated = Bytes::from_static(&[0, 0, 0, 0, 10, 0x72, 0x01]);
    assert_bad_response("", Reply::Frames(truncated), &["truncated", "frame"]).await;
}

#[tokio::test]
async fn non_200_http_status_from_upstream_is_502_bad_response() {
    assert_bad_response("", Reply::Http(500), &["nope", "html", "500"]).await;
}

#[tokio::test]
async fn response_without_trailers_is_502_bad_response() {
    let message = frame(b"");
    assert_bad_response("", Reply::NoTrailers(message), &["trailer"]).await;
}

#[tokio::test]
async fn message_over_max_message_bytes_is_502_bad_response() {
    // Field 14 (string_value), 100 bytes: a valid Everything of 102 bytes.
    let mut big = vec![0x72, 100];
    big.extend(std::iter::repeat_n(b'x', 100));
    assert_bad_response(
        "max_message_bytes = 64",
        Reply::RawMessage(big.into()),
        &["64", "limit"],
    )
    .await;
}

#[tokio::test]
async fn ok_status_without_a_message_is_502_bad_response() {
    // Trailers-only with grpc-status 0: a unary call must carry one message.
    assert_bad_response("", status(0, "", None), &[]).await;
}

#[tokio::test]
async fn message_within_max_message_bytes_succeeds() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&echo_toml(scripted.addr, "max_message_bytes = 256")).await;
    let text = "y".repeat(200);
    let answer = post_echo(&gateway, &format!(r#"{{"stringValue":"{text}"}}"#)).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["stringValue"], text.as_str());
}

/// The demo Bookstore on `listener` until `stop` fires, counting the calls
/// each connection carries into `streams`; the task ends once every
/// connection has closed.
fn bookstore_on(
    listener: TcpListener,
    stop: tokio::sync::oneshot::Receiver<()>,
    streams: StreamsPerConnection,
) -> tokio::task::JoinHandle<()> {
    let service = protogate::cli::demo::pb::bookstore::v1::bookstore_server::BookstoreServer::new(
        protogate::cli::demo::Store::with_sample_data(),
    );
    let incoming = tokio_stream_of(listener);
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .layer(stream_counter(streams))
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stop.await;
            })
            .await;
    })
}

fn tokio_stream_of(
    listener: TcpListener,
) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures_util::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| {
            // Nagle's delay on a small write (GOAWAY, PING) would be an
            // idle moment the paused clock jumps over.
            let _ = stream.set_nodelay(true);
            stream
        });
        Some((accepted, listener))
    })
}

/// Calls per upstream connection, in connection order.
fn counts(streams: &StreamsPerConnection) -> Vec<usize> {
    streams.lock().expect("lock").values().copied().collect()
}

/// Paused clock: the pool's backoffs and dial timeouts run in virtual time,
/// so "a while later" costs nothing and cannot be too short on a busy box.
#[tokio::test(start_paused = true)]
async fn upstream_that_goes_down_answers_503_and_is_redialled_when_it_returns() {
    // One listening socket for the whole test. While no server accepts on
    // it, the pool's dials wait in its backlog, never get SETTINGS and time
    // out; a server started on it again takes them up.
    let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    socket.set_nonblocking(true).expect("nonblocking");
    let addr = socket.local_addr().expect("addr");
    let serve = || TcpListener::from_std(socket.try_clone().expect("dup")).expect("listener");
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let server = bookstore_on(serve(), stopped, StreamsPerConnection::default());
    let toml = bookstore_toml(addr, "").replace(
        "connections = 2",
        "connections = 2\nreconnect_backoff = \"20ms\"\nreconnect_backoff_max = \"100ms\"",
    );
    let gateway = spawn_gateway(&toml).await;
    let url = format!("{}/v1/shelves/1/books/2", gateway.base);
    let get = || async { client().get(&url).send().await.expect("send") };
    assert_eq!(get().await.status(), 200);

    // Down: a graceful stop closes the gateway's connections.
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the upstream stops")
        .expect("server task");
    let down = answer(get().await).await;
    assert_eq!(down.status, 503, "{}", down.text);
    assert_error_shape(&down);
    assert!(
        ["UPSTREAM_UNREACHABLE", "UPSTREAM_CONNECTION_LOST"].contains(&reason(&down)),
        "{}",
        down.text
    );
    // Still down after several redials (each waits 1s for SETTINGS).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still_down = answer(get().await).await;
    assert_eq!(still_down.status, 503, "{}", still_down.text);
    assert_eq!(reason(&still_down), "UPSTREAM_UNREACHABLE");

    // Back: the pool redials both slots on its own.
    let streams = StreamsPerConnection::default();
    let (_stop_again, stopped_again) = tokio::sync::oneshot::channel();
    let _server = bookstore_on(serve(), stopped_again, streams.clone());
    let started = tokio::time::Instant::now();
    while counts(&streams).len() < 2 {
        let response = get().await;
        if response.status() == 200 {
            let body: serde_json::Value = response.json().await.expect("json");
            assert_eq!(body["title"], "Kindred");
        } else {
            assert_eq!(response.status(), 503);
        }
        // Lets the paused clock move, so the bound below can be reached.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "both slots did not come back within 5s: {:?}",
            counts(&streams)
        );
    }
    // Both slots are back: a run of calls all succeed, half on each.
    let before = counts(&streams);
    for _ in 0..10 {
        assert_eq!(get().await.status(), 200);
    }
    let after = counts(&streams);
    assert_eq!(after.len(), 2, "{after:?}");
    let run: Vec<usize> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(run, [5, 5], "calls per connection in the run");
}
