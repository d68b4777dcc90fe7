//! What an operator sees of a configuration: the admin listener's `/routes`
//! and `/config` (never a secret), and `protogate check --diff OLD` /
//! `--against http://ADMIN`, which print what a reload would change.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use support::*;
use tokio::net::TcpListener;

/// Serves the gateway's admin router on 127.0.0.1:0.
async fn admin(gateway: &TestGateway) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
    let addr = listener.local_addr().expect("addr");
    let router = protogate::admin::router(gateway.gateway.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

/// `protogate check --config NEW <extra>`: exit status and stdout.
fn check(new: &Path, extra: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_protogate"))
        .arg("check")
        .arg("--config")
        .arg(new)
        .args(extra)
        .env("RUST_LOG", "off")
        .output()
        .expect("run check");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, toml: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, toml.replace("{proto}", PROTO_DIR)).expect("write");
    path
}

fn upstream_addr() -> SocketAddr {
    "127.0.0.1:50051".parse().expect("addr")
}

#[tokio::test]
async fn admin_routes_and_config_show_the_compiled_table_and_settings_but_no_secret() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (provider, _mint) = hmac_provider(dir.path());
    let secret = std::fs::read_to_string(dir.path().join("t.secret")).expect("secret");
    let gateway = spawn_gateway(&format!(
        "{}{provider}",
        everything_toml(scripted.addr, "[routes.methods.Echo]\nauth = \"t\"\n")
    ))
    .await;
    let admin = admin(&gateway).await;
    let routes: serde_json::Value = client()
        .get(format!("http://{admin}/routes"))
        .send()
        .await
        .expect("routes")
        .json()
        .await
        .expect("json");
    let echo = routes
        .as_array()
        .expect("array")
        .iter()
        .find(|r| r["method"] == "POST" && r["template"] == "/v1/echo")
        .expect("POST /v1/echo");
    assert_eq!(echo["grpc_method"], "testing.v1.EverythingService.Echo");
    assert_eq!(echo["auth"], "t");
    assert_eq!(
        echo["retry"]["on"],
        serde_json::json!([]),
        "a POST is not retried on a code"
    );
    let get = routes
        .as_array()
        .expect("array")
        .iter()
        .find(|r| r["method"] == "GET" && r["template"] == "/v1/echo")
        .expect("GET /v1/echo");
    assert_eq!(get["retry"]["on"], serde_json::json!(["unavailable"]));

    let config = client()
        .get(format!("http://{admin}/config"))
        .send()
        .await
        .expect("config")
        .text()
        .await
        .expect("text");
    assert!(!config.contains(secret.trim()), "no secret in /config");
    let config: serde_json::Value = serde_json::from_str(&config).expect("json");
    assert_eq!(config["upstreams"][0]["name"], "echo");
    assert_eq!(
        config["upstreams"][0]["current_endpoints"],
        serde_json::json!([scripted.addr.to_string()])
    );
    assert_eq!(
        config["settings"]["limits"]["max_concurrent_requests"],
        4096
    );
    assert_eq!(config["routes"], routes);
}

#[test]
fn check_diff_prints_the_routes_and_upstreams_a_reload_would_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = write(
        dir.path(),
        "old.toml",
        &everything_toml(upstream_addr(), ""),
    );
    let new = write(
        dir.path(),
        "new.toml",
        &everything_toml_with(
            upstream_addr(),
            "max_concurrent_calls = 10",
            "timeout = \"2s\"\n[routes.methods.EchoPath]\nexpose = false\n",
        ),
    );
    let (ok, stdout, stderr) = check(&new, &["--diff", old.to_str().expect("utf-8")]);
    assert!(ok, "{stderr}");
    let changes: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("a reload from"))
        .collect();
    assert!(changes[0].ends_with("changes:"), "{stdout}");
    assert!(
        changes.iter().any(|l| l.starts_with("- GET /v1/echo/")),
        "the unexposed method's binding is removed: {changes:?}"
    );
    assert!(
        changes
            .iter()
            .any(|l| l.starts_with("~ POST /v1/echo: ") && l.contains("timeout: 5s → 2s")),
        "{changes:?}"
    );
    assert!(
        changes.contains(&"~ upstream echo: max_concurrent_calls: 1024 → 10"),
        "{changes:?}"
    );

    let (ok, stdout, _) = check(&new, &["--diff", new.to_str().expect("utf-8")]);
    assert!(ok);
    assert!(stdout.contains("changes no route or upstream"), "{stdout}");
}

#[tokio::test]
async fn check_against_a_running_gateway_compares_with_what_it_serves() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, "")).await;
    let admin = admin(&gateway).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let new = write(
        dir.path(),
        "new.toml",
        &everything_toml(scripted.addr, "[routes.methods.Echo]\ntimeout = \"1s\"\n"),
    );
    let url = format!("http://{admin}");
    let (ok, stdout, stderr) =
        tokio::task::spawn_blocking(move || check(&new, &["--against", &url]))
            .await
            .expect("check");
    assert!(ok, "{stderr}");
    let changes: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("a reload from"))
        .skip(1)
        .collect();
    assert_eq!(changes.len(), 1, "only Echo's timeout changes: {changes:?}");
    assert!(
        changes[0].starts_with("~ POST /v1/echo: timeout: 5s → 1s"),
        "{changes:?}"
    );
}
