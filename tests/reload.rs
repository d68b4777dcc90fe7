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
async fn allowed_origin(base: &str, origin: &str) -> Option<String> {
    let response = client()
        .get(format!("{base}/v1/shelves"))
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
            allowed_origin(&gateway.base, &origin(live)).await,
            Some(origin(live))
        );
        if live > 0 {
            assert_eq!(allowed_origin(&gateway.base, &origin(0)).await, None);
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

/// The admin router of a gateway started from `path`, with `POST /reload`
/// running the reload SIGHUP runs.
async fn spawn_admin(
    handle: std::sync::Arc<protogate::pipeline::Gateway>,
    path: &Path,
) -> std::net::SocketAddr {
    let path = path.to_path_buf();
    let gateway = handle.clone();
    let reloader: protogate::admin::Reloader = std::sync::Arc::new(move || {
        let (gateway, path) = (gateway.clone(), path.clone());
        Box::pin(async move { protogate::cli::reload_with_report(&gateway, None, &path).await })
    });
    let router = protogate::admin::router_with_reload(handle, reloader);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind admin");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

async fn admin_json(admin: std::net::SocketAddr, path: &str) -> serde_json::Value {
    let response = client()
        .get(format!("http://{admin}{path}"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    response.json().await.expect("json")
}

#[tokio::test]
async fn admin_routes_lists_the_compiled_table() {
    let (upstream, _, _) = spawn_counting_bookstore(None).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("routes.toml");
    write_routes(&path, &routes(upstream, 2, &origin(0)));
    let (_gateway, handle) = spawn_gateway_from(&path).await;
    let admin = spawn_admin(handle, &path).await;

    let listed = admin_json(admin, "/routes").await;
    let routes = listed["routes"].as_array().expect("routes");
    let find = |method: &str, template: &str| {
        routes
            .iter()
            .find(|r| r["method"] == method && r["template"] == template)
            .unwrap_or_else(|| panic!("no {method} {template} in {listed:#}"))
    };
    let get_shelf = find("GET", "/v1/shelves/{shelf}");
    assert_eq!(get_shelf["grpc_method"], "bookstore.v1.Bookstore.GetShelf");
    assert_eq!(get_shelf["upstream"], "bookstore");
    assert_eq!(get_shelf["cache"]["gateway"], true);
    assert_eq!(get_shelf["cache"]["fresh_for_ms"], 3_600_000);
    let create = find("POST", "/v1/shelves");
    assert_eq!(create["body"], "shelf");
    assert_eq!(create["cache"]["gateway"], false);
    let count = binding_count(&path);
    assert_eq!(routes.len(), count);
}

/// How many bindings `check` reports for the routes.toml at `path`.
fn binding_count(path: &Path) -> usize {
    let loaded = protogate::config::load(path).unwrap_or_else(|_| panic!("loads"));
    let compiled = protogate::snapshot::compile(&loaded).unwrap_or_else(|_| panic!("compiles"));
    compiled.plans.len()
}

#[tokio::test]
async fn admin_config_shows_the_effective_settings_and_no_secret() {
    let (upstream, _, _) = spawn_counting_bookstore(None).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (provider, _) = hmac_provider(dir.path());
    let secret = std::fs::read_to_string(dir.path().join("t.secret")).expect("secret");
    let path = dir.path().join("routes.toml");
    let toml = routes(upstream, 2, &origin(0))
        + "[routes.methods.CreateShelf]\nauth = \"t\"\n"
        + &provider;
    write_routes(&path, &toml);
    let (_gateway, handle) = spawn_gateway_from(&path).await;
    let admin = spawn_admin(handle, &path).await;

    let config = admin_json(admin, "/config").await;
    assert_eq!(config["server"]["drain_delay_ms"], 5_000);
    assert_eq!(config["server"]["listen"], "127.0.0.1:8080");
    assert_eq!(config["cors"]["allow_origins"][0], origin(0));
    assert_eq!(config["upstreams"][0]["name"], "bookstore");
    assert_eq!(config["upstreams"][0]["connections"], 2);
    assert!(config["response_cache_max_bytes"].as_u64().is_some());
    let text = config.to_string();
    assert!(!text.contains(&secret), "the HMAC secret leaked: {text}");
}

#[tokio::test]
async fn admin_post_reload_answers_what_changed_or_why_not() {
    let (upstream, accepted, _) = spawn_counting_bookstore(None).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("routes.toml");
    write_routes(&path, &routes(upstream, 2, &origin(0)));
    let (gateway, handle) = spawn_gateway_from(&path).await;
    let admin = spawn_admin(handle, &path).await;
    let reload = || async {
        let response = client()
            .post(format!("http://{admin}/reload"))
            .send()
            .await
            .expect("send");
        let status = response.status().as_u16();
        (
            status,
            response.json::<serde_json::Value>().await.expect("json"),
        )
    };

    let broken = routes(upstream, 3, &origin(1)).replace(
        "upstream = \"bookstore\"",
        "upstream = \"no-such-upstream\"",
    );
    write_routes(&path, &broken);
    let (status, answer) = reload().await;
    assert_eq!(status, 422, "{answer:#}");
    assert_eq!(answer["reloaded"], false);
    let diagnostics = answer["diagnostics"].as_str().expect("diagnostics");
    assert!(diagnostics.contains("no-such-upstream"), "{diagnostics}");
    assert_eq!(
        allowed_origin(&gateway.base, &origin(0)).await,
        Some(origin(0))
    );

    let before = accepted.load(Ordering::SeqCst);
    write_routes(&path, &routes(upstream, 3, &origin(1)));
    let (status, answer) = reload().await;
    assert_eq!(status, 200, "{answer:#}");
    assert_eq!(answer["reloaded"], true);
    assert_eq!(
        answer["changes"]["upstreams_changed"],
        serde_json::json!(["bookstore"])
    );
    assert_eq!(answer["changes"]["routes_changed"], serde_json::json!([]));
    assert_eq!(accepted.load(Ordering::SeqCst), before + 3);
    assert_eq!(
        allowed_origin(&gateway.base, &origin(1)).await,
        Some(origin(1))
    );
}

/// `protogate check --config NEW --diff OLD`.
fn check_diff(old: &Path, new: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_protogate"))
        .args(["check", "--config"])
        .arg(new)
        .arg("--diff")
        .arg(old)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "off")
        .output()
        .expect("run protogate")
}

#[test]
fn check_diff_prints_route_upstream_auth_and_restart_changes() {
    let upstream: std::net::SocketAddr = "127.0.0.1:50051".parse().expect("addr");
    let dir = tempfile::tempdir().expect("tempdir");
    let (provider, _) = hmac_provider(dir.path());
    let old = dir.path().join("old.toml");
    write_routes(&old, &(routes(upstream, 2, &origin(0)) + &provider));
    let new = dir.path().join("new.toml");
    let changed = routes(upstream, 3, &origin(1))
        .replace("[server]\n", "[server]\nlisten = \"127.0.0.1:9090\"\n")
        + "[routes.methods.DeleteShelf]\nexpose = false\n\
          [routes.methods.CreateShelf]\nauth = \"t\"\n\
          [routes.methods.WatchShelf]\nstream_idle_timeout = \"1m\"\n"
        + &provider;
    write_routes(&new, &changed);

    let output = check_diff(&old, &new);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let auth = lines
        .iter()
        .position(|l| l.starts_with("auth changed: POST /v1/shelves: "))
        .unwrap_or_else(|| panic!("no auth change in {stdout}"));
    let mut others = lines.clone();
    others.remove(auth);
    assert_eq!(
        others,
        [
            "route removed: DELETE /v1/shelves/{shelf}",
            "route changed: GET /v1/shelves/{shelf}:watch",
            "route changed: POST /v1/shelves",
            "upstream changed: bookstore",
            "needs a restart: [server] listen",
            "6 change(s)",
        ]
    );

    // The same file against itself changes nothing.
    let output = check_diff(&old, &old);
    assert!(output.status.success());
    assert_eq!(String::from_utf8_lossy(&output.stdout), "0 change(s)\n");
}

/// The JSON log lines of a gateway process, read as they come.
struct ProcessLog(tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>);

impl ProcessLog {
    /// Waits (at most 30 s) for the next line whose message is `message`.
    async fn until(&mut self, message: &str) -> serde_json::Value {
        let mut seen = Vec::new();
        let wait = async {
            while let Some(line) = self.0.recv().await {
                if line["fields"]["message"] == message {
                    return Some(line);
                }
                seen.push(line);
            }
            None
        };
        match tokio::time::timeout(std::time::Duration::from_secs(30), wait).await {
            Ok(Some(line)) => line,
            _ => panic!("no log line {message:?}"),
        }
    }
}

/// The gateway process, killed by its PID when the test ends.
struct Process(std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve_watching(config: &Path) -> (Process, ProcessLog) {
    use tokio::io::AsyncBufReadExt as _;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_protogate"))
        .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"])
        .args(["--watch", "--watch-debounce", "100ms", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start protogate");
    let stderr = tokio::process::ChildStderr::from_std(child.stderr.take().expect("stderr"))
        .expect("async stderr");
    let (send, lines) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut reader = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            let parsed = serde_json::from_str(&line).unwrap_or(serde_json::Value::String(line));
            if send.send(parsed).is_err() {
                return;
            }
        }
    });
    (Process(child), ProcessLog(lines))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_watch_reloads_when_routes_toml_or_a_key_file_changes() {
    let (upstream, _, _) = spawn_counting_bookstore(None).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // The secret lives apart from routes.toml: its own directory is watched.
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).expect("mkdir keys");
    let (provider, _) = hmac_provider(&keys);
    let path = dir.path().join("routes.toml");
    let toml = |generation| routes(upstream, 2, &origin(generation)) + &provider;
    write_routes(&path, &toml(0));
    let (_process, mut log) = serve_watching(&path);
    let line = log.until("protogate listening").await;
    let listen = line["fields"]["listen"]
        .as_str()
        .expect("listen")
        .to_string();
    log.until("watching routes.toml and the files it names")
        .await;
    let base = format!("http://{listen}");
    assert_eq!(allowed_origin(&base, &origin(0)).await, Some(origin(0)));

    write_routes(&path, &toml(1));
    let reloaded = log.until("reloaded routes.toml").await;
    assert_eq!(reloaded["fields"]["upstreams_kept"], 1);
    assert_eq!(allowed_origin(&base, &origin(1)).await, Some(origin(1)));

    // A broken save is reported and changes nothing.
    write_routes(
        &path,
        &toml(2).replace("upstream = \"bookstore\"", "upstream = \"nope\""),
    );
    log.until("reload failed; still serving the previous configuration")
        .await;
    assert_eq!(allowed_origin(&base, &origin(1)).await, Some(origin(1)));
    write_routes(&path, &toml(1));
    log.until("reloaded routes.toml").await;

    // A key file named by routes.toml, in another directory.
    std::fs::write(
        keys.join("t.secret"),
        "another secret of at least thirty-two bytes",
    )
    .expect("rewrite secret");
    log.until("reloaded routes.toml").await;
}

#[tokio::test]
async fn a_reload_drops_the_cached_answers_of_a_changed_route_only() {
    let (upstream, _, _) = spawn_counting_bookstore(None).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("routes.toml");
    let toml = |shelf_age: &str| {
        one_route_toml(
            "bookstore/v1/bookstore.proto",
            "bookstore.v1.Bookstore",
            "bookstore",
            upstream,
            "connections = 1",
            &format!(
                "[routes.methods.GetShelf]\n\
                 cache = {{ public = true, max_age = \"{shelf_age}\", gateway = true }}\n\
                 [routes.methods.ListBooks]\n\
                 cache = {{ public = true, max_age = \"1h\", gateway = true }}\n"
            ),
        )
    };
    write_routes(&path, &toml("1h"));
    let (gateway, handle) = spawn_gateway_from(&path).await;
    let x_cache = |path: &'static str| {
        let url = format!("{}{path}", gateway.base);
        async move {
            let response = client().get(url).send().await.expect("send");
            assert_eq!(response.status(), 200);
            let status = response.headers().get("x-cache").expect("x-cache");
            status.to_str().expect("ascii").to_string()
        }
    };
    for path in ["/v1/shelves/1", "/v1/shelves/1/books"] {
        assert_eq!(x_cache(path).await, "miss");
        assert_eq!(x_cache(path).await, "hit");
    }

    // GetShelf's cache policy changes; ListBooks is untouched.
    write_routes(&path, &toml("2h"));
    assert!(protogate::cli::reload(&handle, None, &path).await);
    assert_eq!(x_cache("/v1/shelves/1/books").await, "hit");
    assert_eq!(x_cache("/v1/shelves/1").await, "miss");
    assert_eq!(x_cache("/v1/shelves/1").await, "hit");
}

#[tokio::test]
async fn a_reload_turns_compression_off_and_on_without_a_restart() {
    let (upstream, _, _) = spawn_counting_bookstore(None).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("routes.toml");
    let toml = |enabled: bool| {
        routes(upstream, 2, &origin(0))
            + &format!("[compression]\nenabled = {enabled}\nmin_bytes = 1\n")
    };
    write_routes(&path, &toml(true));
    let (gateway, handle) = spawn_gateway_from(&path).await;
    // A client that does not decompress, to see the coding.
    let raw = reqwest::Client::builder()
        .no_gzip()
        .no_brotli()
        .no_zstd()
        .no_deflate()
        .build()
        .expect("client");
    let coding = || async {
        let response = raw
            .get(format!("{}/v1/shelves", gateway.base))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 200);
        let coding = response.headers().get("content-encoding");
        coding.map(|v| v.to_str().expect("ascii").to_string())
    };
    assert_eq!(coding().await.as_deref(), Some("gzip"));

    write_routes(&path, &toml(false));
    assert!(protogate::cli::reload(&handle, None, &path).await);
    assert_eq!(coding().await, None);

    write_routes(&path, &toml(true));
    assert!(protogate::cli::reload(&handle, None, &path).await);
    assert_eq!(coding().await.as_deref(), Some("gzip"));
}

#[tokio::test]
async fn a_reload_applies_a_new_body_limit_without_a_restart() {
    let (upstream, _, _) = spawn_counting_bookstore(None).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("routes.toml");
    let toml = |limit: usize| {
        routes(upstream, 2, &origin(0)) + &format!("[limits]\nmax_body_bytes = {limit}\n")
    };
    write_routes(&path, &toml(4096));
    let (gateway, handle) = spawn_gateway_from(&path).await;
    let create = || async {
        client()
            .post(format!("{}/v1/shelves", gateway.base))
            .header("content-type", "application/json")
            .body(r#"{"theme":"a theme of some forty bytes, give or take"}"#)
            .send()
            .await
            .expect("send")
            .status()
            .as_u16()
    };
    assert_eq!(create().await, 200);

    write_routes(&path, &toml(16));
    assert!(protogate::cli::reload(&handle, None, &path).await);
    assert_eq!(create().await, 413);
}
