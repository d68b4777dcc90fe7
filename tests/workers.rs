//! `[server] worker_threads`: the real binary serves each client connection
//! on one worker thread, whose calls go out on that worker's own upstream
//! connections; with `worker_threads = 0`, one work-stealing runtime serves
//! everything and calls take turns over all the connections.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

/// How many calls each client connection makes.
const CALLS: usize = 12;

/// `connections` is the upstream's `connections` line (empty: the default).
fn routes(
    dir: &Path,
    upstream: SocketAddr,
    worker_threads: usize,
    connections: &str,
) -> std::path::PathBuf {
    let path = dir.join("routes.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[server]
worker_threads = {worker_threads}
access_log = false

[proto]
files = ["testing/v1/everything.proto"]
include = ['{proto}']

[upstreams.echo]
endpoints = ["http://{upstream}"]
{connections}

[[routes]]
service = "testing.v1.EverythingService"
upstream = "echo"
auth = "none"
"#,
            proto = support::PROTO_DIR,
        ),
    )
    .expect("write routes.toml");
    path
}

/// One HTTP/1.1 client connection, kept open until dropped.
async fn connect(gateway: SocketAddr) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let stream = tokio::net::TcpStream::connect(gateway)
        .await
        .expect("connect");
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    sender
}

/// GET /v1/echo?stringValue=`value` on `client`'s connection.
async fn echo(client: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>, value: &str) {
    let request = http::Request::get(format!("/v1/echo?stringValue={value}"))
        .header("host", "gateway")
        .body(Empty::new())
        .expect("request");
    let response = client.send_request(request).await.expect("send");
    assert_eq!(response.status(), 200);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(body, format!(r#"{{"stringValue":"{value}"}}"#));
}

/// The upstream connections (the gateway's ports) that carried the calls
/// whose value starts with `prefix`.
fn connections_of(upstream: &support::Scripted, prefix: &str) -> BTreeSet<SocketAddr> {
    let calls = upstream.calls().into_iter();
    calls
        .filter(|c| {
            c.message["string_value"]
                .as_str()
                .is_some_and(|v| v.starts_with(prefix))
        })
        .map(|c| c.peer)
        .collect()
}

#[tokio::test]
async fn each_workers_calls_go_out_on_its_own_upstream_connection() {
    let upstream = support::spawn_scripted(support::pool(), support::Reply::Echo).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (_gateway, listen) =
        support::start_binary(&routes(dir.path(), upstream.addr, 2, "connections = 2")).await;

    // Both stay open, so the second goes to the worker serving fewer.
    let mut first = connect(listen).await;
    let mut second = connect(listen).await;
    for i in 0..CALLS {
        echo(&mut first, &format!("first-{i}")).await;
        echo(&mut second, &format!("second-{i}")).await;
    }

    let (of_first, of_second) = (
        connections_of(&upstream, "first-"),
        connections_of(&upstream, "second-"),
    );
    assert_eq!(
        of_first.len(),
        1,
        "one worker, one upstream connection: {of_first:?}"
    );
    assert_eq!(
        of_second.len(),
        1,
        "one worker, one upstream connection: {of_second:?}"
    );
    assert_ne!(
        of_first, of_second,
        "the two workers share an upstream connection"
    );
    assert_eq!(
        upstream.calls_per_connection().values().sum::<usize>(),
        2 * CALLS
    );
}

#[tokio::test]
async fn without_workers_one_client_connections_calls_take_turns_over_every_upstream_connection() {
    let upstream = support::spawn_scripted(support::pool(), support::Reply::Echo).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (_gateway, listen) =
        support::start_binary(&routes(dir.path(), upstream.addr, 0, "connections = 2")).await;

    let mut client = connect(listen).await;
    for i in 0..CALLS {
        echo(&mut client, &format!("only-{i}")).await;
    }

    let per_connection = upstream.calls_per_connection();
    assert_eq!(
        per_connection.values().copied().collect::<Vec<_>>(),
        [CALLS / 2, CALLS / 2],
        "{per_connection:?}"
    );
}

#[tokio::test]
async fn without_a_connections_setting_each_endpoint_keeps_one_connection_per_worker() {
    let upstream = support::spawn_scripted(support::pool(), support::Reply::Echo).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // Every slot has made its first dial before the gateway says it listens.
    let (_gateway, listen) = support::start_binary(&routes(dir.path(), upstream.addr, 3, "")).await;

    let mut clients = Vec::new();
    for c in 0..3 {
        let mut client = connect(listen).await;
        echo(&mut client, &format!("client{c}-0")).await;
        clients.push(client);
    }
    for (c, client) in clients.iter_mut().enumerate() {
        for i in 1..CALLS {
            echo(client, &format!("client{c}-{i}")).await;
        }
    }

    assert_eq!(
        upstream.accepted.load(std::sync::atomic::Ordering::SeqCst),
        3
    );
    let used: Vec<_> = (0..3)
        .map(|c| connections_of(&upstream, &format!("client{c}-")))
        .collect();
    for (c, connections) in used.iter().enumerate() {
        assert_eq!(connections.len(), 1, "client {c}: {connections:?}");
    }
    let all: BTreeSet<_> = used.into_iter().flatten().collect();
    assert_eq!(all.len(), 3, "three workers, three upstream connections");
}
