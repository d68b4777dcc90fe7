//! The request path on one screen: check the head's limits, find the
//! binding, fix the deadline, authenticate, read and transcode the request,
//! call the upstream, transcode the answer, apply the cache policy. Each
//! stage gets only its own piece of the binding's [`MethodPlan`] and returns
//! its own error; [`crate::error`] alone turns a failure into an HTTP answer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use arc_swap::{ArcSwap, ArcSwapOption};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts};
use tower::ServiceExt as _;

use tokio::time::Instant;

use crate::auth::Identity;
use crate::error::GatewayError;
use crate::headers::{GRPC_TIMEOUT, SERVER_TIMING, X_REQUEST_ID};
use crate::limits::{LimitError, Limits};
use crate::metadata;
use crate::plan::MethodPlan;
use crate::response_cache::{self, Answer, CacheStatus, X_CACHE};
use crate::route::path::normalize;
use crate::route::{RouteError, RouteMatch};
use crate::snapshot::Snapshot;
use crate::transcode::{self, request::HttpInput};
use crate::upstream::{CallError, Deadline, UnaryRequest, deadline};

mod answer;

use answer::{allow, respond, server_timing};

/// The running gateway: the current snapshot, swapped whole on reload.
#[derive(Debug)]
pub struct Gateway {
    snapshot: ArcSwap<Snapshot>,
    /// Set by a shutdown signal: readiness answers 503 from then on.
    draining: AtomicBool,
}

// === impl Gateway ===

impl Gateway {
    /// Serves `snapshot`.
    pub fn new(snapshot: Snapshot) -> Arc<Gateway> {
        Arc::new(Gateway {
            snapshot: ArcSwap::from_pointee(snapshot),
            draining: AtomicBool::new(false),
        })
    }

    /// Marks the gateway as shutting down: readiness fails from now on,
    /// while requests are still served.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether a shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// The snapshot requests are served from now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Replaces the snapshot; calls in flight finish on the old one.
    pub fn replace(&self, snapshot: Snapshot) {
        self.snapshot.store(Arc::new(snapshot));
    }
}

/// The public router: every request goes to [`handle`], behind the edge
/// layers of the current snapshot's policy (CORS and compression), so a
/// reload changes them without a restart.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let edge = EdgeRouter {
        inner: Router::new().fallback(handle).with_state(gateway.clone()),
        gateway,
        built: Arc::new(ArcSwapOption::empty()),
    };
    Router::new().fallback(through_edge).with_state(edge)
}

/// The pipeline behind the edge layers of the snapshot it was built for,
/// rebuilt by the first request after a swap.
#[derive(Clone)]
struct EdgeRouter {
    gateway: Arc<Gateway>,
    inner: Router,
    built: Arc<ArcSwapOption<EdgeBuilt>>,
}

struct EdgeBuilt {
    /// Which snapshot's policy; weak, so an old snapshot is not kept alive.
    snapshot: Weak<Snapshot>,
    router: Router,
}

async fn through_edge(State(edge): State<EdgeRouter>, request: Request) -> Response {
    let Ok(response) = edge.current().oneshot(request).await;
    response
}

impl EdgeRouter {
    fn current(&self) -> Router {
        let snapshot = self.gateway.snapshot.load();
        if let Some(built) = &*self.built.load()
            && std::ptr::eq(built.snapshot.as_ptr(), Arc::as_ptr(&snapshot))
        {
            return built.router.clone();
        }
        // Two requests racing here build twice; either result is right.
        let router = crate::edge::layers(self.inner.clone(), &snapshot.settings.edge);
        self.built.store(Some(Arc::new(EdgeBuilt {
            snapshot: Arc::downgrade(&snapshot),
            router: router.clone(),
        })));
        router
    }
}

/// The axum handler for every request on the public listener.
pub async fn handle(State(gateway): State<Arc<Gateway>>, request: Request) -> Response {
    let started = Instant::now();
    let snapshot = gateway.snapshot.load_full();
    let request_id = crate::edge::request_id(request.headers());
    let method = request.method().clone();
    let uri = request.uri().clone();
    let mut response = match serve(&snapshot, request, &request_id, started).await {
        Ok(response) => response,
        Err(error) => {
            if error.status().is_server_error() {
                tracing::warn!(request_id = ?request_id, %method, path = uri.path(), %error, "request failed");
            }
            error.into_response()
        }
    };
    response.headers_mut().insert(X_REQUEST_ID, request_id);
    response
        .headers_mut()
        .append(SERVER_TIMING, server_timing("gateway", started.elapsed()));
    if snapshot.settings.access_log {
        tracing::info!(
            target: "protogate::access",
            %method,
            path = uri.path(),
            status = response.status().as_u16(),
            micros = started.elapsed().as_micros() as u64,
            "request"
        );
    }
    response
}

async fn serve(
    snapshot: &Arc<Snapshot>,
    request: Request,
    request_id: &HeaderValue,
    received: Instant,
) -> Result<Response, GatewayError> {
    let (parts, body) = request.into_parts();
    let limits = &snapshot.settings.limits;
    let _admitted = limits.admit()?;
    limits.check_head(&parts)?;
    let path = normalize(parts.uri.path()).map_err(crate::route::RouteError::from)?;
    let found = match snapshot.routes.find(&parts.method, &path) {
        // No binding for OPTIONS itself: say what the path does accept
        // (RFC 9110 §9.3.7). CORS preflights never get here.
        Err(RouteError::MethodNotAllowed { allowed, .. }) if parts.method == Method::OPTIONS => {
            return Ok(allow(&allowed));
        }
        found => found?,
    };
    let plan = snapshot.plans.get(found.binding);
    let _call_slot = Limits::admit_call(&snapshot.upstreams[plan.upstream.upstream])?;
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
    let body = limits
        .read_body(body, &parts.headers, deadline)
        .await
        .map_err(|e| match e {
            LimitError::BodyTimeout => deadline_exceeded(deadline),
            other => other.into(),
        })?;
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
    let call_upstream = || {
        fetch(
            snapshot, plan, &found, &parts, body, &identity, request_id, deadline,
        )
    };
    let (answer, cache_status, age) = match cache {
        None => {
            let answer = call_upstream().await?;
            invalidate_after_write(snapshot, plan, &parts.method, path.as_str(), &found);
            (answer, None, None)
        }
        Some(cache) => {
            let key = response_cache::key(
                path.as_str(),
                parts.uri.query(),
                metadata::authority(&parts).as_ref(),
                &plan.cache.vary_names,
                &parts.headers,
            );
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
            let (entry, status) = tokio::time::timeout_at(deadline.instant(), served)
                .await
                .map_err(|_| deadline_exceeded(deadline))??;
            let age = (status != CacheStatus::Miss).then(|| entry.age());
            (entry.answer.clone(), Some(status), age)
        }
    };
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

/// A successful write invalidates what the gateway cached for its target
/// URI and for the binding's surrogate keys (RFC 9111 §4.4).
fn invalidate_after_write(
    snapshot: &Snapshot,
    plan: &MethodPlan,
    method: &Method,
    path: &str,
    found: &RouteMatch,
) {
    let Some(cache) = &snapshot.response_cache else {
        return;
    };
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return;
    }
    cache.purge_path(path);
    for key in plan.cache.surrogate_keys(&found.captures) {
        cache.purge(&key);
    }
}

fn deadline_exceeded(deadline: Deadline) -> GatewayError {
    GatewayError::DeadlineExceeded {
        budget: deadline.budget(),
    }
}

/// Calls the upstream for a matched request and transcodes the answer.
#[allow(clippy::too_many_arguments)]
async fn fetch(
    snapshot: &Snapshot,
    plan: &MethodPlan,
    found: &RouteMatch,
    parts: &Parts,
    body: Bytes,
    identity: &Identity,
    request_id: &HeaderValue,
    deadline: Deadline,
) -> Result<Answer, GatewayError> {
    let framed = transcode::request(
        &plan.transcode,
        HttpInput {
            captures: &found.captures,
            query: parts.uri.query(),
            content_type: parts.headers.get(header::CONTENT_TYPE),
            body,
            max_json_depth: snapshot.settings.limits.max_json_depth,
        },
    )?;
    let upstream = &snapshot.upstreams[plan.upstream.upstream];
    let call = UnaryRequest {
        path: plan.upstream.grpc_path.clone(),
        framed,
        metadata: metadata::upstream(
            parts,
            &snapshot.settings.forwarding,
            request_id,
            identity,
            plan.auth.forward_authorization,
        ),
    };
    let called = Instant::now();
    let reply = upstream
        .call(call, &plan.upstream, deadline)
        .await
        .map_err(|e| match e {
            CallError::Status { status, metadata } => {
                let mut rendered = transcode::upstream_status(&status, &snapshot.pool);
                let allowlist = &snapshot.settings.forwarding.response;
                metadata::downstream(&[&metadata], allowlist, &mut rendered.headers);
                if rendered.code == tonic::Code::NotFound
                    && let Some(control) = plan.cache.not_found()
                {
                    // The route opted into a short negative cache for 404s.
                    rendered
                        .headers
                        .insert(header::CACHE_CONTROL, control.clone());
                }
                GatewayError::Upstream(Box::new(rendered))
            }
            CallError::Transport(t) => GatewayError::Transport(t),
            CallError::DeadlineExceeded => deadline_exceeded(deadline),
        })?;
    let upstream_time = called.elapsed();
    let reply_body = transcode::response(&plan.transcode, reply.message)?;
    let mut headers = HeaderMap::new();
    metadata::downstream(
        &[&reply.headers, &reply.trailers],
        &snapshot.settings.forwarding.response,
        &mut headers,
    );
    Ok(Answer {
        body: reply_body.body,
        content_type: reply_body.content_type,
        headers,
        upstream_time,
    })
}

/// A background revalidation: the same anonymous GET, with a fresh deadline.
async fn refetch(
    snapshot: &Snapshot,
    method: Method,
    uri: http::Uri,
    headers: HeaderMap,
    peer: Option<metadata::ClientAddr>,
    request_id: &HeaderValue,
) -> Result<Answer, GatewayError> {
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.headers = headers;
    if let Some(peer) = peer {
        parts.extensions.insert(peer);
    }
    let path = normalize(parts.uri.path()).map_err(crate::route::RouteError::from)?;
    let found = snapshot.routes.find(&parts.method, &path)?;
    let plan = snapshot.plans.get(found.binding);
    let deadline = Deadline::start(plan.upstream.timeout, None);
    let identity = Identity::anonymous();
    fetch(
        snapshot,
        plan,
        &found,
        &parts,
        Bytes::new(),
        &identity,
        request_id,
        deadline,
    )
    .await
}

/// A client's `grpc-timeout`, if it sent one; malformed is a 400.
fn client_timeout(
    headers: &HeaderMap,
) -> Result<Option<std::time::Duration>, deadline::InvalidTimeout> {
    headers.get(GRPC_TIMEOUT).map(deadline::decode).transpose()
}
