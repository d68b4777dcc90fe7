//! Upstream gRPC services: each a named [`Pool`] of endpoints with
//! long-lived HTTP/2 connections, called with a [`Deadline`], retried
//! where that is safe ([`retry`]), and bounded in concurrent calls. A
//! binding's [`Target`] says which upstream and method it calls, with what
//! budget and retry policy.

pub mod cancel;
mod connection;
pub mod deadline;
pub mod discovery;
pub mod endpoint;
pub mod error;
pub mod grpc;
pub mod health;
pub mod outlier;
pub mod pool;
pub mod retry;
pub mod status;
pub mod streaming;
pub mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::uri::PathAndQuery;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use cancel::{CancelPolicy, IfAbandoned};
pub use connection::{BoxError, UpstreamBody};
pub use deadline::Deadline;
pub use discovery::Discovery;
pub use error::{CallError, TransportError};
pub use grpc::{UnaryReply, UnaryRequest};
pub use pool::{Pool, PoolConfig};
pub use retry::{RetryPolicy, RetrySettings};
pub use streaming::{MessageStream, StreamBody, StreamRequest};

use crate::backoff::Backoff;
use endpoint::Endpoint;
use grpc::Failed;
use outlier::Outcome;
use retry::RetryBudget;

/// The upstream piece of a method plan: where a binding's calls go.
#[derive(Debug, Clone)]
pub struct Target {
    /// Index of the upstream in the snapshot's upstream list.
    pub upstream: usize,
    /// Upstream name, for `check` and logs.
    pub upstream_name: Arc<str>,
    /// `/package.Service/Method`, built once.
    pub grpc_path: PathAndQuery,
    /// Deadline budget, and the cap on a client's grpc-timeout.
    pub timeout: Duration,
    /// Which failures are tried again.
    pub retry: RetryPolicy,
}

/// One upstream service.
#[derive(Debug)]
pub struct Upstream {
    /// Name from routes.toml.
    pub name: String,
    /// Its endpoints and connections.
    pub pool: Pool,
    /// Default deadline budget of its routes.
    pub timeout: Duration,
    /// Largest response message accepted.
    pub max_message_bytes: usize,
    retry: RetrySettings,
    budget: RetryBudget,
    calls: Arc<Semaphore>,
    max_concurrent_calls: usize,
    counters: Counters,
    /// What it was started from: a reload with an equal config keeps it.
    config: UpstreamConfig,
}

/// How one upstream is reached, compiled; dialled by [`Upstream::start`].
/// A reload whose config for an upstream is equal keeps the live one.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    /// The pool's connection settings.
    pub pool: PoolConfig,
    /// Default deadline budget of its routes.
    pub timeout: Duration,
    /// Largest response message accepted.
    pub max_message_bytes: usize,
    /// How retries are spent.
    pub retry: RetrySettings,
    /// Calls in flight at once; more are shed before any work is done.
    pub max_concurrent_calls: usize,
}

/// What an upstream counts, for the admin listener (and metrics later).
#[derive(Debug, Default)]
pub struct Counters {
    /// Calls made (first attempts).
    pub calls: AtomicU64,
    /// Attempts after the first.
    pub retries: AtomicU64,
    /// Retries refused because the retry budget was spent.
    pub budget_exhausted: AtomicU64,
    /// Requests shed at `max_concurrent_calls`.
    pub shed: AtomicU64,
}

/// A call slot on an upstream, held for the whole request.
#[derive(Debug)]
pub struct CallPermit(#[allow(dead_code)] OwnedSemaphorePermit);

/// Why an attempt may be tried again.
enum Retry {
    /// The upstream did not process it: another connection can take it now.
    Unprocessed,
    /// The binding's policy allows it; wait a back-off first.
    Allowed,
}

// === impl Upstream ===

impl Upstream {
    /// Dials the pool and waits for its first attempts (see [`Pool::start`]).
    pub async fn start(config: UpstreamConfig) -> Upstream {
        let started_from = config.clone();
        Upstream {
            config: started_from,
            name: config.pool.name.clone(),
            pool: Pool::start(config.pool).await,
            timeout: config.timeout,
            max_message_bytes: config.max_message_bytes,
            budget: RetryBudget::new(&config.retry),
            retry: config.retry,
            calls: Arc::new(Semaphore::new(config.max_concurrent_calls)),
            max_concurrent_calls: config.max_concurrent_calls,
            counters: Counters::default(),
        }
    }

    /// The compiled settings it was started from.
    pub fn config(&self) -> &UpstreamConfig {
        &self.config
    }

    /// A call slot, or `None` when `max_concurrent_calls` are in flight
    /// (counted as shed).
    pub fn admit(&self) -> Option<CallPermit> {
        match self.calls.clone().try_acquire_owned() {
            Ok(permit) => Some(CallPermit(permit)),
            Err(_) => {
                self.counters.shed.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// The bound on calls in flight.
    pub fn max_concurrent_calls(&self) -> usize {
        self.max_concurrent_calls
    }

    /// Calls in flight now.
    pub fn calls_in_flight(&self) -> usize {
        self.max_concurrent_calls - self.calls.available_permits()
    }

    /// Its counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Makes one unary call within `deadline`, retrying as `target.retry`
    /// and the retry budget allow; every attempt shares the one deadline.
    pub async fn call(
        &self,
        request: UnaryRequest,
        target: &Target,
        deadline: Deadline,
    ) -> Result<UnaryReply, CallError> {
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        self.budget.deposit();
        let mut backoff = Backoff::new(self.retry.backoff, self.retry.backoff_max);
        let mut avoid: Option<Arc<Endpoint>> = None;
        let mut attempt = 0;
        loop {
            let failed = match self
                .attempt(&request, deadline, attempt, avoid.as_ref())
                .await
            {
                Ok(mut reply) => {
                    reply.retries = attempt;
                    return Ok(reply);
                }
                Err((failed, endpoint)) => {
                    avoid = endpoint.or(avoid);
                    failed
                }
            };
            attempt += 1;
            let Some(retry) = self.may_retry(&failed, target.retry, attempt, deadline) else {
                return Err(failed.error);
            };
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            if let Retry::Allowed = retry {
                let pause = backoff.next_delay();
                if deadline.remaining() <= pause + self.retry.min_remaining {
                    return Err(failed.error);
                }
                tokio::time::sleep(pause).await;
            }
        }
    }

    /// One attempt on a connection the pool picks; on failure, also the
    /// endpoint it went to.
    async fn attempt(
        &self,
        request: &UnaryRequest,
        deadline: Deadline,
        previous_attempts: u32,
        avoid: Option<&Arc<Endpoint>>,
    ) -> Result<UnaryReply, (Failed, Option<Arc<Endpoint>>)> {
        let mut lease = self.pool.lease(avoid).map_err(|reason| {
            let error = CallError::Transport(TransportError::Unreachable {
                upstream: self.name.clone(),
                reason,
            });
            (
                Failed {
                    error,
                    unprocessed: true,
                },
                None,
            )
        })?;
        let endpoint = lease.endpoint().clone();
        let result = async {
            let http = request.to_http(
                self.pool.scheme(),
                lease.authority(),
                deadline,
                previous_attempts,
            )?;
            grpc::attempt(
                &mut lease,
                &self.name,
                http,
                request.if_abandoned,
                deadline,
                self.max_message_bytes,
            )
            .await
        }
        .await;
        drop(lease);
        if let Some(outcome) = outcome(&result) {
            self.pool.record(&endpoint, outcome);
        }
        match result {
            Ok(mut reply) => {
                reply.endpoint = Some(endpoint.authority().clone());
                Ok(reply)
            }
            Err(failed) => Err((failed, Some(endpoint))),
        }
    }

    /// Whether a failed attempt is tried again, and how.
    fn may_retry(
        &self,
        failed: &Failed,
        policy: RetryPolicy,
        attempts_made: u32,
        deadline: Deadline,
    ) -> Option<Retry> {
        if attempts_made >= policy.attempts || deadline.remaining() < self.retry.min_remaining {
            return None;
        }
        let retry = if failed.unprocessed {
            Retry::Unprocessed
        } else if policy.on.contains(code_of(&failed.error)?) {
            Retry::Allowed
        } else {
            return None;
        };
        self.spend_retry(failed).then_some(retry)
    }

    /// Takes a retry from the budget, if the failed attempt reached an
    /// upstream (a request that was never sent adds no load, so it costs
    /// nothing); `false`, counted, when the budget is spent.
    fn spend_retry(&self, failed: &Failed) -> bool {
        let was_sent = !matches!(
            failed.error,
            CallError::Transport(TransportError::Unreachable { .. })
        );
        if was_sent && !self.budget.withdraw() {
            self.counters
                .budget_exhausted
                .fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }
}

/// The gRPC code a failed attempt stands for, when a policy can name it: a
/// lost connection is UNAVAILABLE, as gRPC clients report it.
fn code_of(error: &CallError) -> Option<tonic::Code> {
    match error {
        CallError::Status { status, .. } => Some(status.code()),
        CallError::Transport(TransportError::ConnectionLost { .. }) => {
            Some(tonic::Code::Unavailable)
        }
        CallError::Transport(_) | CallError::DeadlineExceeded => None,
    }
}

/// What an attempt says about its endpoint's health; a deadline that ran
/// out says nothing (the balancer already steers away from slow ones).
fn outcome(result: &Result<UnaryReply, Failed>) -> Option<Outcome> {
    match result {
        Ok(_) => Some(Outcome::Answered),
        Err(failed) => outcome_of(&failed.error),
    }
}

/// What a failed call says about its endpoint's health.
fn outcome_of(error: &CallError) -> Option<Outcome> {
    match error {
        CallError::Status { status, .. } if status.code() == tonic::Code::Unavailable => {
            Some(Outcome::Unavailable)
        }
        CallError::Status { .. } => Some(Outcome::Answered),
        CallError::Transport(_) => Some(Outcome::TransportFailure),
        CallError::DeadlineExceeded => None,
    }
}
