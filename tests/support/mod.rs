//! Test harness: the real gateway on 127.0.0.1:0 in front of real upstreams
//! on real sockets. Helpers only; assertions live in the tests.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::net::SocketAddr;
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
    let settings = Arc::new(compiled.settings.clone());
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind gateway");
    let addr = listener.local_addr().expect("addr");
    let gateway = protogate::pipeline::Gateway::new(compiled.start().await);
    let router = protogate::edge::router(gateway);
    let task = tokio::spawn(async move {
        let _ = protogate::server::serve(listener, router, settings, std::future::pending()).await;
    });
    TestGateway {
        base: format!("http://{addr}"),
        addr,
        _dir: dir,
        task,
    }
}

/// A routes.toml for the Bookstore on `upstream`, with `extra` appended.
pub fn bookstore_toml(upstream: SocketAddr, extra: &str) -> String {
    format!(
        r#"
[server]
access_log = false

[proto]
files = ["bookstore/v1/bookstore.proto"]
include = ["{{proto}}"]

[upstreams.bookstore]
endpoints = ["http://{upstream}"]
connections = 2

[[routes]]
service = "bookstore.v1.Bookstore"
upstream = "bookstore"
auth = "none"
{extra}
"#
    )
}

/// A routes.toml for testing.v1.Everything on `upstream`, with `extra` appended.
pub fn everything_toml(upstream: SocketAddr, extra: &str) -> String {
    format!(
        r#"
[server]
access_log = false

[proto]
files = ["testing/v1/everything.proto"]
include = ["{{proto}}"]

[upstreams.echo]
endpoints = ["http://{upstream}"]
connections = 1
timeout = "5s"

[[routes]]
service = "testing.v1.EverythingService"
upstream = "echo"
auth = "none"
{extra}
"#
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
                stream
            });
            Some((result, listener))
        }
    });
    let service = protogate::demo::pb::bookstore::v1::bookstore_server::BookstoreServer::new(
        protogate::demo::Store::with_sample_data(),
    );
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .max_concurrent_streams(max_streams)
            .add_service(service)
            .serve_with_incoming(incoming)
            .await;
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
    /// An HTTP status other than 200.
    Http(u16),
    /// A raw body with the given (bad) frame bytes and an OK status.
    Frames(Bytes),
    /// Close the stream without trailers.
    NoTrailers(Bytes),
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
    reply: Arc<Mutex<Reply>>,
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
}

/// Starts a scripted upstream that decodes requests with `pool`.
pub async fn spawn_scripted(pool: DescriptorPool, reply: Reply) -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind scripted");
    let addr = listener.local_addr().expect("addr");
    let calls = Arc::new(Mutex::new(Vec::new()));
    let accepted = Arc::new(AtomicUsize::new(0));
    let cancelled = Arc::new(AtomicUsize::new(0));
    let reply = Arc::new(Mutex::new(reply));
    let state = (calls.clone(), cancelled.clone(), reply.clone(), pool);
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            let state = state.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let state = state.clone();
                    async move {
                        let plan = state.2.lock().expect("lock").clone();
                        let response = handle_scripted(request, state).await;
                        Ok::<_, Infallible>(with_metadata(response, &plan))
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Scripted {
        addr,
        calls,
        accepted,
        cancelled,
        reply,
    }
}

type ScriptBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn handle_scripted(
    request: Request<Incoming>,
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
            Reply::Echo => return ok(frame(&raw)),
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
