//! The admin listener (`[admin] listen`), kept apart from the public one:
//! liveness, readiness (every upstream has a live connection), each
//! upstream's endpoints and counters (`/upstreams`), and purging the
//! gateway's response cache by surrogate key, and Prometheus metrics.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use crate::pipeline::Gateway;

/// The admin router.
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(ready))
        .route("/cache/purge", post(purge))
        .route("/upstreams", get(upstreams))
        .route("/metrics", get(metrics))
        .with_state(gateway)
}

async fn ready(State(gateway): State<Arc<Gateway>>) -> Response {
    let snapshot = gateway.snapshot();
    let upstreams: serde_json::Map<String, serde_json::Value> = snapshot
        .upstreams
        .iter()
        .map(|u| {
            (
                u.name.clone(),
                json!({"connected": u.pool.connected(), "size": u.pool.size()}),
            )
        })
        .collect();
    let ready = snapshot.upstreams.iter().all(|u| u.pool.connected() > 0);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({"ready": ready, "upstreams": upstreams})),
    )
        .into_response()
}

/// Every upstream's endpoints and what the pool knows of them: for
/// operators, and what metrics will export.
async fn upstreams(State(gateway): State<Arc<Gateway>>) -> Json<serde_json::Value> {
    let snapshot = gateway.snapshot();
    let upstreams: Vec<serde_json::Value> = snapshot
        .upstreams
        .iter()
        .map(|u| {
            let counters = u.counters();
            let endpoints: Vec<serde_json::Value> = u
                .pool
                .endpoints()
                .iter()
                .map(|e| {
                    json!({
                        "address": e.authority().as_str(),
                        "connections": e.size(),
                        "connected": e.connected(),
                        "in_flight": e.in_flight(),
                        "calls": e.calls(),
                        "healthy": e.is_healthy(),
                        "ejected": e.outlier().is_ejected(),
                        "last_error": e.last_error().map(|m| m.to_string()),
                    })
                })
                .collect();
            json!({
                "name": u.name,
                "calls": counters.calls.load(Ordering::Relaxed),
                "retries": counters.retries.load(Ordering::Relaxed),
                "retry_budget_exhausted": counters.budget_exhausted.load(Ordering::Relaxed),
                "shed": counters.shed.load(Ordering::Relaxed),
                "calls_in_flight": u.calls_in_flight(),
                "max_concurrent_calls": u.max_concurrent_calls(),
                "endpoints": endpoints,
            })
        })
        .collect();
    Json(json!({ "upstreams": upstreams }))
}

/// Prometheus text format of every metric (see [`crate::metrics`]).
async fn metrics(State(gateway): State<Arc<Gateway>>) -> Response {
    let text = gateway.metrics().render();
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
}

#[derive(Debug, Deserialize)]
struct PurgeQuery {
    /// A surrogate key; absent = everything.
    key: Option<String>,
}

async fn purge(State(gateway): State<Arc<Gateway>>, Query(query): Query<PurgeQuery>) -> Response {
    let snapshot = gateway.snapshot();
    let Some(cache) = &snapshot.response_cache else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"code": 5, "message": "no route uses the gateway cache", "details": []})),
        )
            .into_response();
    };
    match query.key {
        Some(key) => Json(json!({"purged": cache.purge(&key), "key": key})).into_response(),
        None => {
            cache.purge_all();
            Json(json!({"purged": "all"})).into_response()
        }
    }
}
