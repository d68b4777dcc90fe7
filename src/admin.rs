//! The admin listener (`[admin] listen`), kept apart from the public one:
//! liveness, readiness (every upstream has a live connection) and purging
//! the gateway's response cache by surrogate key.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
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
