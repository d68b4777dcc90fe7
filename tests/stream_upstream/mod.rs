//! The streaming tests' upstream: a tonic server of testing.v1.Streaming
//! on 127.0.0.1:0 that streams on a timer as each request asks, and tells
//! the test what it sent, what it received and when a stream was cancelled.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::Stream;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, Notify, mpsc};
use tokio::time::Instant;
use tonic::{Request, Response, Status, Streaming as Incoming};

/// The generated code, laid out as its `super::super::google` paths expect.
pub mod pb {
    pub mod google {
        pub mod api {
            tonic::include_proto!("google.api");
        }
    }
    pub mod testing {
        pub mod v1 {
            tonic::include_proto!("testing.v1");
        }
    }
}

pub use pb::google::api::HttpBody;
pub use pb::testing::v1 as proto;
use proto::streaming_server::{Streaming, StreamingServer};
use proto::{DownloadRequest, Number, Tick, TicksRequest, Total, UploadSummary};

type Messages<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// A running upstream and what it observed.
pub struct StreamUpstream {
    pub addr: SocketAddr,
    pub state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StreamUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the upstream observed, shared with the test.
#[derive(Default)]
pub struct State {
    /// Releases a held Ticks stream.
    pub hold: Notify,
    /// Ticks handed to tonic (a send completes only when tonic takes it).
    pub sent: AtomicU64,
    /// Streams (Ticks, Double) that ended because the caller went away.
    cancelled: Mutex<Option<mpsc::UnboundedReceiver<Instant>>>,
    cancelled_tx: std::sync::Mutex<Option<mpsc::UnboundedSender<Instant>>>,
    /// Client-stream messages received so far.
    pub received: AtomicU64,
    /// Signalled on each client-stream message received.
    pub arrived: Notify,
    /// The labels of the numbers Sum received.
    pub labels: std::sync::Mutex<Vec<String>>,
    /// Calls made, any method.
    pub calls: AtomicU64,
}

impl State {
    /// When the next cancelled stream noticed its caller was gone.
    pub async fn next_cancellation(&self) -> Instant {
        let mut guard = self.cancelled.lock().await;
        guard
            .as_mut()
            .expect("receiver")
            .recv()
            .await
            .expect("a cancellation")
    }

    fn cancelled(&self) {
        if let Some(tx) = self.cancelled_tx.lock().expect("lock").as_ref() {
            let _ = tx.send(Instant::now());
        }
    }

    /// Waits until `n` client-stream messages have arrived.
    pub async fn until_received(&self, n: u64) {
        loop {
            let arrived = self.arrived.notified();
            if self.received.load(Ordering::SeqCst) >= n {
                return;
            }
            arrived.await;
        }
    }
}

/// Starts the upstream.
pub async fn spawn_stream_upstream() -> StreamUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    let state = Arc::new(State {
        cancelled: Mutex::new(Some(rx)),
        cancelled_tx: std::sync::Mutex::new(Some(tx)),
        ..State::default()
    });
    let service = Service {
        state: state.clone(),
    };
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(StreamingServer::new(service))
            .serve_with_incoming(incoming)
            .await;
    });
    StreamUpstream { addr, state, task }
}

struct Service {
    state: Arc<State>,
}

fn stream_of<T: Send + 'static>(rx: mpsc::Receiver<Result<T, Status>>) -> Messages<T> {
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

#[tonic::async_trait]
impl Streaming for Service {
    type TicksStream = Messages<Tick>;
    type DoubleStream = Messages<Number>;
    type DownloadStream = Messages<HttpBody>;

    async fn ticks(
        &self,
        request: Request<TicksRequest>,
    ) -> Result<Response<Self::TicksStream>, Status> {
        self.state.calls.fetch_add(1, Ordering::SeqCst);
        let r = request.into_inner();
        if r.count < 0 {
            return Err(Status::invalid_argument("count must not be negative"));
        }
        let (tx, rx) = mpsc::channel(1);
        let state = self.state.clone();
        tokio::spawn(async move {
            for seq in 1..=i64::from(r.count) {
                if r.hold && seq == i64::from(r.hold_after) + 1 {
                    tokio::select! {
                        () = state.hold.notified() => {}
                        () = tx.closed() => return state.cancelled(),
                    }
                }
                if seq > 1 && r.interval_ms > 0 {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(r.interval_ms as u64)) => {}
                        () = tx.closed() => return state.cancelled(),
                    }
                }
                let kind = if seq % 2 == 0 { 1 } else { 2 };
                let tick = Tick {
                    seq,
                    kind,
                    payload: "x".repeat(r.payload_bytes.max(0) as usize),
                };
                tokio::select! {
                    sent = tx.send(Ok(tick)) => if sent.is_err() { return state.cancelled() },
                    () = tx.closed() => return state.cancelled(),
                }
                state.sent.fetch_add(1, Ordering::SeqCst);
            }
            if r.fail_code != 0 {
                let status = Status::new(tonic::Code::from_i32(r.fail_code), r.fail_message);
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(stream_of(rx)))
    }

    async fn sum(&self, request: Request<Incoming<Number>>) -> Result<Response<Total>, Status> {
        self.state.calls.fetch_add(1, Ordering::SeqCst);
        let mut numbers = request.into_inner();
        let mut total = Total::default();
        while let Some(number) = numbers.message().await? {
            total.sum += number.value;
            total.count += 1;
            total.label = number.label.clone();
            self.state.labels.lock().expect("lock").push(number.label);
            self.state.received.fetch_add(1, Ordering::SeqCst);
            self.state.arrived.notify_waiters();
        }
        Ok(Response::new(total))
    }

    async fn double(
        &self,
        request: Request<Incoming<Number>>,
    ) -> Result<Response<Self::DoubleStream>, Status> {
        self.state.calls.fetch_add(1, Ordering::SeqCst);
        let mut numbers = request.into_inner();
        let (tx, rx) = mpsc::channel(1);
        let state = self.state.clone();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    next = numbers.message() => next,
                    () = tx.closed() => return state.cancelled(),
                };
                match next {
                    Ok(Some(number)) => {
                        state.received.fetch_add(1, Ordering::SeqCst);
                        state.arrived.notify_waiters();
                        if number.value < 0 {
                            let _ = tx
                                .send(Err(Status::out_of_range(
                                    "negative numbers are not doubled",
                                )))
                                .await;
                            return;
                        }
                        let doubled = Number {
                            value: number.value * 2,
                            label: number.label,
                        };
                        if tx.send(Ok(doubled)).await.is_err() {
                            return state.cancelled();
                        }
                    }
                    Ok(None) => return,
                    Err(_) => return state.cancelled(),
                }
            }
        });
        Ok(Response::new(stream_of(rx)))
    }

    async fn download(
        &self,
        request: Request<DownloadRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        self.state.calls.fetch_add(1, Ordering::SeqCst);
        let r = request.into_inner();
        let chunk = r.chunk.max(1) as usize;
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            let mut left = r.size.max(0) as usize;
            let mut offset = 0usize;
            while left > 0 {
                let n = left.min(chunk);
                let data: Vec<u8> = (offset..offset + n).map(|i| (i % 251) as u8).collect();
                let body = HttpBody {
                    content_type: "application/x-test-bytes".into(),
                    data,
                    extensions: vec![],
                };
                if tx.send(Ok(body)).await.is_err() {
                    return;
                }
                left -= n;
                offset += n;
            }
        });
        Ok(Response::new(stream_of(rx)))
    }

    async fn upload(
        &self,
        request: Request<Incoming<HttpBody>>,
    ) -> Result<Response<UploadSummary>, Status> {
        self.state.calls.fetch_add(1, Ordering::SeqCst);
        let mut bodies = request.into_inner();
        let mut summary = UploadSummary {
            checksum: FNV_OFFSET,
            ..UploadSummary::default()
        };
        while let Some(body) = bodies.message().await? {
            if summary.messages == 0 {
                summary.content_type = body.content_type.clone();
            }
            summary.messages += 1;
            summary.bytes += body.data.len() as i64;
            summary.checksum = fnv1a(summary.checksum, &body.data);
            self.state.received.fetch_add(1, Ordering::SeqCst);
            self.state.arrived.notify_waiters();
        }
        Ok(Response::new(summary))
    }
}

pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a over `bytes`, continuing from `hash`.
pub fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// A routes.toml serving testing.v1.Streaming from `upstream`, with
/// `route_extra` lines in its `[[routes]]` entry.
pub fn streaming_toml(upstream: SocketAddr, route_extra: &str) -> String {
    format!(
        r#"
[server]
access_log = false

[proto]
files = ["testing/v1/streaming.proto"]
include = ["{{proto}}"]

[upstreams.streams]
endpoints = ["http://{upstream}"]

[[routes]]
service = "testing.v1.Streaming"
upstream = "streams"
auth = "none"
{route_extra}
"#
    )
}

/// A GET over cleartext HTTP/2 that keeps what reqwest hides: the
/// response's trailers.
pub async fn h2c_get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (http::response::Parts, bytes::Bytes, Option<http::HeaderMap>) {
    use http_body_util::BodyExt as _;
    let mut sender = h2c_sender(addr).await;
    let mut request = http::Request::get(format!("http://{addr}{path}")).header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.expect("body");
    let trailers = collected.trailers().cloned();
    (parts, collected.to_bytes(), trailers)
}

/// A POST over cleartext HTTP/2 whose body the test writes piece by piece
/// through the returned sender (dropping it ends the body); the task
/// resolves to the answer.
pub async fn h2c_post_stream(
    addr: SocketAddr,
    path: &str,
    content_type: &str,
) -> (
    mpsc::Sender<bytes::Bytes>,
    tokio::task::JoinHandle<(http::response::Parts, bytes::Bytes)>,
) {
    use http_body_util::BodyExt as _;
    let mut sender = h2c_sender(addr).await;
    let (tx, rx) = mpsc::channel::<bytes::Bytes>(4);
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        let data = rx.recv().await?;
        Some((
            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(data)),
            rx,
        ))
    });
    let request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", content_type)
        .body(http_body_util::StreamBody::new(Box::pin(frames)))
        .expect("request");
    let answer = tokio::spawn(async move {
        let response = sender.send_request(request).await.expect("response");
        let (parts, body) = response.into_parts();
        (parts, body.collect().await.expect("body").to_bytes())
    });
    (tx, answer)
}

/// A cleartext HTTP/2 (prior knowledge) connection to `addr`, its driver
/// running in the background.
pub async fn h2c_sender<B>(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<B>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("handshake");
    tokio::spawn(connection);
    sender
}
