//! Messages per second of a server stream of small messages, read directly
//! in gRPC and read as NDJSON through the gateway, in the same run.
//!
//! One process holds a tonic upstream of testing.v1.Streaming whose `Ticks`
//! yields its messages as fast as tonic takes them, the gateway in front of
//! it on a socket (edge layers, routing, the streaming body), and the
//! clients. The gateway is read three ways: with reqwest over HTTP/1.1 (as
//! `curl -N` reads it) and over h2c, and with a bare socket over HTTP/1.1
//! that only counts line ends, which shows how much of the HTTP/1.1 case is
//! the client's own cost on these shared cores rather than the gateway's.
//!
//! Each round streams the same N ticks once per case, the cases
//! taking turns, so a slower minute on this shared machine falls on all of
//! them; the median round of each case is reported, with its ratio to the
//! direct call. A custom main rather than criterion: criterion measures
//! its benchmarks one after the other and cannot print a ratio.
//!
//! `cargo bench --bench stream`; `STREAM_MESSAGES` (default 100000) and
//! `STREAM_ROUNDS` (default 5) change the size.

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures_util::Stream;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status, Streaming as Incoming};

/// The generated code, laid out as its `super::super::google` paths expect.
#[allow(dead_code, unreachable_pub, clippy::all)]
mod pb {
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

use pb::google::api::HttpBody;
use pb::testing::v1::streaming_client::StreamingClient;
use pb::testing::v1::streaming_server::{Streaming, StreamingServer};
use pb::testing::v1::{DownloadRequest, Number, Tick, TicksRequest, Total, UploadSummary};

const PROTO_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");

/// Filler per tick: with its `seq` and `kind`, a message of about 25 bytes
/// in protobuf and a line of about 60 in NDJSON.
const PAYLOAD_BYTES: i32 = 16;

type Messages<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// An upstream that costs as little as it can, so that the difference
/// between the cases is the gateway's.
struct Upstream;

#[tonic::async_trait]
impl Streaming for Upstream {
    type TicksStream = Messages<Tick>;
    type DoubleStream = Messages<Number>;
    type DownloadStream = Messages<HttpBody>;

    async fn ticks(
        &self,
        request: Request<TicksRequest>,
    ) -> Result<Response<Self::TicksStream>, Status> {
        let request = request.into_inner();
        let payload = "x".repeat(request.payload_bytes.max(0) as usize);
        let ticks = (1..=i64::from(request.count)).map(move |seq| {
            Ok(Tick {
                seq,
                kind: if seq % 2 == 0 { 1 } else { 2 },
                payload: payload.clone(),
            })
        });
        Ok(Response::new(Box::pin(futures_util::stream::iter(ticks))))
    }

    async fn sum(&self, _: Request<Incoming<Number>>) -> Result<Response<Total>, Status> {
        Err(Status::unimplemented("not measured"))
    }

    async fn double(
        &self,
        _: Request<Incoming<Number>>,
    ) -> Result<Response<Self::DoubleStream>, Status> {
        Err(Status::unimplemented("not measured"))
    }

    async fn download(
        &self,
        _: Request<DownloadRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        Err(Status::unimplemented("not measured"))
    }

    async fn upload(
        &self,
        _: Request<Incoming<HttpBody>>,
    ) -> Result<Response<UploadSummary>, Status> {
        Err(Status::unimplemented("not measured"))
    }
}

/// One way of reading the stream.
#[derive(Clone, Copy)]
enum Case {
    /// The tonic client, straight to the upstream.
    Direct,
    /// reqwest over HTTP/1.1 (chunked), as `curl -N` reads it.
    GatewayHttp1,
    /// A bare socket that counts the lines of the chunked HTTP/1.1 body:
    /// the gateway's part of the HTTP/1.1 case without the client's.
    GatewayHttp1Raw,
    /// reqwest over cleartext HTTP/2, the protocol of the direct call.
    GatewayH2c,
}

/// The clients, each connected once and reused, as a real client would.
struct Clients {
    grpc: StreamingClient<tonic::transport::Channel>,
    http1: reqwest::Client,
    h2c: reqwest::Client,
    /// The gateway's Ticks URL, without the count.
    url: String,
    /// The gateway's address, for the bare socket.
    gateway: SocketAddr,
}

// === impl Case ===

impl Case {
    const ALL: [Case; 4] = [
        Case::Direct,
        Case::GatewayHttp1,
        Case::GatewayHttp1Raw,
        Case::GatewayH2c,
    ];

    fn label(self) -> &'static str {
        match self {
            Case::Direct => "direct gRPC (tonic client, HTTP/2)",
            Case::GatewayHttp1 => "gateway NDJSON, HTTP/1.1 (reqwest)",
            Case::GatewayH2c => "gateway NDJSON, h2c (reqwest)",
            Case::GatewayHttp1Raw => "gateway NDJSON, HTTP/1.1 (bare socket)",
        }
    }

    /// Reads one stream of `count` ticks; how many arrived.
    async fn read(self, clients: &mut Clients, count: i32) -> u64 {
        match self {
            Case::Direct => read_grpc(&mut clients.grpc, count).await,
            Case::GatewayHttp1 => read_ndjson(&clients.http1, &clients.url, count).await,
            Case::GatewayH2c => read_ndjson(&clients.h2c, &clients.url, count).await,
            Case::GatewayHttp1Raw => read_ndjson_raw(clients.gateway, count).await,
        }
    }
}

async fn read_grpc(client: &mut StreamingClient<tonic::transport::Channel>, count: i32) -> u64 {
    let request = TicksRequest {
        count,
        payload_bytes: PAYLOAD_BYTES,
        ..TicksRequest::default()
    };
    let mut ticks = client.ticks(request).await.expect("Ticks").into_inner();
    let mut read = 0;
    while let Some(tick) = ticks.message().await.expect("a tick") {
        std::hint::black_box(tick);
        read += 1;
    }
    read
}

/// Counts the lines; parsing them is the client's business, not the
/// gateway's, and would be measured here on the same two cores.
async fn read_ndjson(client: &reqwest::Client, url: &str, count: i32) -> u64 {
    let mut response = client
        .get(format!("{url}?count={count}&payload_bytes={PAYLOAD_BYTES}"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let mut read = 0;
    while let Some(chunk) = response.chunk().await.expect("read") {
        read += chunk.iter().filter(|b| **b == b'\n').count() as u64;
    }
    read
}

/// Counts the `}\n` line ends of the raw chunked body; a chunk's own
/// `\r\n` lines never end in `}`.
async fn read_ndjson_raw(gateway: SocketAddr, count: i32) -> u64 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut socket = tokio::net::TcpStream::connect(gateway)
        .await
        .expect("connect");
    let request = format!(
        "GET /v1/ticks?count={count}&payload_bytes={PAYLOAD_BYTES} HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await.expect("write");
    let mut buffer = vec![0; 64 * 1024];
    let (mut read, mut last) = (0, 0u8);
    loop {
        let n = socket.read(&mut buffer).await.expect("read");
        if n == 0 {
            return read;
        }
        for &byte in &buffer[..n] {
            if byte == b'\n' && last == b'}' {
                read += 1;
            }
            last = byte;
        }
    }
}

async fn spawn_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("addr");
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(StreamingServer::new(Upstream))
            .serve_with_incoming(incoming),
    );
    addr
}

/// The gateway on 127.0.0.1:0 in front of `upstream`, served as the
/// binary serves it.
async fn spawn_gateway(upstream: SocketAddr) -> SocketAddr {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("routes.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\naccess_log = false\n[proto]\nfiles = [\"testing/v1/streaming.proto\"]\ninclude = [\"{PROTO_DIR}\"]\n\
             [upstreams.streams]\nendpoints = [\"http://{upstream}\"]\ntimeout = \"60s\"\n\
             [[routes]]\nservice = \"testing.v1.Streaming\"\nupstream = \"streams\"\nauth = \"none\"\n"
        ),
    )
    .expect("write routes.toml");
    let loaded = protogate::config::load(&path).expect("parses");
    let compiled = protogate::snapshot::compile_for_serving(&loaded).expect("compiles");
    let snapshot = compiled.start().await;
    let settings = snapshot.settings.clone();
    let router = protogate::pipeline::service(protogate::pipeline::Gateway::new(snapshot));
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind gateway");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = protogate::server::serve(
            listener,
            router,
            &settings.listener,
            &settings.limits,
            std::future::pending(),
        )
        .await;
    });
    addr
}

fn setting(name: &str, default: i32) -> i32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut rates: Vec<f64>) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

fn main() {
    let count = setting("STREAM_MESSAGES", 100_000);
    let rounds = setting("STREAM_ROUNDS", 5).max(1);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let rates = runtime.block_on(async {
        let upstream = spawn_upstream().await;
        let gateway = spawn_gateway(upstream).await;
        let mut clients = Clients {
            grpc: StreamingClient::connect(format!("http://{upstream}"))
                .await
                .expect("connect"),
            http1: reqwest::Client::builder()
                .http1_only()
                .build()
                .expect("client"),
            h2c: reqwest::Client::builder()
                .http2_prior_knowledge()
                .build()
                .expect("client"),
            url: format!("http://{gateway}/v1/ticks"),
            gateway,
        };
        // Connections, pools and allocator warmed before anything counts.
        for case in Case::ALL {
            case.read(&mut clients, count / 10).await;
        }
        let mut rates = vec![Vec::new(); Case::ALL.len()];
        for _ in 0..rounds {
            for (i, case) in Case::ALL.into_iter().enumerate() {
                let started = Instant::now();
                let read = case.read(&mut clients, count).await;
                let took = started.elapsed().max(Duration::from_nanos(1));
                assert_eq!(read, count as u64, "{} lost messages", case.label());
                rates[i].push(read as f64 / took.as_secs_f64());
            }
        }
        rates
    });
    println!(
        "server stream of {count} small messages (Tick, {PAYLOAD_BYTES}-byte payload), median of {rounds} rounds:"
    );
    let direct = median(rates[0].clone());
    for (case, rates) in Case::ALL.into_iter().zip(rates) {
        let (low, high) = rates
            .iter()
            .fold((f64::MAX, 0f64), |(l, h), r| (l.min(*r), h.max(*r)));
        let rate = median(rates);
        println!(
            "  {:<38} {:>10.0} msg/s  ({:.0}..{:.0})  {:.2}x direct",
            case.label(),
            rate,
            low,
            high,
            rate / direct
        );
    }
}
