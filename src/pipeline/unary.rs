//! A unary call: transcode the request, call the upstream, transcode the
//! answer; the gateway cache's background refresh makes the same call, and
//! a successful write purges what it changes.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, header, request::Parts};
use tokio::time::Instant;

use super::deadline_exceeded;
use super::observe::Observed;
use crate::auth::Identity;
use crate::error::GatewayError;
use crate::metadata;
use crate::plan::MethodPlan;
use crate::response_cache::Answer;
use crate::route::RouteMatch;
use crate::route::path::normalize;
use crate::snapshot::Snapshot;
use crate::trace::Trace;
use crate::transcode::{self, request::HttpInput};
use crate::upstream::{CallError, Deadline, IfAbandoned, UnaryRequest};

/// A successful write invalidates what the gateway cached for its target
/// URI and for the binding's surrogate keys (RFC 9111 §4.4).
pub(super) fn invalidate_after_write(
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

/// Calls the upstream for a matched request and transcodes the answer.
#[allow(clippy::too_many_arguments)]
pub(super) async fn fetch(
    snapshot: &Snapshot,
    plan: &MethodPlan,
    found: &RouteMatch,
    parts: &Parts,
    body: Bytes,
    identity: &Identity,
    request_id: &HeaderValue,
    deadline: Deadline,
    if_abandoned: IfAbandoned,
    trace: &Trace,
    observed: &mut Observed,
) -> Result<Answer, GatewayError> {
    let framed = transcode::request(
        &plan.transcode,
        HttpInput {
            captures: &found.captures,
            query: parts.uri.query(),
            content_type: parts.headers.get(header::CONTENT_TYPE),
            body,
            max_json_depth: snapshot.settings.limits.max_json_depth,
            multipart: Some(transcode::MultipartLimits {
                max_part_bytes: snapshot.settings.limits.max_multipart_part_bytes,
                max_parts: snapshot.settings.limits.max_multipart_parts,
            }),
        },
    )?;
    let upstream = &snapshot.upstreams[plan.upstream.upstream];
    let mut metadata = metadata::upstream(
        parts,
        &snapshot.settings.forwarding,
        request_id,
        identity,
        plan.auth.forward_authorization,
    );
    trace.propagate(&mut metadata);
    let call = UnaryRequest {
        path: plan.upstream.grpc_path.clone(),
        framed,
        metadata,
        if_abandoned,
    };
    let called = Instant::now();
    let reply = upstream
        .call(call, &plan.upstream, deadline)
        .await
        .inspect(|reply| {
            observed.endpoint.clone_from(&reply.endpoint);
            observed.retries = reply.retries;
        })
        // A failed call's time counts too (a 503's latency is the upstream's).
        .inspect_err(|_| observed.upstream = Some(called.elapsed()))
        .map_err(|e| call_failed(snapshot, plan, deadline, e))?;
    let upstream_time = called.elapsed();
    observed.upstream = Some(upstream_time);
    let reply_body = transcode::response(&plan.transcode, reply.message)?;
    let mut headers = HeaderMap::new();
    metadata::downstream(
        &[&reply.headers, &reply.trailers],
        &snapshot.settings.forwarding.response,
        &mut headers,
    );
    if let Some(location) = reply_body.location {
        headers.insert(header::LOCATION, location);
    }
    // Only GET and HEAD answers carry one, and every one of them does.
    let etag = matches!(parts.method, Method::GET | Method::HEAD)
        .then(|| crate::cache::etag(&reply_body.body));
    Ok(Answer {
        body: reply_body.body,
        content_type: reply_body.content_type,
        headers,
        upstream_time,
        etag,
    })
}

/// Why an upstream call failed, as the gateway answers it: the service's
/// status with its details and allowlisted metadata, or the transport's
/// or the deadline's failure.
pub(super) fn call_failed(
    snapshot: &Snapshot,
    plan: &MethodPlan,
    deadline: Deadline,
    error: CallError,
) -> GatewayError {
    match error {
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
    }
}

/// A background revalidation: the same anonymous GET, with a fresh deadline.
pub(super) async fn refetch(
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
        IfAbandoned::FollowBudget,
        // A background refresh is no client's request: a trace of its own,
        // and nothing to report.
        &Trace::start(&HeaderMap::new(), false),
        &mut Observed::default(),
    )
    .await
}
