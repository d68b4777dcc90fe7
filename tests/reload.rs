//! Reloads that keep everything warm: under load, a reload drops no
//! request, keeps the upstream pools whose settings did not change (no new
//! connection to the upstream), keeps the response cache of routes that did
//! not change, and applies CORS at once; a broken config keeps the old one.

mod support;

use std::path::Path;
use std::sync::atomic::Ordering;

use support::*;

/// ListShelves is not cached (the load goes to the upstream); GetShelf is
/// kept in the gateway cache for an hour. CORS allows one origin.
fn routes(upstream: std::net::SocketAddr, connections: u32, origin: &str) -> String {
    one_route_toml(
        "bookstore/v1/bookstore.proto",
        "bookstore.v1.Bookstore",
        "bookstore",
        upstream,
        &format!("connections = {connections}"),
        &format!(
            "[routes.methods.GetShelf]\n\
             cache = {{ public = true, max_age = \"1h\", gateway = true }}\n\
             [cors]\n\
             allow_origins = [\"{origin}\"]\n"
        ),
    )
}

fn write_routes(path: &Path, toml: &str) {
    std::fs::write(path, toml.replace("{proto}", PROTO_DIR)).expect("write routes.toml");
}

async fn cache_status(gateway: &TestGateway) -> String {
    let response = client()
        .get(format!("{}/v1/shelves/1", gateway.base))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let status = response.headers().get("x-cache").expect("x-cache").clone();
    status.to_str().expect("ascii").to_string()
}

/// The origin CORS allowed for a request from `origin`, if any.
async fn allowed_origin(gateway: &TestGateway, origin: &str) -> Option<String> {
    let response = client()
        .get(format!("{}/v1/shelves", gateway.base))
        .header("origin", origin)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let allowed = response.headers().get("access-control-allow-origin");
    allowed.map(|v| v.to_str().expect("ascii").to_string())
}

fn origin(generation: usize) -> String {
    format!("https://app{generation}.example.com")
}

const CLIENTS: usize = 64;
/// The load stops when the reloads are done; this bounds it if they hang.
const MAX_REQUESTS_PER_CLIENT: usize = 2_000;
const RELOADS: usize = 10;
/// The reload that changes the upstream's settings (its connection count).
const UPSTREAM_CHANGE: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_fail_no_request_and_keep_what_did_not_change() {
    let (upstream, accepted, _) = spawn_counting_bookstore(None).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("routes.toml");
    write_routes(&path, &routes(upstream, 2, &origin(0)));
    let (gateway, handle) = spawn_gateway_from(&path).await;
    assert_eq!(cache_status(&gateway).await, "miss");
    assert_eq!(cache_status(&gateway).await, "hit");

    // 64 clients, each on its own connection, looping until the reloads
    // are done (bounded: at most MAX_REQUESTS_PER_CLIENT each).
    let (done_tx, done) = tokio::sync::watch::channel(0usize);
    let done_tx = std::sync::Arc::new(done_tx);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (client, url, done_tx, stop) = (
                client(),
                format!("{}/v1/shelves", gateway.base),
                done_tx.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                let mut failures = Vec::new();
                for _ in 0..MAX_REQUESTS_PER_CLIENT {
                    if *stop.borrow() {
                        break;
                    }
                    match client.get(&url).send().await {
                        Ok(response) if response.status() == 200 => {}
                        Ok(response) => failures.push(response.status().to_string()),
                        Err(e) => failures.push(e.to_string()),
                    }
                    done_tx.send_modify(|n| *n += 1);
                }
                failures
            })
        })
        .collect();

    let mut live = 0; // the generation of the config being served
    for reload in 1..=RELOADS {
        // Each reload waits for another round of requests from the load.
        let mut progress = done.clone();
        let target = *progress.borrow() + CLIENTS;
        progress.wait_for(|n| *n >= target).await.expect("clients");
        let before = accepted.load(Ordering::SeqCst);
        if reload % 2 == 0 {
            // Broken: an unknown upstream. The old config keeps serving.
            let broken = routes(upstream, 2, &origin(reload)).replace(
                "upstream = \"bookstore\"",
                "upstream = \"no-such-upstream\"",
            );
            write_routes(&path, &broken);
            assert!(!protogate::cli::reload(&handle, None, &path).await);
            assert_eq!(accepted.load(Ordering::SeqCst), before);
            assert_eq!(cache_status(&gateway).await, "hit");
        } else if reload == UPSTREAM_CHANGE + 1 {
            write_routes(&path, &routes(upstream, 3, &origin(reload)));
            assert!(protogate::cli::reload(&handle, None, &path).await);
            live = reload;
            assert_eq!(
                accepted.load(Ordering::SeqCst),
                before + 3,
                "a changed upstream is dialled anew: three new connections"
            );
            // Its answers came from the upstream that was replaced.
            assert_eq!(cache_status(&gateway).await, "miss");
        } else {
            let connections = if live > UPSTREAM_CHANGE { 3 } else { 2 };
            write_routes(&path, &routes(upstream, connections, &origin(reload)));
            assert!(protogate::cli::reload(&handle, None, &path).await);
            live = reload;
            assert_eq!(
                accepted.load(Ordering::SeqCst),
                before,
                "reload {reload} kept the pool: no new upstream connection"
            );
            assert_eq!(
                cache_status(&gateway).await,
                "hit",
                "reload {reload} kept the cache of an unchanged route"
            );
        }
        // CORS follows the config being served, without a restart.
        assert_eq!(
            allowed_origin(&gateway, &origin(live)).await,
            Some(origin(live))
        );
        if live > 0 {
            assert_eq!(allowed_origin(&gateway, &origin(0)).await, None);
        }
    }
    // The load ran through every reload: no client reached its bound.
    stop_tx.send_replace(true);
    let mut failures = Vec::new();
    for client in clients {
        failures.extend(client.await.expect("client task"));
    }
    assert_eq!(failures, Vec::<String>::new(), "no request failed");
    let sent = *done.borrow();
    assert!(
        ((RELOADS + 1) * CLIENTS..CLIENTS * MAX_REQUESTS_PER_CLIENT).contains(&sent),
        "{sent} requests"
    );
}
