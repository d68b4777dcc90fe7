//! Streaming methods over WebSocket: bidi echo one JSON message per text
//! frame each way, close codes from the gRPC status, a client stream ended
//! by an empty frame, auth on the upgrade request, the origin checked
//! against the CORS list, and the idle timeout.

mod stream_upstream;
mod support;

use futures_util::{SinkExt as _, StreamExt as _};
use stream_upstream::*;
use support::spawn_gateway;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(
    url: &str,
    headers: &[(&str, &str)],
) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
    let mut request = url.into_client_request().expect("request");
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            value.parse().expect("value"),
        );
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(socket, _)| socket)
}

/// The next text frame, as JSON.
async fn next_json(socket: &mut Socket) -> serde_json::Value {
    loop {
        match socket.next().await.expect("a frame").expect("read") {
            Message::Text(text) => return serde_json::from_str(&text).expect("json"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// The close frame's code and reason.
async fn closed(socket: &mut Socket) -> (u16, String) {
    loop {
        match socket.next().await {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (u16::from(frame.code), frame.reason.to_string());
            }
            Some(Ok(Message::Close(None))) | None => return (1005, String::new()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("read: {e}"),
        }
    }
}

fn ws_base(gateway: &support::TestGateway) -> String {
    format!("ws://{}", gateway.addr)
}

#[tokio::test]
async fn a_bidi_call_echoes_message_by_message_and_closes_normally() {
    let upstream = spawn_stream_upstream().await;
    let gateway = spawn_gateway(&streaming_toml(upstream.addr, "")).await;
    let mut socket = connect(&format!("{}/v1/double", ws_base(&gateway)), &[])
        .await
        .expect("upgrade");
    for value in [1, 20, 300] {
        socket
            .send(Message::text(format!("{{\"value\": {value}}}")))
            .await
            .expect("send");
        // Each answer comes before the next question: message by message.
        let answer = next_json(&mut socket).await;
        assert_eq!(
            answer,
            serde_json::json!({"value": (value * 2).to_string()})
        );
    }
    socket.send(Message::text("")).await.expect("end of input");
    assert_eq!(closed(&mut socket).await, (1000, String::new()));
}

#[tokio::test]
async fn an_upstream_status_is_a_last_error_frame_and_close_code_4000_plus_the_code() {
    let upstream = spawn_stream_upstream().await;
    let gateway = spawn_gateway(&streaming_toml(upstream.addr, "")).await;
    let mut socket = connect(&format!("{}/v1/double", ws_base(&gateway)), &[])
        .await
        .expect("upgrade");
    socket
        .send(Message::text("{\"value\": 2}"))
        .await
        .expect("send");
    assert_eq!(next_json(&mut socket).await["value"], "4");
    socket
        .send(Message::text("{\"value\": -1}"))
        .await
        .expect("send");
    let last = next_json(&mut socket).await;
    assert_eq!(last["error"]["code"], 11);
    assert_eq!(last["error"]["message"], "negative numbers are not doubled");
    assert_eq!(
        closed(&mut socket).await,
        (4011, "negative numbers are not doubled".into())
    );
}

#[tokio::test]
async fn a_bad_client_message_closes_with_invalid_argument_and_names_it() {
    let upstream = spawn_stream_upstream().await;
    let gateway = spawn_gateway(&streaming_toml(upstream.addr, "")).await;
    let mut socket = connect(&format!("{}/v1/double", ws_base(&gateway)), &[])
        .await
        .expect("upgrade");
    socket
        .send(Message::text("{\"value\": 1}"))
        .await
        .expect("send");
    next_json(&mut socket).await;
    socket
        .send(Message::text("{\"value\": \"many\"}"))
        .await
        .expect("send");
    let last = next_json(&mut socket).await;
    assert_eq!(last["error"]["code"], 3);
    let message = last["error"]["message"].as_str().expect("message");
    assert!(
        message.starts_with("message 2 of the request stream"),
        "{message}"
    );
    let (code, _) = closed(&mut socket).await;
    assert_eq!(code, 4003);
    // The upstream's stream was cancelled, not left open.
    upstream.state.next_cancellation().await;
}

#[tokio::test]
async fn a_client_stream_over_a_websocket_is_answered_once_its_input_ends() {
    let upstream = spawn_stream_upstream().await;
    let gateway = spawn_gateway(&streaming_toml(upstream.addr, "")).await;
    // Sum is bound to POST; the upgrade (a GET) reaches it all the same.
    let mut socket = connect(&format!("{}/v1/sums/ws", ws_base(&gateway)), &[])
        .await
        .expect("upgrade");
    for value in [4, 5, 6] {
        socket
            .send(Message::text(format!("{{\"value\": {value}}}")))
            .await
            .expect("send");
    }
    upstream.state.until_received(3).await;
    socket.send(Message::text("")).await.expect("end of input");
    let total = next_json(&mut socket).await;
    assert_eq!(
        total,
        serde_json::json!({"sum": "15", "count": "3", "label": "ws"})
    );
    assert_eq!(closed(&mut socket).await.0, 1000);
}

#[tokio::test]
async fn a_server_stream_over_a_websocket_sends_each_message_as_a_frame() {
    let upstream = spawn_stream_upstream().await;
    let gateway = spawn_gateway(&streaming_toml(upstream.addr, "")).await;
    let mut socket = connect(
        &format!("{}/v1/ticks?count=3&interval_ms=5", ws_base(&gateway)),
        &[],
    )
    .await
    .expect("upgrade");
    for seq in 1..=3 {
        let tick = next_json(&mut socket).await;
        assert_eq!(tick["seq"], seq.to_string(), "{tick}");
    }
    assert_eq!(closed(&mut socket).await.0, 1000);
}

#[tokio::test]
async fn the_upgrade_is_authenticated_like_any_request() {
    let upstream = spawn_stream_upstream().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (provider, token) = support::hmac_provider(dir.path());
    let toml =
        streaming_toml(upstream.addr, "").replace("auth = \"none\"", "auth = \"t\"") + &provider;
    let gateway = spawn_gateway(&toml).await;
    let url = format!("{}/v1/double", ws_base(&gateway));
    match connect(&url, &[]).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401)
        }
        other => panic!("expected a 401, got {:?}", other.map(|_| ())),
    }
    assert_eq!(
        upstream
            .state
            .calls
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    let bearer = format!("Bearer {}", token("stream-tester"));
    let mut socket = connect(&url, &[("authorization", &bearer)])
        .await
        .expect("upgrade");
    socket
        .send(Message::text("{\"value\": 21}"))
        .await
        .expect("send");
    assert_eq!(next_json(&mut socket).await["value"], "42");
}

#[tokio::test]
async fn only_allowed_origins_may_open_a_websocket() {
    let upstream = spawn_stream_upstream().await;
    let toml = streaming_toml(upstream.addr, "").replace(
        "[server]\n",
        "[cors]\nallow_origins = [\"https://app.example.com\"]\n\n[server]\n",
    );
    let gateway = spawn_gateway(&toml).await;
    let url = format!("{}/v1/double", ws_base(&gateway));
    match connect(&url, &[("origin", "https://evil.example.net")]).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        other => panic!("expected a 403, got {:?}", other.map(|_| ())),
    }
    let mut socket = connect(&url, &[("origin", "https://app.example.com")])
        .await
        .expect("upgrade");
    socket
        .send(Message::text("{\"value\": 1}"))
        .await
        .expect("send");
    assert_eq!(next_json(&mut socket).await["value"], "2");
}

#[tokio::test]
async fn a_quiet_socket_is_closed_at_the_idle_timeout_with_deadline_exceeded() {
    let upstream = spawn_stream_upstream().await;
    let route = "stream_timeout = \"60s\"\nstream_idle_timeout = \"200ms\"";
    let gateway = spawn_gateway(&streaming_toml(upstream.addr, route)).await;
    let mut socket = connect(&format!("{}/v1/double", ws_base(&gateway)), &[])
        .await
        .expect("upgrade");
    socket
        .send(Message::text("{\"value\": 1}"))
        .await
        .expect("send");
    next_json(&mut socket).await;
    let last = next_json(&mut socket).await;
    assert_eq!(last["error"]["details"][0]["reason"], "STREAM_IDLE_TIMEOUT");
    assert_eq!(closed(&mut socket).await.0, 4004);
    assert_eq!(u16::from(CloseCode::Normal), 1000);
}

#[tokio::test]
async fn a_shutdown_closes_open_sockets_with_going_away() {
    let upstream = spawn_stream_upstream().await;
    let gateway = spawn_gateway(&streaming_toml(upstream.addr, r#"stream_timeout = "60s""#)).await;
    let mut socket = connect(&format!("{}/v1/double", ws_base(&gateway)), &[])
        .await
        .expect("upgrade");
    socket
        .send(Message::text("{\"value\": 4}"))
        .await
        .expect("send");
    assert_eq!(next_json(&mut socket).await["value"], "8");
    gateway.gateway.end_streams();
    let (code, reason) = closed(&mut socket).await;
    assert_eq!(code, 1001);
    assert!(reason.contains("shutting down"), "{reason}");
}
