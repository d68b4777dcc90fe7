//! Streams (server streams over HTTP and WebSocket calls): how many are
//! open, how each ended, and how many messages reached clients. A stream
//! is counted when its head is sent and ends once, however it ends.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of an ended stream.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndLabels {
    route: Arc<str>,
    transport: &'static str,
    outcome: &'static str,
}

/// Labels of a stream's messages.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    route: Arc<str>,
    transport: &'static str,
}

/// The stream families; cheap to clone (handles share their values).
#[derive(Debug, Clone, Default)]
pub struct StreamMetrics {
    open: Gauge,
    ended: Family<EndLabels, Counter>,
    messages: Family<StreamLabels, Counter>,
}

/// One open stream; [`OpenStream::ended`] records how it ended. Dropped
/// without that (a task cancelled), it counts as `client_gone`.
#[derive(Debug)]
pub struct OpenStream {
    metrics: StreamMetrics,
    route: Arc<str>,
    transport: &'static str,
    done: bool,
}

/// How a stream ended, as its `outcome` label says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamOutcome {
    /// The upstream ended it with OK.
    Ok,
    /// It ended with an error status.
    Failed,
    /// The client went away first.
    ClientGone,
}

// === impl StreamMetrics ===

impl StreamMetrics {
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "streams_open",
            "Streams (HTTP server streams and WebSocket calls) open now",
            self.open.clone(),
        );
        registry.register(
            "streams",
            "Streams ended, by route template, transport (http, websocket) and outcome (ok, failed, client_gone)",
            self.ended.clone(),
        );
        registry.register(
            "stream_messages",
            "Messages written to clients on streams, by route template and transport",
            self.messages.clone(),
        );
    }

    /// Counts a stream open on `route` until it ends.
    pub fn opened(&self, route: &str, transport: &'static str) -> OpenStream {
        self.open.inc();
        OpenStream {
            metrics: self.clone(),
            route: Arc::from(route),
            transport,
            done: false,
        }
    }
}

// === impl OpenStream ===

impl OpenStream {
    /// Records the stream's end and the messages it wrote.
    pub fn ended(mut self, outcome: StreamOutcome, messages: u64) {
        self.record(outcome, messages);
    }

    fn record(&mut self, outcome: StreamOutcome, messages: u64) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let metrics = &self.metrics;
        metrics.open.dec();
        let outcome = match outcome {
            StreamOutcome::Ok => "ok",
            StreamOutcome::Failed => "failed",
            StreamOutcome::ClientGone => "client_gone",
        };
        let (route, transport) = (self.route.clone(), self.transport);
        metrics
            .ended
            .get_or_create(&EndLabels {
                route: route.clone(),
                transport,
                outcome,
            })
            .inc();
        metrics
            .messages
            .get_or_create(&StreamLabels { route, transport })
            .inc_by(messages);
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.record(StreamOutcome::ClientGone, 0);
    }
}
