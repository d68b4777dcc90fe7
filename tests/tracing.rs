//! W3C trace context at the gateway: every upstream call carries a
//! `traceparent` naming the gateway's span; a client's trace is continued
//! only when `[server] trust_traceparent` allows it.

mod support;

use support::*;

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

async fn sent_traceparent(
    gateway: &TestGateway,
    scripted: &Scripted,
    headers: &[(&str, &str)],
) -> String {
    let mut request = client().get(format!("{}/v1/echo?stringValue=t", gateway.base));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    assert_eq!(request.send().await.expect("send").status(), 200);
    let calls = scripted.calls();
    let call = calls.last().expect("a call");
    call.headers["traceparent"]
        .to_str()
        .expect("ascii")
        .to_string()
}

/// `00-<trace id>-<parent id>-<flags>`, checked for shape.
fn fields(traceparent: &str) -> (String, String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[0], "00", "{traceparent}");
    assert_eq!(parts[1].len(), 32, "{traceparent}");
    assert_eq!(parts[2].len(), 16, "{traceparent}");
    assert!(
        traceparent
            .bytes()
            .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{traceparent}"
    );
    (parts[1].into(), parts[2].into(), parts[3].into())
}

#[tokio::test]
async fn a_request_without_trace_context_starts_a_fresh_trace_per_request() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, "")).await;
    let first = fields(&sent_traceparent(&gateway, &scripted, &[]).await);
    let second = fields(&sent_traceparent(&gateway, &scripted, &[]).await);
    assert_ne!(first.0, second.0, "each request is its own trace");
    assert_ne!(first.1, second.1);
    assert_eq!(first.2, "01", "a fresh trace is sampled");
}

#[tokio::test]
async fn an_untrusted_client_trace_is_not_continued_and_its_tracestate_dropped() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let toml = everything_toml(scripted.addr, "")
        .replace("[server]\n", "[server]\ntrust_traceparent = false\n");
    let gateway = spawn_gateway(&toml).await;
    let client_parent = format!("00-{CLIENT_TRACE}-00f067aa0ba902b7-01");
    let sent = sent_traceparent(
        &gateway,
        &scripted,
        &[("traceparent", &client_parent), ("tracestate", "rojo=1")],
    )
    .await;
    let (trace_id, parent, _) = fields(&sent);
    assert_ne!(trace_id, CLIENT_TRACE);
    assert_ne!(parent, "00f067aa0ba902b7");
    let calls = scripted.calls();
    assert!(calls[0].headers.get("tracestate").is_none());
}

#[tokio::test]
async fn a_trusted_client_trace_is_continued_under_the_gateway_span() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, "")).await;
    let client_parent = format!("00-{CLIENT_TRACE}-00f067aa0ba902b7-00");
    let sent = sent_traceparent(&gateway, &scripted, &[("traceparent", &client_parent)]).await;
    let (trace_id, parent, flags) = fields(&sent);
    assert_eq!(trace_id, CLIENT_TRACE);
    assert_ne!(
        parent, "00f067aa0ba902b7",
        "the gateway's span is the parent"
    );
    assert_eq!(flags, "00", "the client's sampling decision is kept");
}

/// An OTLP/gRPC collector that keeps every span it is sent.
#[derive(Clone, Default)]
struct Receiver {
    spans: std::sync::Arc<std::sync::Mutex<Vec<Span>>>,
    arrived: std::sync::Arc<tokio::sync::Notify>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = request
            .into_inner()
            .resource_spans
            .into_iter()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans);
        self.spans.lock().expect("spans").extend(spans);
        self.arrived.notify_one();
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Receiver {
    async fn spawn() -> (Receiver, std::net::SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind collector");
        let addr = listener.local_addr().expect("addr");
        let receiver = Receiver::default();
        let service = TraceServiceServer::new(receiver.clone());
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await;
        });
        (receiver, addr)
    }

    /// Waits (each wait on an export's arrival; 30 s in all) for `n` spans.
    async fn wait_for(&self, n: usize) -> Vec<Span> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let notified = self.arrived.notified();
            let spans = self.spans.lock().expect("spans").clone();
            if spans.len() >= n {
                return spans;
            }
            tokio::time::timeout_at(deadline, notified)
                .await
                .unwrap_or_else(|_| panic!("{} of {n} spans arrived", spans.len()));
        }
    }
}

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(span: &Span, key: &str) -> String {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    let value = span
        .attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref()?.value.as_ref())
        .unwrap_or_else(|| panic!("no attribute {key}: {span:?}"));
    match value {
        Value::StringValue(s) => s.clone(),
        Value::IntValue(i) => i.to_string(),
        other => format!("{other:?}"),
    }
}

#[tokio::test]
async fn the_otlp_collector_gets_one_server_span_per_request_parenting_the_upstream_call() {
    let (receiver, collector) = Receiver::spawn().await;
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let toml = format!(
        "{}\n[tracing]\notlp_endpoint = \"http://{collector}\"\n",
        everything_toml(scripted.addr, "")
    );
    let gateway = spawn_gateway(&toml).await;
    // Three client traces, each with its own parent span.
    let clients: Vec<(String, String)> = (1..=3)
        .map(|i| {
            (
                format!("{CLIENT_TRACE:.30}{i:02x}"),
                format!("00f067aa0ba902{i:02x}"),
            )
        })
        .collect();
    let mut sent = Vec::new();
    for (trace_id, parent) in &clients {
        let header = format!("00-{trace_id}-{parent}-01");
        sent.push(sent_traceparent(&gateway, &scripted, &[("traceparent", &header)]).await);
    }

    let spans = receiver.wait_for(3).await;
    assert_eq!(spans.len(), 3, "one span per request: {spans:?}");
    for ((trace_id, parent), upstream_traceparent) in clients.iter().zip(&sent) {
        let span = spans
            .iter()
            .find(|s| hex(&s.trace_id) == *trace_id)
            .unwrap_or_else(|| panic!("no span of trace {trace_id}: {spans:?}"));
        assert_eq!(span.kind, SpanKind::Server as i32);
        assert_eq!(
            hex(&span.parent_span_id),
            *parent,
            "the client's span is the parent"
        );
        let (upstream_trace, upstream_parent, _) = fields(upstream_traceparent);
        assert_eq!(upstream_trace, *trace_id);
        assert_eq!(
            upstream_parent,
            hex(&span.span_id),
            "the upstream call's parent is the exported span"
        );
        assert_eq!(span.name, "GET /v1/echo");
        assert_eq!(attribute(span, "http.route"), "/v1/echo");
        assert_eq!(attribute(span, "http.response.status_code"), "200");
        assert_eq!(attribute(span, "protogate.upstream"), "echo");
        assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
    }
}
