//! The request path on one screen: check the head's limits, find the
//! binding, fix the deadline, authenticate, read and transcode the request,
//! call the upstream, transcode the answer, apply the cache policy. Each
//! stage gets only its own piece of the binding's [`MethodPlan`] and returns
//! its own error; [`crate::error`] alone turns a failure into an HTTP answer.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::Poll;
use std::time::SystemTime;

use arc_swap::{ArcSwap, ArcSwapOption};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts};
use tower::ServiceExt as _;
use tower::util::Oneshot;

use tokio::time::Instant;

use crate::edge::EdgeService;
use crate::error::GatewayError;
use crate::headers::{GRPC_TIMEOUT, RATELIMIT_POLICY, SERVER_TIMING, X_REQUEST_ID};
use crate::limits::{LimitError, Limits};
use crate::metadata;
use crate::metrics::{Metrics, RouteMetrics, StreamMetrics};
use crate::plan::MethodPlan;
use crate::ratelimit;
use crate::response_cache::{self, Answer, CacheStatus, X_CACHE};
use crate::route::RouteError;
use crate::route::path::normalize;
use crate::snapshot::Snapshot;
use crate::trace::{Exporter, FinishedSpan, Trace};
use crate::upstream::{Deadline, IfAbandoned, deadline};

mod answer;
mod grpc_web;
mod idempotent;
mod observe;
mod published;
mod streaming;
mod unary;
mod websocket;

use answer::{allow, respond, server_timing};
use observe::{Observed, access_log, record, route_name};
use unary::{call_failed, fetch, invalidate_after_write, refetch};

/// The running gateway: the current snapshot, swapped whole on reload,
/// and its metrics, which outlive every snapshot.
#[derive(Debug)]
pub struct Gateway {
    current: ArcSwap<Current>,
    metrics: Metrics,
    /// Request spans to the OTLP collector, when `[tracing]` names one
    /// (set at start; a reload does not change it).
    spans: Option<Exporter>,
    /// Set by a shutdown signal: readiness answers 503 from then on.
    draining: AtomicBool,
    /// Set when the listener stops accepting: open streams end then, with
    /// a last UNAVAILABLE their clients reconnect on (elsewhere), instead of
    /// being cut when the shutdown grace runs out.
    ending_streams: tokio::sync::watch::Sender<bool>,
}

/// A snapshot and its bindings' metric handles, swapped together so a
/// binding index always finds its own handles.
#[derive(Debug)]
struct Current {
    snapshot: Arc<Snapshot>,
    routes: RouteMetrics,
}

// === impl Gateway ===

impl Gateway {
    /// Serves `snapshot`.
    pub fn new(snapshot: Snapshot) -> Arc<Gateway> {
        let snapshot = Arc::new(snapshot);
        let metrics = Metrics::new(snapshot.clone());
        let routes = metrics.routes(&snapshot);
        let spans = snapshot.settings.otlp.as_ref().map(Exporter::start);
        Arc::new(Gateway {
            current: ArcSwap::from_pointee(Current { snapshot, routes }),
            metrics,
            spans,
            draining: AtomicBool::new(false),
            ending_streams: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Marks the gateway as shutting down: readiness fails from now on,
    /// while requests are still served.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Ends every open stream (the listener has stopped accepting): each
    /// gets a final UNAVAILABLE in its format, a WebSocket close 1001.
    pub fn end_streams(&self) {
        self.ending_streams.send_replace(true);
    }

    /// Whether a shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// The snapshot requests are served from now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load().snapshot.clone()
    }

    /// Replaces the snapshot; calls in flight finish on the old one.
    pub fn replace(&self, snapshot: Snapshot) {
        let snapshot = Arc::new(snapshot);
        let routes = self.metrics.installed(snapshot.clone());
        self.current.store(Arc::new(Current { snapshot, routes }));
        self.metrics.config_reloaded(true);
    }

    /// Its metrics (`/metrics` on the admin listener).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

/// The public service: every request goes to [`handle`], behind the edge
/// layers of the current snapshot's policy (CORS and compression), so a
/// reload changes them without a restart.
pub fn service(gateway: Arc<Gateway>) -> Public {
    Public {
        gateway,
        built: Arc::new(ArcSwapOption::empty()),
    }
}

/// The pipeline behind the edge layers of the snapshot they were built
/// for, rebuilt by the first request after a swap.
#[derive(Clone)]
pub struct Public {
    gateway: Arc<Gateway>,
    built: Arc<ArcSwapOption<EdgeBuilt>>,
}

struct EdgeBuilt {
    /// Which snapshot's policy; weak, so an old snapshot is not kept alive.
    snapshot: Weak<Snapshot>,
    service: EdgeService,
}

impl Public {
    fn current(&self) -> EdgeService {
        let snapshot = &self.gateway.current.load().snapshot;
        if let Some(built) = &*self.built.load()
            && std::ptr::eq(built.snapshot.as_ptr(), Arc::as_ptr(snapshot))
        {
            return built.service.clone();
        }
        // Two requests racing here build twice; either result is right.
        let gateway = self.gateway.clone();
        let pipeline = tower::service_fn(move |request: Request| {
            let gateway = gateway.clone();
            // Boxed here, so each edge layer around it moves a pointer, not
            // the pipeline's whole state (5.6 KB), as it builds its future.
            Box::pin(async move { Ok::<_, Infallible>(handle(State(gateway), request).await) })
        });
        let service = crate::edge::layers(pipeline, &snapshot.settings.edge);
        self.built.store(Some(Arc::new(EdgeBuilt {
            snapshot: Arc::downgrade(snapshot),
            service: service.clone(),
        })));
        service
    }
}

impl tower::Service<Request> for Public {
    type Response = Response;
    type Error = Infallible;
    type Future = Oneshot<EdgeService, Request>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        self.current().oneshot(request)
    }
}

/// The axum handler for every request on the public listener.
pub async fn handle(State(gateway): State<Arc<Gateway>>, request: Request) -> Response {
    let started = Instant::now();
    let wall_start = gateway.spans.as_ref().map(|_| SystemTime::now());
    let _in_flight = gateway.metrics.in_flight();
    let current = gateway.current.load_full();
    let snapshot = &current.snapshot;
    let request_id = crate::edge::request_id(request.headers());
    let method = request.method().clone();
    let uri = request.uri().clone();
    let trace = Trace::start(request.headers(), snapshot.settings.trust_traceparent);
    let mut observed = Observed::default();
    let served = serve(
        snapshot,
        gateway.metrics.streams(),
        &gateway.ending_streams,
        request,
        &request_id,
        started,
        &trace,
        &mut observed,
    );
    let mut response = match served.await {
        Ok(response) => response,
        Err(error) => {
            if error.status().is_server_error() {
                tracing::warn!(request_id = ?request_id, %method, path = uri.path(), %error, "request failed");
            }
            if let GatewayError::Auth(auth) = &error {
                gateway.metrics.auth_rejected(auth);
            }
            if let GatewayError::RateLimit(limited) = &error {
                let route = route_name(snapshot, &observed);
                gateway.metrics.rate_limits().limited(&route, limited.key);
            }
            match observed.grpc_web.clone() {
                Some(content_type) => {
                    observed.answered_as = Some(error.status());
                    error.into_grpc_web(content_type)
                }
                None => error.into_response(),
            }
        }
    };
    // Every answer of a limited route says so: success, 304, 4xx and 5xx.
    for (name, value) in std::mem::take(&mut observed.rate_limit) {
        response.headers_mut().append(name, value);
    }
    if observed.rate_limit_fell_back {
        gateway.metrics.rate_limits().fell_back();
    }
    response.headers_mut().insert(
        X_REQUEST_ID,
        crate::headers::per_message(request_id.clone()),
    );
    // One clock read for the header, the metrics and the log line.
    let total = started.elapsed();
    response
        .headers_mut()
        .append(SERVER_TIMING, server_timing("gateway", total));
    record(
        &gateway.metrics,
        &current.routes,
        &method,
        &observed,
        &response,
        total,
    );
    if let (Some(spans), Some(start)) = (&gateway.spans, wall_start) {
        spans.record(FinishedSpan {
            trace,
            route: route_name(snapshot, &observed),
            method: method.to_string(),
            status: response.status().as_u16(),
            upstream: observed
                .binding
                .map(|b| snapshot.plans.get(b).upstream.upstream_name.to_string()),
            start,
            end: SystemTime::now(),
        });
    }
    if snapshot.settings.access_log {
        access_log(
            snapshot,
            &request_id,
            &trace,
            &method,
            &uri,
            &observed,
            &response,
            total,
        );
    }
    response
}

/// The branches that await a large future (gRPC-Web, streams, an upstream
/// call, a token's keys, rate limits, the idempotency store, a cache miss)
/// box it where it is awaited: this future is allocated and moved for every
/// request, a cache hit or a refusal too, and it would otherwise be as large
/// as the largest branch (5.8 KB; now under 2 KB).
#[allow(clippy::too_many_arguments)]
async fn serve(
    snapshot: &Arc<Snapshot>,
    streams: &StreamMetrics,
    ending_streams: &tokio::sync::watch::Sender<bool>,
    request: Request,
    request_id: &HeaderValue,
    received: Instant,
    trace: &Trace,
    observed: &mut Observed,
) -> Result<Response, GatewayError> {
    if snapshot.settings.edge.grpc_web
        && let Some(content_type) = crate::grpc_web::requested(request.method(), request.headers())
    {
        let (parts, body) = request.into_parts();
        let content_type = content_type.inspect_err(|_| {
            observed.grpc_web = Some(HeaderValue::from_static("application/grpc-web"));
        })?;
        observed.grpc_web = Some(content_type.answer.clone());
        let call = grpc_web::WebCall {
            snapshot,
            ending: ending_streams,
            content_type,
            request_id,
            received,
            trace,
        };
        return Box::pin(call.serve(parts, body, observed)).await;
    }
    let (mut parts, body) = request.into_parts();
    let limits = &snapshot.settings.limits;
    let admitted = limits.admit()?;
    limits.check_head(&parts)?;
    let path = normalize(parts.uri.path()).map_err(crate::route::RouteError::from)?;
    if let Some(answer) = published::answer(snapshot, &parts, &path) {
        return Ok(answer?);
    }
    let found = match snapshot.routes.find(&parts.method, &path) {
        // No binding for OPTIONS itself: say what the path does accept
        // (RFC 9110 §9.3.7). CORS preflights never get here.
        Err(RouteError::MethodNotAllowed { allowed, .. }) if parts.method == Method::OPTIONS => {
            return Ok(allow(&allowed));
        }
        Err(RouteError::MethodNotAllowed {
            method,
            path: requested,
            allowed,
        }) if websocket::is_upgrade(&parts) => {
            websocket::find(snapshot, &path, &allowed).ok_or(RouteError::MethodNotAllowed {
                method,
                path: requested,
                allowed,
            })?
        }
        found => found?,
    };
    let plan = snapshot.plans.get(found.binding);
    observed.binding = Some(found.binding);
    observed
        .rate_limit
        .extend((plan.rate_limit.policy_field()).map(|policy| (RATELIMIT_POLICY, policy)));
    let call_slot = Limits::admit_call(&snapshot.upstreams[plan.upstream.upstream])?;
    // The budget runs from the moment the head arrived: authentication (a
    // key fetch, say), the body and any cache wait are charged against it.
    let deadline = Deadline::started_at(
        received,
        plan.upstream.timeout,
        client_timeout(&parts.headers)?,
    );
    let identity = tokio::time::timeout_at(deadline.instant(), plan.auth.check(&parts))
        .await
        .map_err(|_| deadline_exceeded(deadline))??;
    observed.consumer = identity.consumer.clone().or(identity.subject.clone());
    count_rate_limits(snapshot, plan, &parts, &identity, observed).await?;
    if let Some(policy) = &plan.stream {
        let upgrade = match websocket::is_upgrade(&parts) {
            true => Some(websocket::take_upgrade(&mut parts).await?),
            false => None,
        };
        let call = streaming::Call {
            snapshot,
            streams,
            ending: ending_streams,
            plan,
            policy,
            found: &found,
            parts: &parts,
            identity: &identity,
            request_id,
            deadline,
            trace,
        };
        return match upgrade {
            Some(upgrade) => websocket::upgrade(call, upgrade, (admitted, call_slot)),
            None => Box::pin(call.serve(body, Box::new((admitted, call_slot)), observed)).await,
        };
    }
    let body = read_body(limits, body, &parts.headers, deadline).await?;
    observed.request_bytes = body.len() as u64;
    // After auth (the key space is the caller's), before the call.
    let ticket = match idempotent::begin(
        snapshot,
        plan,
        &parts,
        path.as_str(),
        &identity,
        &body,
        deadline,
    )
    .await?
    {
        idempotent::Keyed::Replayed(answer) => return Ok(answer),
        idempotent::Keyed::Call(ticket) => ticket,
    };
    // A credential forwarded upstream makes the answer the caller's own,
    // even on a public route: never shared, never stored for others.
    let personal = identity.is_authenticated()
        || metadata::carries_credential(
            &parts.headers,
            &snapshot.settings.forwarding,
            plan.auth.forward_authorization,
        );

    let cache = snapshot
        .response_cache
        .as_ref()
        .filter(|_| plan.cache.gateway_cacheable(&parts.method, personal));
    // A keyed write is never left running once its client leaves: its key
    // is released for the retry, which must not be the write's second run.
    let if_abandoned = match ticket {
        Some(_) => IfAbandoned::Reset,
        None => IfAbandoned::FollowBudget,
    };
    let call_upstream = || {
        fetch(
            snapshot,
            plan,
            &found,
            &parts,
            body,
            &identity,
            request_id,
            deadline,
            if_abandoned,
            trace,
            observed,
        )
    };
    let (answer, cache_status, age) = match cache {
        None => {
            let answer = Box::pin(call_upstream()).await;
            if answer.is_ok() {
                invalidate_after_write(snapshot, plan, &parts.method, path.as_str(), &found);
            }
            if let Some(ticket) = ticket {
                let response = answer.and_then(|answer| {
                    respond(plan, &parts, &found.captures, personal, answer, None, None)
                });
                return Box::pin(idempotent::finish(ticket, response)).await;
            }
            (answer?, None, None)
        }
        Some(cache) => {
            let key = response_cache::key(
                path.as_str(),
                parts.uri.query(),
                metadata::authority(&parts).as_ref(),
                &plan.cache.vary_names,
                &parts.headers,
            );
            if let Some((entry, age)) = cache.fresh(&key) {
                // A fresh hit: no surrogate keys, refresh or fetch to build.
                observed.cache = Some(CacheStatus::Hit);
                return respond(
                    plan,
                    &parts,
                    &found.captures,
                    personal,
                    entry.answer.clone(),
                    Some(CacheStatus::Hit),
                    Some(age),
                );
            }
            let freshness = response_cache::Freshness {
                fresh_for: plan.cache.fresh_for,
                stale_while_revalidate: plan.cache.stale_while_revalidate,
                stale_if_error: plan.cache.stale_if_error,
            };
            let keys = plan.cache.surrogate_keys(&found.captures);
            let refresh = {
                let (snapshot, cache, key, keys) =
                    (snapshot.clone(), cache.clone(), key.clone(), keys.clone());
                let (method, uri, headers) = (
                    parts.method.clone(),
                    parts.uri.clone(),
                    parts.headers.clone(),
                );
                let (request_id, peer) = (
                    request_id.clone(),
                    parts.extensions.get::<metadata::ClientAddr>().copied(),
                );
                move || async move {
                    let answer = refetch(&snapshot, method, uri, headers, peer, &request_id).await;
                    if let Err(error) = &answer {
                        tracing::warn!(%error, "background revalidation failed; keeping the stale answer");
                    }
                    cache.finish_refresh(&key, answer.ok(), freshness, keys);
                }
            };
            // A caller waiting on another's coalesced fetch keeps its own budget.
            let served = cache.serve(key, freshness, keys, call_upstream, refresh);
            let (entry, status) = Box::pin(tokio::time::timeout_at(deadline.instant(), served))
                .await
                .map_err(|_| deadline_exceeded(deadline))??;
            let age = (status != CacheStatus::Miss).then(|| entry.age());
            (entry.answer.clone(), Some(status), age)
        }
    };
    observed.cache = cache_status;
    respond(
        plan,
        &parts,
        &found.captures,
        personal,
        answer,
        cache_status,
        age,
    )
}

/// Counts the request against the binding's rate limits; what they say
/// goes on the answer whatever it is.
async fn count_rate_limits(
    snapshot: &Snapshot,
    plan: &MethodPlan,
    parts: &Parts,
    identity: &crate::auth::Identity,
    observed: &mut Observed,
) -> Result<(), GatewayError> {
    if plan.rate_limit.is_empty() {
        return Ok(());
    }
    let hops = snapshot.settings.forwarding.trusted_proxy_hops;
    let caller = ratelimit::Caller {
        identity,
        client_ip: metadata::client_ip(parts, hops),
        headers: &parts.headers,
    };
    // Boxed: only limited routes pay for the check's future (see `serve`).
    let checked = Box::pin(plan.rate_limit.check(caller)).await;
    observed.rate_limit = checked.fields;
    observed.rate_limit_fell_back = checked.fell_back;
    match checked.refused {
        Some(refused) => Err(refused.into()),
        None => Ok(()),
    }
}

/// The request body within its limits; running out of budget while it
/// arrives is the call's deadline, not a limit.
async fn read_body(
    limits: &Limits,
    body: Body,
    headers: &HeaderMap,
    deadline: Deadline,
) -> Result<bytes::Bytes, GatewayError> {
    limits
        .read_body(body, headers, deadline)
        .await
        .map_err(|e| match e {
            LimitError::BodyTimeout => deadline_exceeded(deadline),
            other => other.into(),
        })
}

fn deadline_exceeded(deadline: Deadline) -> GatewayError {
    GatewayError::DeadlineExceeded {
        budget: deadline.budget(),
    }
}

/// A client's `grpc-timeout`, if it sent one; malformed is a 400.
fn client_timeout(
    headers: &HeaderMap,
) -> Result<Option<std::time::Duration>, deadline::InvalidTimeout> {
    headers.get(GRPC_TIMEOUT).map(deadline::decode).transpose()
}
