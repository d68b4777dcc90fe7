//! The admin listener (`[admin] listen`), kept apart from the public one:
//! liveness, readiness (every upstream has a live connection), each
//! upstream's endpoints and counters (`/upstreams`), purging the
//! gateway's response cache by surrogate key, the compiled route table
//! (`/routes`), the effective configuration without secrets (`/config`),
//! `POST /reload` (the same reload as SIGHUP), and Prometheus metrics
//! (`/metrics`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::json;

use crate::pipeline::Gateway;
use crate::snapshot::diff::ConfigDiff;

/// The admin router.
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(ready))
        .route("/cache/purge", post(purge))
        .route("/upstreams", get(upstreams))
        .route("/routes", get(routes))
        .route("/config", get(config))
        .route("/metrics", get(metrics))
        .with_state(gateway)
}

/// What `POST /reload` runs: the reload SIGHUP runs, answering what
/// changed or the rendered diagnostics of a config that does not compile.
pub type Reloader = Arc<dyn Fn() -> BoxFuture<'static, Result<ConfigDiff, String>> + Send + Sync>;

/// [`router`] with `POST /reload`.
pub fn router_with_reload(gateway: Arc<Gateway>, reload: Reloader) -> Router {
    router(gateway).route(
        "/reload",
        post(move || {
            let reload = reload.clone();
            async move {
                match reload().await {
                    Ok(diff) => Json(json!({"reloaded": true, "changes": diff})).into_response(),
                    // The old configuration keeps serving.
                    Err(diagnostics) => (
                        StatusCode::UNPROCESSABLE_ENTITY,
                        Json(json!({"reloaded": false, "diagnostics": diagnostics})),
                    )
                        .into_response(),
                }
            }
        }),
    )
}

/// The compiled route table, one object per binding.
async fn routes(State(gateway): State<Arc<Gateway>>) -> Json<serde_json::Value> {
    let snapshot = gateway.snapshot();
    let routes: Vec<serde_json::Value> = (snapshot.plans.iter())
        .map(|plan| {
            let summary = plan.summary();
            json!({
                "method": summary.http_method,
                "template": summary.template,
                "grpc_method": summary.grpc_method,
                "upstream": summary.upstream,
                "auth": summary.auth,
                "body": summary.body,
                "timeout_ms": millis(summary.timeout),
                "cache": {
                    "public": plan.cache.public,
                    "gateway": plan.cache.gateway,
                    "fresh_for_ms": millis(plan.cache.fresh_for),
                    "stale_while_revalidate_ms": millis(plan.cache.stale_while_revalidate),
                    "stale_if_error_ms": millis(plan.cache.stale_if_error),
                    "vary": plan.cache.vary_names.iter().map(|h| h.as_str()).collect::<Vec<_>>(),
                },
            })
        })
        .collect();
    Json(json!({ "routes": routes }))
}

/// The effective configuration, as compiled: settings, upstreams and the
/// cache budget. Secrets (HMAC keys, API keys, private keys) are compiled
/// into the auth and TLS policies, which are not shown.
async fn config(State(gateway): State<Arc<Gateway>>) -> Json<serde_json::Value> {
    let snapshot = gateway.snapshot();
    let settings = &snapshot.settings;
    let (listener, limits) = (&settings.listener, &settings.limits);
    let upstreams: Vec<serde_json::Value> = (snapshot.upstreams.iter())
        .map(|u| {
            let config = u.config();
            let pool = &config.pool;
            json!({
                "name": u.name,
                "discovery": format!("{:?}", pool.discovery),
                "tls": pool.tls.is_some(),
                "connections": pool.connections_per_endpoint(),
                "connect_timeout_ms": millis(pool.connect_timeout),
                "keepalive_interval_ms": millis(pool.keepalive_interval),
                "keepalive_timeout_ms": millis(pool.keepalive_timeout),
                "health_check": pool.health.is_some(),
                "timeout_ms": millis(config.timeout),
                "max_message_bytes": config.max_message_bytes,
                "max_concurrent_calls": config.max_concurrent_calls,
                "cancel_budget": {
                    "burst": pool.cancel.burst,
                    "per_second": pool.cancel.per_second,
                    "max_left_running": pool.cancel.max_left_running,
                },
            })
        })
        .collect();
    Json(json!({
        "server": {
            "listen": listener.listen.to_string(),
            "tls": listener.tls.is_some(),
            "header_read_timeout_ms": millis(listener.header_read_timeout),
            "shutdown_grace_ms": millis(listener.shutdown_grace),
            "drain_delay_ms": millis(listener.drain_delay),
            "http2_max_concurrent_streams": listener.http2_max_concurrent_streams,
            "first_request_timeout_ms": millis(listener.first_request_timeout),
            "idle_timeout_ms": millis(listener.idle_timeout),
            "send_timeout_ms": millis(listener.send_timeout),
            "max_buffered_response_bytes": listener.max_buffered_response_bytes,
            "max_connections": listener.max_connections,
            "worker_threads": listener.worker_threads,
            "access_log": settings.access_log,
        },
        "admin": settings.admin.map(|a| a.to_string()),
        "limits": {
            "max_body_bytes": limits.max_body_bytes,
            "max_json_depth": limits.max_json_depth,
            "max_path_bytes": limits.max_path_bytes,
            "max_query_bytes": limits.max_query_bytes,
            "max_headers": limits.max_headers,
            "max_header_bytes": limits.max_header_bytes,
            "max_concurrent_requests": limits.max_concurrent_requests,
            "max_multipart_part_bytes": limits.max_multipart_part_bytes,
            "max_multipart_parts": limits.max_multipart_parts,
        },
        "cors": settings.edge.cors.as_ref().map(|c| json!({
            "allow_origins": c.allow_origins,
            "allow_credentials": c.allow_credentials,
            "max_age_ms": millis(c.max_age),
        })),
        "compression": settings.edge.compression.as_ref().map(|c| json!({"min_bytes": c.min_bytes})),
        "response_cache_max_bytes": snapshot.response_cache.as_ref().map(|c| c.max_bytes()),
        "upstreams": upstreams,
        "routes": snapshot.plans.len(),
    }))
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
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
    // A draining gateway is not ready, so load balancers stop sending to
    // it while it still serves what they send meanwhile.
    let draining = gateway.is_draining();
    let ready = !draining && snapshot.upstreams.iter().all(|u| u.pool.connected() > 0);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({"ready": ready, "draining": draining, "upstreams": upstreams})),
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
