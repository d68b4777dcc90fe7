//! Exporting request spans over OTLP/gRPC (`[tracing] otlp_endpoint`).
//!
//! The request path hands a finished span to a bounded queue and goes on;
//! one task sends whatever has queued up as one export call. A collector
//! that is slow or down costs the gateway at most `max_queued_spans` spans
//! of memory: past that, new spans are dropped, never requests delayed.

use std::time::{Duration, SystemTime};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span, status,
};
use tokio::sync::mpsc;

use super::Trace;

/// Spans sent in one export call at most.
const MAX_BATCH: usize = 512;

/// How long one export call may take before it is abandoned.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// `[tracing]`, compiled.
#[derive(Debug, Clone)]
pub struct OtlpSettings {
    /// The collector's address (plaintext gRPC).
    pub endpoint: http::Uri,
    /// Finished spans held for export; beyond it new spans are dropped.
    pub max_queued_spans: usize,
    /// `service.name` of the exported spans.
    pub service_name: String,
}

/// The gateway's server span of one request, finished.
#[derive(Debug)]
pub struct FinishedSpan {
    /// Its trace and ids.
    pub trace: Trace,
    /// The route template (`unmatched` when none).
    pub route: String,
    /// The request method.
    pub method: String,
    /// The HTTP status answered.
    pub status: u16,
    /// The upstream called, if any.
    pub upstream: Option<String>,
    /// When the request's head arrived.
    pub start: SystemTime,
    /// When the answer was ready.
    pub end: SystemTime,
}

/// The queue to the export task; dropping it ends the task once the queue
/// is drained.
#[derive(Debug)]
pub struct Exporter {
    queue: mpsc::Sender<FinishedSpan>,
}

// === impl Exporter ===

impl Exporter {
    /// Starts the export task; the collector is dialled on the first export.
    pub fn start(settings: &OtlpSettings) -> Exporter {
        let channel = tonic::transport::Channel::builder(settings.endpoint.clone())
            .timeout(EXPORT_TIMEOUT)
            .connect_lazy();
        let (queue, spans) = mpsc::channel(settings.max_queued_spans.max(1));
        tokio::spawn(export(
            spans,
            TraceServiceClient::new(channel),
            resource(&settings.service_name),
        ));
        Exporter { queue }
    }

    /// Queues a finished span; when the queue is full it is dropped.
    pub fn record(&self, span: FinishedSpan) {
        let _ = self.queue.try_send(span);
    }
}

/// Sends queued spans, a batch per call, until the exporter is dropped.
async fn export(
    mut spans: mpsc::Receiver<FinishedSpan>,
    mut client: TraceServiceClient<tonic::transport::Channel>,
    resource: Resource,
) {
    let scope = InstrumentationScope {
        name: "protogate".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    };
    let mut failing = false;
    while let Some(first) = spans.recv().await {
        let mut batch = vec![to_proto(first)];
        while batch.len() < MAX_BATCH {
            match spans.try_recv() {
                Ok(span) => batch.push(to_proto(span)),
                Err(_) => break,
            }
        }
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope.clone()),
                    spans: batch,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        // One warning per outage, not one per batch.
        match client.export(request).await {
            Ok(_) => failing = false,
            Err(status) if !failing => {
                failing = true;
                tracing::warn!(%status, "OTLP export failed; spans are dropped until it recovers");
            }
            Err(_) => {}
        }
    }
}

fn resource(service_name: &str) -> Resource {
    Resource {
        attributes: vec![text("service.name", service_name.to_string())],
        ..Default::default()
    }
}

/// The OTLP form of a server span, with HTTP semantic-convention attributes.
fn to_proto(span: FinishedSpan) -> Span {
    let mut attributes = vec![
        text("http.request.method", span.method.clone()),
        text("http.route", span.route.clone()),
        KeyValue {
            key: "http.response.status_code".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::IntValue(i64::from(span.status))),
            }),
            ..Default::default()
        },
    ];
    if let Some(upstream) = span.upstream {
        attributes.push(text("protogate.upstream", upstream));
    }
    let code = if span.status >= 500 {
        status::StatusCode::Error
    } else {
        status::StatusCode::Unset
    };
    Span {
        trace_id: span.trace.trace_id.to_vec(),
        span_id: span.trace.span_id.to_vec(),
        parent_span_id: span.trace.parent.map(|p| p.to_vec()).unwrap_or_default(),
        flags: u32::from(span.trace.flags),
        name: format!("{} {}", span.method, span.route),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: unix_nanos(span.start),
        end_time_unix_nano: unix_nanos(span.end),
        attributes,
        status: Some(Status {
            code: code as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn text(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value)),
        }),
        ..Default::default()
    }
}

fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
