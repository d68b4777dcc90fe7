//! Active health checks: `grpc.health.v1.Health/Check` on each endpoint's
//! own connections, every `interval`. An endpoint that answers NOT_SERVING
//! is out at once; one whose checks fail `unhealthy_threshold` times in a
//! row is out too; `healthy_threshold` passes in a row bring it back.

use std::sync::{Arc, Weak};
use std::time::Duration;

use http::HeaderMap;
use http::uri::{PathAndQuery, Scheme};
use prost::Message;

use super::cancel::IfAbandoned;
use super::deadline::Deadline;
use super::endpoint::Endpoint;
use super::grpc::{self, UnaryRequest};

/// `[upstreams.NAME] health_check`.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    /// Time between checks.
    pub interval: Duration,
    /// How long one check may take.
    pub timeout: Duration,
    /// The service name asked about (`""`: the server as a whole).
    pub service: String,
    /// Failed checks in a row that take an endpoint out.
    pub unhealthy_threshold: u32,
    /// Passed checks in a row that bring it back.
    pub healthy_threshold: u32,
}

/// grpc.health.v1.HealthCheckRequest.
#[derive(Clone, PartialEq, Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

/// grpc.health.v1.HealthCheckResponse.
#[derive(Clone, PartialEq, Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

const SERVING: i32 = 1;
const NOT_SERVING: i32 = 2;
/// Health answers are a few bytes; anything bigger is not one.
const MAX_ANSWER_BYTES: usize = 1024;

/// What one check said.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Serving,
    NotServing,
    Failed(String),
    /// No connection to check on: the dialler already keeps it out.
    NoConnection,
}

/// Checks `endpoint` until it is dropped.
pub(super) fn spawn(
    endpoint: &Arc<Endpoint>,
    config: HealthConfig,
    scheme: Scheme,
    upstream: &str,
) {
    let endpoint = Arc::downgrade(endpoint);
    let upstream = upstream.to_string();
    tokio::spawn(async move {
        let mut tally = Tally::default();
        let mut ticks = tokio::time::interval(config.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(endpoint) = Weak::upgrade(&endpoint) else {
                return;
            };
            let verdict = check(&endpoint, &config, &scheme, &upstream).await;
            let before = endpoint.is_healthy();
            let after = tally.count(&verdict, before, &config);
            if after != before {
                endpoint.set_healthy(after);
                tracing::warn!(upstream, endpoint = %endpoint.authority(), healthy = after,
                    ?verdict, "health check changed the endpoint's state");
            }
        }
    });
}

async fn check(
    endpoint: &Arc<Endpoint>,
    config: &HealthConfig,
    scheme: &Scheme,
    upstream: &str,
) -> Verdict {
    let Some(mut lease) = endpoint.lease() else {
        return Verdict::NoConnection;
    };
    let message = HealthCheckRequest {
        service: config.service.clone(),
    };
    let request = UnaryRequest {
        path: PathAndQuery::from_static("/grpc.health.v1.Health/Check"),
        framed: grpc::frame(|b| message.encode_raw(b), message.encoded_len()),
        metadata: HeaderMap::new(),
        // Dropped only with its endpoint: nobody is left to want the answer.
        if_abandoned: IfAbandoned::Reset,
    };
    let deadline = Deadline::start(config.timeout, None);
    let attempt = async {
        let http = request.to_http(scheme, lease.authority(), deadline, 0)?;
        let allowed = request.if_abandoned;
        grpc::attempt(
            &mut lease,
            upstream,
            http,
            allowed,
            deadline,
            MAX_ANSWER_BYTES,
        )
        .await
    };
    match attempt.await {
        Ok(reply) => match HealthCheckResponse::decode(reply.message) {
            Ok(answer) if answer.status == SERVING => Verdict::Serving,
            Ok(answer) if answer.status == NOT_SERVING => Verdict::NotServing,
            Ok(answer) => Verdict::Failed(format!("status {}", answer.status)),
            Err(e) => Verdict::Failed(format!("undecodable answer: {e}")),
        },
        Err(failed) => Verdict::Failed(failed.describe()),
    }
}

/// Passes and failures in a row.
#[derive(Debug, Default)]
struct Tally {
    passes: u32,
    failures: u32,
}

impl Tally {
    /// Counts a verdict; returns whether the endpoint is healthy after it.
    fn count(&mut self, verdict: &Verdict, healthy: bool, config: &HealthConfig) -> bool {
        match verdict {
            Verdict::NoConnection => healthy,
            Verdict::Serving => {
                self.failures = 0;
                self.passes += 1;
                healthy || self.passes >= config.healthy_threshold
            }
            Verdict::NotServing => {
                self.passes = 0;
                self.failures += 1;
                false
            }
            Verdict::Failed(_) => {
                self.passes = 0;
                self.failures += 1;
                healthy && self.failures < config.unhealthy_threshold
            }
        }
    }
}
