//! Test harness: the real gateway on 127.0.0.1:0 in front of real upstreams
//! on real sockets. Helpers only; assertions live in the tests.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use tokio::net::TcpListener;

/// Directory of the repo's protos.
pub const PROTO_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");

/// A running gateway.
pub struct TestGateway {
    pub base: String,
    pub addr: SocketAddr,
    /// The running gateway, to look at its upstreams.
    pub gateway: Arc<protogate::pipeline::Gateway>,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the gateway with `toml` (a routes.toml; `{proto}` is replaced by
/// the repo's proto directory). Panics with the rendered diagnostics if it
/// does not compile.
pub async fn spawn_gateway(toml: &str) -> TestGateway {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, toml.replace("{proto}", PROTO_DIR)).expect("write routes.toml");
    let loaded = protogate::config::load(&path).unwrap_or_else(|(source, errors)| {
        panic!("routes.toml does not parse:\n{}", source.render(&errors))
    });
    let compiled = protogate::snapshot::compile_for_serving(&loaded).unwrap_or_else(|errors| {
        panic!(
            "routes.toml does not compile:\n{}",
            loaded.source.render(&errors)
        )
    });
    serve_snapshot(compiled.start().await, dir).await.0
}

/// Serves `snapshot` on 127.0.0.1:0 as the binary does (edge layers,
/// listener bounds), keeping `dir` alive as long as the gateway.
async fn serve_snapshot(
    snapshot: protogate::snapshot::Snapshot,
    dir: tempfile::TempDir,
) -> (TestGateway, Arc<protogate::pipeline::Gateway>) {
    let settings = snapshot.settings.clone();
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind gateway");
    let addr = listener.local_addr().expect("addr");
    let gateway = protogate::pipeline::Gateway::new(snapshot);
    let router = protogate::pipeline::service(gateway.clone());
    let task = tokio::spawn(async move {
        let _ = protogate::server::serve(
            listener,
            router,
            &settings.listener,
            &settings.limits,
            std::future::pending(),
        )
        .await;
    });
    let handle = TestGateway {
        base: format!("http://{addr}"),
        addr,
        gateway: gateway.clone(),
        _dir: dir,
        task,
    };
    (handle, gateway)
}

/// A routes.toml with one upstream, `name` on `upstream` (plus the
/// `upstream_extra` lines of its table), and one `[[routes]]` entry serving
/// `service` from `proto_file`, public, with `route_extra` appended.
pub fn one_route_toml(
    proto_file: &str,
    service: &str,
    name: &str,
    upstream: SocketAddr,
    upstream_extra: &str,
    route_extra: &str,
) -> String {
    format!(
        r#"
[server]
access_log = false

[proto]
files = ["{proto_file}"]
include = ["{{proto}}"]

[upstreams.{name}]
endpoints = ["http://{upstream}"]
{upstream_extra}

[[routes]]
service = "{service}"
upstream = "{name}"
auth = "none"
{route_extra}
"#
    )
}

/// A routes.toml for the Bookstore on `upstream`, with `extra` appended.
pub fn bookstore_toml(upstream: SocketAddr, extra: &str) -> String {
    one_route_toml(
        "bookstore/v1/bookstore.proto",
        "bookstore.v1.Bookstore",
        "bookstore",
        upstream,
        "connections = 2",
        extra,
    )
}

/// A routes.toml for testing.v1.Everything on `upstream`, with `extra` appended.
pub fn everything_toml(upstream: SocketAddr, extra: &str) -> String {
    everything_toml_with(upstream, "", extra)
}

/// [`everything_toml`] with `upstream_extra` lines in the upstream's table.
pub fn everything_toml_with(upstream: SocketAddr, upstream_extra: &str, extra: &str) -> String {
    one_route_toml(
        "testing/v1/everything.proto",
        "testing.v1.EverythingService",
        "echo",
        upstream,
        &format!("connections = 1\ntimeout = \"5s\"\n{upstream_extra}"),
        extra,
    )
}

/// The repo's descriptors (bookstore + everything + builtins).
pub fn pool() -> DescriptorPool {
    protogate::descriptors::load(&protogate::descriptors::DescriptorSource::Protos {
        files: vec![
            "bookstore/v1/bookstore.proto".into(),
            "testing/v1/everything.proto".into(),
        ],
        include: vec![PROTO_DIR.into()],
    })
    .expect("repo protos compile")
}

/// An HTTP client that never pools (each test controls its own connections).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().build().expect("client")
}

// === the demo Bookstore (tonic), with a count of accepted connections ===

/// The demo Bookstore on 127.0.0.1:0; returns its address and accept counter.
pub async fn spawn_bookstore() -> (SocketAddr, Arc<AtomicUsize>) {
    spawn_bookstore_with(None).await
}

/// Same, with the server's HTTP/2 max concurrent streams set.
pub async fn spawn_bookstore_with(max_streams: Option<u32>) -> (SocketAddr, Arc<AtomicUsize>) {
    let (addr, accepted, _) = spawn_counting_bookstore(max_streams).await;
    (addr, accepted)
}

/// Calls the upstream served, per TCP connection (by the gateway's port).
pub type StreamsPerConnection = Arc<Mutex<std::collections::BTreeMap<SocketAddr, usize>>>;

/// The demo Bookstore on 127.0.0.1:0 (with the server's HTTP/2 max
/// concurrent streams set), counting accepted connections and the calls
/// (HTTP/2 streams) each connection carried.
pub async fn spawn_counting_bookstore(
    max_streams: Option<u32>,
) -> (SocketAddr, Arc<AtomicUsize>, StreamsPerConnection) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let incoming = futures_util::stream::unfold(listener, move |listener| {
        let counter = counter.clone();
        async move {
            let result = listener.accept().await.map(|(stream, _)| {
                counter.fetch_add(1, Ordering::SeqCst);
                // No Nagle delay: on tokio's paused clock it is an idle
                // moment that the clock jumps over.
                let _ = stream.set_nodelay(true);
                stream
            });
            Some((result, listener))
        }
    });
    let streams = StreamsPerConnection::default();
    let count_streams = stream_counter(streams.clone());
    let service = protogate::cli::demo::pb::bookstore::v1::bookstore_server::BookstoreServer::new(
        protogate::cli::demo::Store::with_sample_data(),
    );
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .max_concurrent_streams(max_streams)
            .layer(count_streams)
            .add_service(service)
            .serve_with_incoming(incoming)
            .await;
    });
    (addr, accepted, streams)
}

/// A tonic server layer that counts each call into `streams`, under the
/// TCP connection it came on.
pub fn stream_counter(
    streams: StreamsPerConnection,
) -> tower::util::MapRequestLayer<
    impl Fn(Request<tonic::body::Body>) -> Request<tonic::body::Body> + Clone,
> {
    tower::util::MapRequestLayer::new(move |request: Request<tonic::body::Body>| {
        let peer = request
            .extensions()
            .get::<tonic::transport::server::TcpConnectInfo>()
            .and_then(|info| info.remote_addr())
            .expect("tonic records the peer of a TCP connection");
        *streams.lock().expect("lock").entry(peer).or_default() += 1;
        request
    })
}

/// A TCP server on 127.0.0.1:0 that speaks no HTTP/2: it answers every
/// connection with an HTTP/1 error page and keeps it open until the peer
/// closes. The instant of every accept is sent on the returned channel.
pub async fn spawn_garbage_upstream() -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<tokio::time::Instant>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind garbage upstream");
    let addr = listener.local_addr().expect("addr");
    let (accepts, accepted) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            if accepts.send(tokio::time::Instant::now()).is_err() {
                return;
            }
            tokio::spawn(async move {
                let _ = stream
                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                    .await;
                let mut sink = [0u8; 1024];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    (addr, accepted)
}

// === a scripted gRPC upstream (hyper HTTP/2), for behaviours a real service
// === cannot be made to show on demand: statuses with details, delays,
// === garbage frames, cancellations ===

/// One call the scripted upstream received.
#[derive(Debug, Clone)]
pub struct Call {
    /// `/package.Service/Method`.
    pub path: String,
    /// Request headers (gRPC metadata).
    pub headers: HeaderMap,
    /// The decoded request message, as proto3 JSON (proto field names, defaults emitted).
    pub message: serde_json::Value,
    /// When the call arrived.
    pub at: tokio::time::Instant,
    /// The gateway's end of the TCP connection the call came on (one port
    /// per pooled connection).
    pub peer: SocketAddr,
}

/// What the scripted upstream answers.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Echo the request message back (input and output types are equal).
    Echo,
    /// A message given as proto3 JSON of the method's output type.
    Json(serde_json::Value),
    /// Raw bytes as the one message (may be garbage).
    RawMessage(Bytes),
    /// A non-OK status, with a google.rpc.Status details payload.
    Status {
        code: i32,
        message: String,
        details: Option<Bytes>,
    },
    /// Wait, then reply.
    Delay(Duration, Box<Reply>),
    /// Tell `arrived` the call is here, wait for a permit of `release`
    /// (the test's go), then reply; a reset before the go counts as
    /// cancelled.
    Hold {
        arrived: Arc<tokio::sync::Notify>,
        release: Arc<tokio::sync::Semaphore>,
        reply: Box<Reply>,
    },
    /// An HTTP status other than 200.
    Http(u16),
    /// A raw body with the given (bad) frame bytes and an OK status.
    Frames(Bytes),
    /// Close the stream without trailers.
    NoTrailers(Bytes),
    /// The request message echoed back, then trailers with grpc-status 2 and
    /// `name` set to `bytes` bytes of `x` (a trailer block over any limit).
    LargeTrailer { name: &'static str, bytes: usize },
    /// `reply`, with extra response headers and trailers (in a trailers-only
    /// answer, the trailers go in the headers). Applied by [`with_metadata`].
    WithMetadata {
        headers: Vec<(&'static str, &'static str)>,
        trailers: Vec<(&'static str, &'static str)>,
        reply: Box<Reply>,
    },
}

/// The scripted upstream's shared state.
pub struct Scripted {
    pub addr: SocketAddr,
    pub calls: Arc<Mutex<Vec<Call>>>,
    pub accepted: Arc<AtomicUsize>,
    /// Calls whose stream was reset/dropped before the reply was sent.
    pub cancelled: Arc<AtomicUsize>,
    /// Connections open now (served ones; closed by either side).
    pub open: Arc<AtomicUsize>,
    reply: Arc<Mutex<Reply>>,
    /// Accepted connections beyond this many are closed at once, without a
    /// byte of HTTP/2 (see [`Scripted::serve_only_first`]).
    serve_limit: Arc<AtomicUsize>,
}

impl Scripted {
    /// Sets what every following call gets.
    pub fn set_reply(&self, reply: Reply) {
        *self.reply.lock().expect("lock") = reply;
    }

    /// The calls so far.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("lock").clone()
    }

    /// Number of calls so far.
    pub fn call_count(&self) -> usize {
        self.calls.lock().expect("lock").len()
    }

    /// Serves HTTP/2 on the first `connections` accepted connections only;
    /// every later one is closed as soon as it is accepted, so a pool slot
    /// that dials it stays down.
    pub fn serve_only_first(&self, connections: usize) {
        self.serve_limit.store(connections, Ordering::SeqCst);
    }

    /// How many calls arrived on each TCP connection (by the gateway's port).
    pub fn calls_per_connection(&self) -> std::collections::BTreeMap<SocketAddr, usize> {
        let mut counts = std::collections::BTreeMap::new();
        for call in self.calls.lock().expect("lock").iter() {
            *counts.entry(call.peer).or_default() += 1;
        }
        counts
    }
}

/// Starts a scripted upstream that decodes requests with `pool`.
pub async fn spawn_scripted(pool: DescriptorPool, reply: Reply) -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind scripted");
    spawn_scripted_on(listener, pool, reply)
}

/// [`spawn_scripted`] on a listener the test bound (e.g. one of several
/// loopback addresses sharing a port, as DNS answers give them).
pub fn spawn_scripted_on(listener: TcpListener, pool: DescriptorPool, reply: Reply) -> Scripted {
    let addr = listener.local_addr().expect("addr");
    let calls = Arc::new(Mutex::new(Vec::new()));
    let accepted = Arc::new(AtomicUsize::new(0));
    let cancelled = Arc::new(AtomicUsize::new(0));
    let reply = Arc::new(Mutex::new(reply));
    let serve_limit = Arc::new(AtomicUsize::new(usize::MAX));
    let open = Arc::new(AtomicUsize::new(0));
    let state = (calls.clone(), cancelled.clone(), reply.clone(), pool);
    let counter = accepted.clone();
    let limit = serve_limit.clone();
    let open_connections = open.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                return;
            };
            if counter.fetch_add(1, Ordering::SeqCst) >= limit.load(Ordering::SeqCst) {
                drop(stream);
                continue;
            }
            // No Nagle delay: on tokio's paused clock it is an idle moment
            // that the clock jumps over.
            let _ = stream.set_nodelay(true);
            let state = state.clone();
            let open = open_connections.clone();
            open.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let state = state.clone();
                    async move {
                        let plan = state.2.lock().expect("lock").clone();
                        let response = handle_scripted(request, peer, state).await;
                        Ok::<_, Infallible>(with_metadata(response, &plan))
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    Scripted {
        addr,
        calls,
        accepted,
        cancelled,
        open,
        reply,
        serve_limit,
    }
}

type ScriptBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn handle_scripted(
    request: Request<Incoming>,
    peer: SocketAddr,
    (calls, cancelled, reply, pool): ScriptState,
) -> Response<ScriptBody> {
    let at = tokio::time::Instant::now();
    let path = request.uri().path().to_string();
    let headers = request.headers().clone();
    let body = request
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let input = method_types(&pool, &path);
    let raw = body
        .get(5..)
        .map(Bytes::copy_from_slice)
        .unwrap_or_default();
    let message = input
        .as_ref()
        .and_then(|(i, _)| DynamicMessage::decode(i.clone(), raw.clone()).ok())
        .map(|m| to_json(&m))
        .unwrap_or(serde_json::Value::Null);
    calls.lock().expect("lock").push(Call {
        path,
        headers,
        message,
        at,
        peer,
    });
    let mut plan = reply.lock().expect("lock").clone();
    loop {
        match plan {
            Reply::Delay(delay, next) => {
                // If the gateway cancels, hyper drops this future: count it.
                let guard = CancelGuard(cancelled.clone(), true);
                tokio::time::sleep(delay).await;
                std::mem::forget(guard);
                plan = *next;
            }
            Reply::WithMetadata { reply, .. } => plan = *reply,
            Reply::Hold {
                arrived,
                release,
                reply,
            } => {
                arrived.notify_one();
                let guard = CancelGuard(cancelled.clone(), true);
                release.acquire().await.expect("open semaphore").forget();
                std::mem::forget(guard);
                plan = *reply;
            }
            Reply::Echo => return ok(frame(&raw)),
            Reply::LargeTrailer { name, bytes } => {
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", HeaderValue::from_static("2"));
                let value = HeaderValue::from_str(&"x".repeat(bytes)).expect("ascii");
                trailers.insert(http::HeaderName::from_static(name), value);
                return with_trailers(frame(&raw), trailers);
            }
            Reply::Json(json) => {
                let (_, output) = input.expect("scripted Json reply needs a known method");
                let msg = DynamicMessage::deserialize(output, json)
                    .expect("scripted JSON matches the output type");
                return ok(frame(&msg.encode_to_vec()));
            }
            Reply::RawMessage(bytes) => return ok(frame(&bytes)),
            Reply::Frames(bytes) => return ok(bytes),
            Reply::Status {
                code,
                message,
                details,
            } => {
                let mut response = Response::new(empty());
                let h = response.headers_mut();
                h.insert("content-type", HeaderValue::from_static("application/grpc"));
                h.insert("grpc-status", HeaderValue::from(code));
                h.insert(
                    "grpc-message",
                    HeaderValue::from_str(&message).expect("ascii message"),
                );
                if let Some(details) = details {
                    use base64::Engine;
                    let encoded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(details);
                    h.insert(
                        "grpc-status-details-bin",
                        HeaderValue::from_str(&encoded).expect("base64"),
                    );
                }
                return response;
            }
            Reply::Http(code) => {
                let mut response = Response::new(full(Bytes::from_static(b"<html>nope</html>")));
                *response.status_mut() = http::StatusCode::from_u16(code).expect("status");
                response
                    .headers_mut()
                    .insert("content-type", HeaderValue::from_static("text/html"));
                return response;
            }
            Reply::NoTrailers(bytes) => {
                let mut response = Response::new(full(bytes));
                response
                    .headers_mut()
                    .insert("content-type", HeaderValue::from_static("application/grpc"));
                return response;
            }
        }
    }
}

struct CancelGuard(Arc<AtomicUsize>, bool);

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if self.1 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn method_types(
    pool: &DescriptorPool,
    path: &str,
) -> Option<(MessageDescriptor, MessageDescriptor)> {
    let (service, method) = path.trim_start_matches('/').split_once('/')?;
    let method = pool
        .get_service_by_name(service)?
        .methods()
        .find(|m| m.name() == method)?;
    Some((method.input(), method.output()))
}

/// proto3 JSON with proto names and defaults, for comparing what the upstream saw.
pub fn to_json(message: &DynamicMessage) -> serde_json::Value {
    let options = prost_reflect::SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(true);
    message
        .serialize_with_options(serde_json::value::Serializer, &options)
        .expect("message serializes")
}

/// Frames one message.
pub fn frame(message: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(message.len() + 5);
    buf.put_u8(0);
    buf.put_u32(message.len() as u32);
    buf.put_slice(message);
    buf.freeze()
}

fn ok(body: Bytes) -> Response<ScriptBody> {
    let trailers = {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from_static("0"));
        t
    };
    with_trailers(body, trailers)
}

/// A gRPC response: `body`, then `trailers`.
fn with_trailers(body: Bytes, trailers: HeaderMap) -> Response<ScriptBody> {
    let frames = futures_util::stream::iter(vec![
        Ok::<_, Infallible>(Frame::data(body)),
        Ok(Frame::trailers(trailers)),
    ]);
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    response
}

fn empty() -> ScriptBody {
    BodyExt::boxed(Full::new(Bytes::new()))
}

fn full(bytes: Bytes) -> ScriptBody {
    BodyExt::boxed(Full::new(bytes))
}

/// An encoded google.rpc.Status with the given Any details `(type name, encoded value)`.
pub fn status_details(
    pool: &DescriptorPool,
    code: i32,
    message: &str,
    details: &[(&str, serde_json::Value)],
) -> Bytes {
    let status = pool
        .get_message_by_name("google.rpc.Status")
        .expect("builtin");
    let any = pool
        .get_message_by_name("google.protobuf.Any")
        .expect("wkt");
    let mut envelope = DynamicMessage::new(status);
    envelope.set_field_by_name("code", prost_reflect::Value::I32(code));
    envelope.set_field_by_name("message", prost_reflect::Value::String(message.into()));
    let mut list = Vec::new();
    for (type_name, json) in details {
        let descriptor = pool
            .get_message_by_name(type_name)
            .expect("detail type is known");
        let detail =
            DynamicMessage::deserialize(descriptor, json.clone()).expect("detail JSON matches");
        let mut a = DynamicMessage::new(any.clone());
        a.set_field_by_name(
            "type_url",
            prost_reflect::Value::String(format!("type.googleapis.com/{type_name}")),
        );
        a.set_field_by_name(
            "value",
            prost_reflect::Value::Bytes(detail.encode_to_vec().into()),
        );
        list.push(prost_reflect::Value::Message(a));
    }
    envelope.set_field_by_name("details", prost_reflect::Value::List(list));
    envelope.encode_to_vec().into()
}

/// Drains a body's remaining bytes (used by raw-socket tests).
pub fn remaining(buf: &mut impl Buf) -> Vec<u8> {
    buf.copy_to_bytes(buf.remaining()).to_vec()
}

/// Adds a [`Reply::WithMetadata`] plan's extra headers and trailers to the
/// scripted upstream's response; any other plan leaves it as it is.
fn with_metadata(mut response: Response<ScriptBody>, plan: &Reply) -> Response<ScriptBody> {
    let Reply::WithMetadata {
        headers, trailers, ..
    } = plan
    else {
        return response;
    };
    let to_map = |pairs: &[(&'static str, &'static str)]| {
        let mut map = HeaderMap::new();
        for &(name, value) in pairs {
            map.append(name, HeaderValue::from_static(value));
        }
        map
    };
    let (extra_headers, extra_trailers) = (to_map(headers), to_map(trailers));
    let trailers_only = response.headers().contains_key("grpc-status");
    response.headers_mut().extend(extra_headers);
    if trailers_only {
        response.headers_mut().extend(extra_trailers);
        return response;
    }
    response.map(move |body| {
        BodyExt::boxed(body.map_frame(move |frame| match frame.into_trailers() {
            Ok(mut trailers) => {
                trailers.extend(extra_trailers.clone());
                Frame::trailers(trailers)
            }
            Err(frame) => frame,
        }))
    })
}

/// What every scripted call shares: the call log, the cancellation count,
/// the reply plan and the descriptors (a named type, for clippy).
type ScriptState = (
    Arc<Mutex<Vec<Call>>>,
    Arc<AtomicUsize>,
    Arc<Mutex<Reply>>,
    DescriptorPool,
);

// === authentication: keys, tokens, a JWKS server and reloads, all made at
// === run time (nothing that can expire is checked in) ===

/// Base64url without padding, as JOSE writes it.
pub fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// PEM armour around DER bytes.
pub fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in text.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A signing key generated for one test, with everything a verifier needs.
pub struct TestKey {
    /// The algorithm tokens are signed with.
    pub alg: jsonwebtoken::Algorithm,
    /// The `kid` put in token headers and in the JWK.
    pub kid: Option<String>,
    /// The signing key.
    pub encoding: jsonwebtoken::EncodingKey,
    /// The public JWK (with `kid` and `alg`), for a JWKS.
    pub jwk: serde_json::Value,
    /// The public key as SPKI PEM; for HMAC, the secret itself.
    pub verifier: String,
}

impl TestKey {
    /// A random HS256 secret (64 hex characters).
    pub fn hmac(alg: jsonwebtoken::Algorithm) -> TestKey {
        let bytes: [u8; 32] = rand::random();
        let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        TestKey {
            alg,
            kid: None,
            encoding: jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
            jwk: serde_json::json!({"kty": "oct", "k": b64url(secret.as_bytes())}),
            verifier: secret,
        }
    }

    /// A fresh RSA-2048 key for RS* or PS* tokens.
    pub fn rsa(alg: jsonwebtoken::Algorithm, kid: &str) -> TestKey {
        use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
        use aws_lc_rs::signature::KeyPair;
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .expect("RSA key generation");
        let pkcs8: Pkcs8V1Der<'_> = pair.as_der().expect("PKCS#8");
        let encoding =
            jsonwebtoken::EncodingKey::from_rsa_pem(pem("PRIVATE KEY", pkcs8.as_ref()).as_bytes())
                .expect("RSA PEM");
        let public = pair.public_key();
        let spki: PublicKeyX509Der<'_> = public.as_der().expect("SPKI");
        let jwk = serde_json::json!({
            "kty": "RSA",
            "kid": kid,
            "alg": format!("{alg:?}"),
            "use": "sig",
            "n": b64url(public.modulus().big_endian_without_leading_zero()),
            "e": b64url(public.exponent().big_endian_without_leading_zero()),
        });
        TestKey {
            alg,
            kid: Some(kid.to_string()),
            encoding,
            jwk,
            verifier: pem("PUBLIC KEY", spki.as_ref()),
        }
    }

    /// A fresh P-256 key for ES256 tokens.
    pub fn ec(kid: &str) -> TestKey {
        use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("P-256 key generation");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
            .expect("P-256 PKCS#8");
        let point = pair.public_key().as_ref();
        assert_eq!(point.len(), 65, "uncompressed point");
        let spki: PublicKeyX509Der<'_> = pair.public_key().as_der().expect("SPKI");
        TestKey {
            alg: jsonwebtoken::Algorithm::ES256,
            kid: Some(kid.to_string()),
            encoding: jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk: serde_json::json!({
                "kty": "EC",
                "kid": kid,
                "alg": "ES256",
                "crv": "P-256",
                "x": b64url(&point[1..33]),
                "y": b64url(&point[33..65]),
            }),
            verifier: pem("PUBLIC KEY", spki.as_ref()),
        }
    }

    /// A fresh Ed25519 key for EdDSA tokens.
    pub fn ed(kid: &str) -> TestKey {
        use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("Ed25519 key generation");
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("Ed25519 PKCS#8");
        let x = pair.public_key().as_ref();
        // SPKI for Ed25519 is a fixed 12-byte prefix and the 32-byte key.
        let mut spki = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        spki.extend_from_slice(x);
        TestKey {
            alg: jsonwebtoken::Algorithm::EdDSA,
            kid: Some(kid.to_string()),
            encoding: jsonwebtoken::EncodingKey::from_ed_der(pkcs8.as_ref()),
            jwk: serde_json::json!({
                "kty": "OKP",
                "kid": kid,
                "alg": "EdDSA",
                "crv": "Ed25519",
                "x": b64url(x),
            }),
            verifier: pem("PUBLIC KEY", &spki),
        }
    }

    /// A header for this key: its algorithm and `kid`.
    pub fn header(&self) -> jsonwebtoken::Header {
        let mut header = jsonwebtoken::Header::new(self.alg);
        header.kid = self.kid.clone();
        header
    }

    /// Signs `claims` with this key's own header.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        self.sign_with(&self.header(), claims)
    }

    /// Signs `claims` under any header (e.g. one naming another `kid`).
    pub fn sign_with(&self, header: &jsonwebtoken::Header, claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(header, claims, &self.encoding).expect("sign")
    }
}

/// A JWKS document holding these keys' public JWKs.
pub fn jwks_of(keys: &[&TestKey]) -> String {
    serde_json::json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

/// A compact JWS from the exact header and payload texts and signature bytes.
pub fn raw_token(header: &str, payload: &str, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64url(header.as_bytes()),
        b64url(payload.as_bytes()),
        b64url(signature)
    )
}

/// An HS256 token over the exact header and payload texts (which the
/// `jsonwebtoken` encoder could not produce, e.g. duplicate keys).
pub fn hs256_raw(secret: &[u8], header: &str, payload: &str) -> String {
    let signing_input = format!(
        "{}.{}",
        b64url(header.as_bytes()),
        b64url(payload.as_bytes())
    );
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let tag = aws_lc_rs::hmac::sign(&key, signing_input.as_bytes());
    format!("{signing_input}.{}", b64url(tag.as_ref()))
}

/// What the test JWKS server does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwksMode {
    /// Serve the current document at once.
    Up,
    /// Answer 503.
    Down,
    /// Wait this long, then serve the current document.
    Delay(Duration),
}

struct JwksState {
    body: String,
    mode: JwksMode,
    cache_control: Option<String>,
}

/// A JWKS issuer on 127.0.0.1:0 whose document, behaviour and cache headers
/// the test changes mid-run, counting every request it receives.
pub struct JwksServer {
    /// `http://127.0.0.1:PORT/<random>/jwks.json`.
    pub url: String,
    state: Arc<Mutex<JwksState>>,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl JwksServer {
    /// Starts serving `body` (a JWKS document).
    pub async fn start(body: String) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind jwks");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(JwksState {
            body,
            mode: JwksMode::Up,
            cache_control: None,
        }));
        let requests = Arc::new(AtomicUsize::new(0));
        let shared = (state.clone(), requests.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_: Request<Incoming>| {
                        let (state, requests) = shared.clone();
                        async move {
                            requests.fetch_add(1, Ordering::SeqCst);
                            let mode = state.lock().expect("lock").mode;
                            if let JwksMode::Delay(delay) = mode {
                                tokio::time::sleep(delay).await;
                            }
                            let (body, cache_control) = {
                                let s = state.lock().expect("lock");
                                (s.body.clone(), s.cache_control.clone())
                            };
                            let mut response = Response::new(Full::new(Bytes::from(body)));
                            if mode == JwksMode::Down {
                                *response.body_mut() = Full::new(Bytes::from_static(b"down"));
                                *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                                return Ok::<_, Infallible>(response);
                            }
                            let headers = response.headers_mut();
                            headers.insert(
                                "content-type",
                                HeaderValue::from_static("application/json"),
                            );
                            if let Some(value) = cache_control {
                                headers.insert(
                                    "cache-control",
                                    HeaderValue::from_str(&value).expect("ascii"),
                                );
                            }
                            Ok(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        // A path of its own: the gateway remembers keys per URL for reloads,
        // and a later test may get this port again.
        let unique: u64 = rand::random();
        JwksServer {
            url: format!("http://{addr}/{unique:016x}/jwks.json"),
            state,
            requests,
            task,
        }
    }

    /// Serves `body` from now on (key rotation).
    pub fn set_body(&self, body: String) {
        self.state.lock().expect("lock").body = body;
    }

    /// Changes how requests are answered from now on.
    pub fn set_mode(&self, mode: JwksMode) {
        self.state.lock().expect("lock").mode = mode;
    }

    /// Sends this `Cache-Control` with every document from now on.
    pub fn set_cache_control(&self, value: Option<&str>) {
        self.state.lock().expect("lock").cache_control = value.map(str::to_string);
    }

    /// Requests received so far (counted on arrival, answered or not).
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// A routes.toml for testing.v1.EverythingService on `upstream` where
/// `POST /v1/echo` (Echo) carries the method keys `echo_auth` (e.g.
/// `auth = "a"`), every other method is public (`GET /v1/echo` among them),
/// and `extra` (the `[auth]` tables) is appended.
pub fn auth_toml(upstream: SocketAddr, echo_auth: &str, extra: &str) -> String {
    everything_toml(
        upstream,
        &format!("\n[routes.methods.Echo]\n{echo_auth}\n{extra}"),
    )
}

/// Starts the gateway from a routes.toml on disk and returns the handle
/// that reloads swap snapshots into.
pub async fn spawn_gateway_from(
    path: &std::path::Path,
) -> (TestGateway, Arc<protogate::pipeline::Gateway>) {
    let snapshot = compile_snapshot(path).await;
    serve_snapshot(snapshot, tempfile::tempdir().expect("tempdir")).await
}

/// Loads and compiles the routes.toml at `path` for serving, as a reload does.
pub async fn compile_snapshot(path: &std::path::Path) -> protogate::snapshot::Snapshot {
    let loaded = protogate::config::load(path).unwrap_or_else(|(source, errors)| {
        panic!("routes.toml does not parse:\n{}", source.render(&errors))
    });
    let compiled = protogate::snapshot::compile_for_serving(&loaded).unwrap_or_else(|errors| {
        panic!(
            "routes.toml does not compile:\n{}",
            loaded.source.render(&errors)
        )
    });
    compiled.start().await
}

/// An auth refusal as the client saw it.
#[derive(Debug)]
pub struct Refusal {
    /// HTTP status.
    pub status: u16,
    /// The `Bearer` challenge's auth-params, if one was sent.
    pub challenge: Option<std::collections::BTreeMap<String, String>>,
    /// Every `WWW-Authenticate` field, as sent.
    pub challenges: Vec<String>,
    /// The google.rpc.Status body.
    pub body: serde_json::Value,
}

/// Reads an error answer: checks it is JSON shaped like google.rpc.Status
/// with the gateway's ErrorInfo, and parses any `WWW-Authenticate`.
pub async fn refusal(response: reqwest::Response) -> Refusal {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    assert_eq!(
        headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/json"[..]),
        "{status}: {text}"
    );
    let body: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {text}"));
    assert!(body["code"].is_i64(), "{text}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{text}"
    );
    let detail = &body["details"][0];
    assert_eq!(
        detail["@type"], "type.googleapis.com/google.rpc.ErrorInfo",
        "{text}"
    );
    assert_eq!(detail["domain"], "protogate", "{text}");
    let challenges: Vec<String> = headers
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().expect("challenge is visible ASCII").to_string())
        .collect();
    let bearer: Vec<&String> = challenges
        .iter()
        .filter(|c| c.starts_with("Bearer"))
        .collect();
    assert!(
        bearer.len() <= 1,
        "one Bearer challenge at most: {challenges:?}"
    );
    let challenge = bearer.first().map(|value| parse_bearer_challenge(value));
    Refusal {
        status,
        challenge,
        challenges,
        body,
    }
}

/// Parses `Bearer k="v", k="v", ...` strictly by RFC 6750 §3: the scheme,
/// then auth-params whose values are quoted strings holding only
/// %x20-21 / %x23-5B / %x5D-7E (no quote, no backslash).
pub fn parse_bearer_challenge(value: &str) -> std::collections::BTreeMap<String, String> {
    let rest = value
        .strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("not a Bearer challenge: {value}"));
    let mut params = std::collections::BTreeMap::new();
    let mut rest = rest.trim_start();
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("auth-param without a quoted value in {value}"));
        assert!(
            !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "bad auth-param name {key:?} in {value}"
        );
        let end = after
            .find('"')
            .unwrap_or_else(|| panic!("unterminated quoted string in {value}"));
        let text = &after[..end];
        assert!(
            text.bytes()
                .all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\'),
            "RFC 6750 forbids these characters: {text:?}"
        );
        assert!(
            params.insert(key.to_string(), text.to_string()).is_none(),
            "auth-param {key} twice in {value}"
        );
        rest = after[end + 1..].trim_start();
        if let Some(next) = rest.strip_prefix(',') {
            rest = next.trim_start();
            assert!(!rest.is_empty(), "trailing comma in {value}");
        } else {
            assert!(
                rest.is_empty(),
                "auth-params must be comma-separated: {value}"
            );
        }
    }
    params
}

/// Checks a 401: an `invalid_token` challenge with a description, code
/// UNAUTHENTICATED and the given ErrorInfo reason. Returns the description.
pub async fn assert_unauthorized(response: reqwest::Response, reason: &str) -> String {
    let refused = refusal(response).await;
    assert_eq!(refused.status, 401, "{:?}", refused.body);
    assert_eq!(refused.body["code"], 16, "{:?}", refused.body);
    assert_eq!(refused.body["details"][0]["reason"], reason);
    let challenge = refused
        .challenge
        .unwrap_or_else(|| panic!("401 without WWW-Authenticate: {:?}", refused.body));
    if reason == "CREDENTIALS_MISSING" {
        // RFC 6750 §3.1: no credentials, no error code; the body says why.
        assert_eq!(challenge.get("error"), None, "{challenge:?}");
        return refused.body["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
    }
    assert_eq!(
        challenge.get("error").map(String::as_str),
        Some("invalid_token")
    );
    let description = challenge
        .get("error_description")
        .cloned()
        .unwrap_or_default();
    assert!(!description.is_empty(), "{challenge:?}");
    description
}

/// Checks a 403: an `insufficient_scope` challenge, code PERMISSION_DENIED.
/// Returns the challenge's params.
pub async fn assert_forbidden(
    response: reqwest::Response,
) -> std::collections::BTreeMap<String, String> {
    let refused = refusal(response).await;
    assert_eq!(refused.status, 403, "{:?}", refused.body);
    assert_eq!(refused.body["code"], 7, "{:?}", refused.body);
    assert_eq!(refused.body["details"][0]["reason"], "PERMISSION_DENIED");
    let challenge = refused
        .challenge
        .unwrap_or_else(|| panic!("403 without WWW-Authenticate: {:?}", refused.body));
    assert_eq!(
        challenge.get("error").map(String::as_str),
        Some("insufficient_scope")
    );
    assert!(challenge.contains_key("error_description"), "{challenge:?}");
    challenge
}

/// Checks a 503 for keys that are not loaded: code UNAVAILABLE, reason
/// AUTH_KEYS_UNAVAILABLE, and no challenge (the credential is not at fault).
pub async fn assert_keys_unavailable(response: reqwest::Response) {
    let refused = refusal(response).await;
    assert_eq!(refused.status, 503, "{:?}", refused.body);
    assert_eq!(refused.body["code"], 14, "{:?}", refused.body);
    assert_eq!(
        refused.body["details"][0]["reason"],
        "AUTH_KEYS_UNAVAILABLE"
    );
    assert!(refused.challenge.is_none(), "{:?}", refused.challenge);
}

/// An external program a test drives (varnishd, chromium): the first of
/// `candidates` or of `$PATH` that exists. Missing is a failure with the
/// Debian package to install (as .ci/run does), never a silent pass.
pub fn installed_program(name: &str, candidates: &[&str], package: &str) -> std::path::PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    candidates
        .iter()
        .map(std::path::PathBuf::from)
        .chain(on_path)
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not installed, so these tests cannot run: \
                 install Debian's `{package}` package (apt-get install -y {package}), as .ci/run does"
            )
        })
}

/// An HS256 provider `t` whose secret is written under `dir`: the
/// `[auth.providers.t]` table, and a minter of 5-minute tokens for a `sub`.
pub fn hmac_provider(dir: &std::path::Path) -> (String, impl Fn(&str) -> String) {
    let secret: String = (0..64).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let path = dir.join("t.secret");
    std::fs::write(&path, &secret).expect("write secret");
    let table = format!(
        "\n[auth.providers.t]\nissuer = \"i\"\nalgorithms = [\"HS256\"]\nsecret_file = \"{}\"\n",
        path.display()
    );
    let mint = move |sub: &str| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs();
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &serde_json::json!({"iss": "i", "sub": sub, "iat": now, "exp": now + 300}),
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("sign")
    };
    (table, mint)
}

/// [`everything_toml_with`] on several endpoints (one `echo` upstream).
pub fn everything_toml_on(endpoints: &[SocketAddr], upstream_extra: &str, extra: &str) -> String {
    let list: Vec<String> = endpoints
        .iter()
        .map(|a| format!("\"http://{a}\""))
        .collect();
    everything_toml_with(endpoints[0], upstream_extra, extra).replace(
        &format!("endpoints = [\"http://{}\"]", endpoints[0]),
        &format!("endpoints = [{}]", list.join(", ")),
    )
}

/// The gateway's view of its upstream `name`'s endpoints: address → calls
/// handed a connection there.
pub fn endpoint_calls(
    gateway: &TestGateway,
    name: &str,
) -> std::collections::BTreeMap<String, u64> {
    let snapshot = gateway.gateway.snapshot();
    let upstream = snapshot
        .upstreams
        .iter()
        .find(|u| u.name == name)
        .expect("upstream");
    upstream
        .pool
        .endpoints()
        .iter()
        .map(|e| (e.authority().to_string(), e.calls()))
        .collect()
}

/// A discovery set as authority texts.
pub fn endpoint_texts(set: &Option<protogate::upstream::discovery::Endpoints>) -> Vec<String> {
    set.iter()
        .flat_map(|s| s.iter())
        .map(|a| a.to_string())
        .collect()
}

/// Waits (at most `patience`) until a discovery receiver holds `expected`.
pub async fn wait_for_endpoints(
    rx: &mut tokio::sync::watch::Receiver<Option<protogate::upstream::discovery::Endpoints>>,
    expected: &[&str],
    patience: Duration,
) {
    let reached =
        tokio::time::timeout(patience, rx.wait_for(|set| endpoint_texts(set) == expected))
            .await
            .is_ok_and(|waited| waited.is_ok());
    assert!(
        reached,
        "wanted {expected:?}, holding {:?}",
        endpoint_texts(&rx.borrow())
    );
}

/// The demo gateway and a token for its writes.
pub struct Demo {
    pub base: String,
    pub token: String,
    pub gateway: TestGateway,
    _dir: tempfile::TempDir,
}

/// The repository's routes.toml, written to a temporary directory with its
/// Bookstore endpoint at `bookstore` and its paths made absolute.
pub fn demo_routes(bookstore: SocketAddr) -> (tempfile::TempDir, std::path::PathBuf) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = std::fs::read_to_string(repo.join("routes.toml")).expect("routes.toml");
    let routes = shipped
        .replace(
            "\"http://127.0.0.1:50051\"",
            &format!("\"http://{bookstore}\""),
        )
        .replace(
            "include = [\"proto\"]",
            &format!("include = [\"{PROTO_DIR}\"]"),
        )
        .replace(
            "secret_file = \"examples/demo-jwt.secret\"",
            &format!(
                "secret_file = \"{}\"",
                repo.join("examples/demo-jwt.secret").display()
            ),
        );
    assert!(
        routes.contains(&bookstore.to_string()),
        "the demo's endpoint moved"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, &routes).expect("write routes.toml");
    (dir, path)
}

/// The repository's routes.toml, pointed at a demo Bookstore on 127.0.0.1:0,
/// with a token for its writes.
pub async fn demo() -> Demo {
    let (bookstore, _) = spawn_bookstore().await;
    let (dir, path) = demo_routes(bookstore);
    let loaded = protogate::config::load(&path).expect("parses");
    let token = protogate::auth::mint::token(
        &loaded,
        "demo",
        "demo-user",
        &["bookstore.write".to_string()],
        Duration::from_secs(600),
    )
    .expect("mints");
    let (gateway, _) = spawn_gateway_from(&path).await;
    Demo {
        base: gateway.base.clone(),
        token,
        gateway,
        _dir: dir,
    }
}

// === the gateway binary ===

/// The gateway binary, killed when dropped.
pub struct GatewayBinary(pub std::process::Child);

impl Drop for GatewayBinary {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the gateway binary on `config`, listening on 127.0.0.1:0 with
/// JSON logs, and returns it with the address it says it listens on.
pub async fn start_binary(config: &Path) -> (GatewayBinary, SocketAddr) {
    use tokio::io::AsyncBufReadExt as _;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_protogate"))
        .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"])
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start protogate");
    let stderr = tokio::process::ChildStderr::from_std(child.stderr.take().expect("stderr"))
        .expect("async stderr");
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let find = async {
        while let Ok(Some(line)) = lines.next_line().await {
            let parsed: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if parsed["fields"]["message"] == "protogate listening" {
                return parsed["fields"]["listen"]
                    .as_str()
                    .and_then(|a| a.parse().ok());
            }
        }
        None
    };
    let listen = tokio::time::timeout(Duration::from_secs(60), find)
        .await
        .ok()
        .flatten()
        .expect("the gateway says where it listens");
    // Keep draining its log so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (GatewayBinary(child), listen)
}
