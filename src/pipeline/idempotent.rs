//! A write that takes an `Idempotency-Key`: before the call, the key is
//! claimed (or its stored answer replayed, or the retry refused); after
//! it, the answer is stored when it is the service's own (a success, or a
//! 4xx status the service chose) and the key released when a retry might
//! fare better (a transport failure, a deadline, a 5xx, a request the
//! gateway refused before calling).

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header, request::Parts};

use crate::auth::Identity;
use crate::error::GatewayError;
use crate::headers::{IDEMPOTENCY_REPLAYED, SERVER_TIMING};
use crate::idempotency::{Begun, Fingerprint, Scope, StoredAnswer, Ticket, parse_key};
use crate::metadata;
use crate::plan::MethodPlan;
use crate::response_cache::X_CACHE;
use crate::snapshot::Snapshot;
use crate::upstream::Deadline;

/// What the store said about a request.
pub(super) enum Keyed {
    /// Call the upstream; finish the ticket, if any, with the answer.
    Call(Option<Ticket>),
    /// The key's answer, replayed: no call.
    Replayed(Response),
}

/// Claims the request's key, if its binding takes keys and it sent one.
pub(super) async fn begin(
    snapshot: &Snapshot,
    plan: &MethodPlan,
    parts: &Parts,
    path: &str,
    identity: &Identity,
    body: &Bytes,
    deadline: Deadline,
) -> Result<Keyed, GatewayError> {
    let (Some(policy), Some(store)) = (&plan.idempotency, &snapshot.idempotency) else {
        return Ok(Keyed::Call(None));
    };
    let Some(key) = parse_key(&parts.headers)? else {
        if policy.required {
            return Err(crate::idempotency::IdempotencyError::MissingKey.into());
        }
        return Ok(Keyed::Call(None));
    };
    let fingerprint = Fingerprint::of(
        &parts.method,
        path,
        parts.uri.query(),
        parts
            .headers
            .get(header::CONTENT_TYPE)
            .map(HeaderValue::as_bytes),
        body,
    );
    let scope = scope(identity, parts, snapshot);
    // A gateway that dies mid-call holds the key no longer than the call could run.
    let lease = deadline.remaining().max(std::time::Duration::from_secs(1));
    Ok(
        // Boxed: only keyed writes pay for the store's future (see `serve`).
        match Box::pin(store.begin(policy, &scope, &key, fingerprint, lease)).await? {
            Begun::Run(ticket) => Keyed::Call(Some(ticket)),
            Begun::Replay(answer) => Keyed::Replayed(replay(answer)),
        },
    )
}

/// Whose key it is: the authenticated consumer (the provider that admitted
/// it, and its API key consumer or token `sub`), else the client address.
fn scope(identity: &Identity, parts: &Parts, snapshot: &Snapshot) -> Scope {
    let who = identity.consumer.as_ref().or(identity.subject.as_ref());
    if let (Some(via), Some(who)) = (&identity.via, who) {
        return Scope::consumer(via, who);
    }
    let client = metadata::client_ip(parts, snapshot.settings.forwarding.trusted_proxy_hops);
    Scope::client(&client.map_or_else(|| "unknown".to_string(), |ip| ip.to_string()))
}

/// Stores the outcome of a keyed call, or releases the key; returns the answer.
pub(super) async fn finish(
    ticket: Ticket,
    outcome: Result<Response, GatewayError>,
) -> Result<Response, GatewayError> {
    let response = match outcome {
        Ok(response) => response,
        Err(error) if is_business_refusal(&error) => error.into_response(),
        Err(error) => {
            ticket.release().await;
            return Err(error);
        }
    };
    let (parts, body) = response.into_parts();
    // The answer's body is already whole in memory (a unary call).
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(body) => body,
        Err(error) => {
            ticket.release().await;
            return Err(GatewayError::Internal(format!("answer body: {error}")));
        }
    };
    let mut stored = StoredAnswer {
        status: parts.status,
        headers: parts.headers.clone(),
        body: body.clone(),
    };
    // Facts about this one exchange, not about the representation.
    for name in [SERVER_TIMING, X_CACHE, header::AGE] {
        stored.headers.remove(name);
    }
    ticket.finish(&stored).await;
    Ok(Response::from_parts(parts, Body::from(body)))
}

/// The service's own answer to a well-formed request: a status that maps to
/// 4xx. Retrying it gets the same answer, so it is stored like a success.
fn is_business_refusal(error: &GatewayError) -> bool {
    matches!(error, GatewayError::Upstream(_)) && error.status().is_client_error()
}

fn replay(answer: StoredAnswer) -> Response {
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = answer.status;
    *response.headers_mut() = answer.headers;
    response
        .headers_mut()
        .insert(IDEMPOTENCY_REPLAYED, HeaderValue::from_static("true"));
    if response.status() == StatusCode::NO_CONTENT {
        response.headers_mut().remove(header::CONTENT_LENGTH);
    }
    response
}
