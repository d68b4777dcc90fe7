//! `protogate serve --watch`: editing routes.toml on disk reloads it (no
//! SIGHUP), and an edit that does not compile keeps the old config serving.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// What the gateway has logged so far, one line per entry.
type Log = Arc<Mutex<Vec<String>>>;

/// The gateway binary with `--watch` on `config`; returns it, its address
/// and its log.
async fn serve_watching(config: &Path) -> (Child, SocketAddr, Log) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_protogate"))
        .args([
            "--log-format",
            "json",
            "serve",
            "--watch",
            "--listen",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn protogate");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.expect("read stderr") {
            let Ok(log) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if log["fields"]["message"] == "protogate listening" {
                return log["fields"]["listen"]
                    .as_str()
                    .expect("listen")
                    .parse()
                    .expect("addr");
            }
        }
        panic!("the gateway exited before listening");
    })
    .await
    .expect("listening within 30 s");
    let log = Log::default();
    let keep = log.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            keep.lock().expect("lock").push(line);
        }
    });
    (child, addr, log)
}

/// Waits until the log has a line containing `text` (within 20 s).
async fn until_logged(log: &Log, text: &str) {
    for _ in 0..1000 {
        if log.lock().expect("lock").iter().any(|l| l.contains(text)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the gateway never logged {text:?}");
}

/// Asks until `url` answers `status` (each try a real request), within 20 s.
async fn until_status(url: &str, status: u16) {
    for _ in 0..1000 {
        if client().get(url).send().await.expect("send").status() == status {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{url} never answered {status}");
}

#[tokio::test]
async fn an_edit_on_disk_is_reloaded_and_a_broken_edit_keeps_the_old_config() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("routes.toml");
    let hidden = everything_toml(
        scripted.addr,
        "[routes.methods.EchoQuery]\nexpose = false\n",
    )
    .replace("{proto}", PROTO_DIR);
    std::fs::write(&path, &hidden).expect("write");
    let (_gateway, addr, log) = serve_watching(&path).await;
    let url = format!("http://{addr}/v1/echo?string_value=x");
    assert_eq!(
        client().get(&url).send().await.expect("send").status(),
        405,
        "GET /v1/echo is not bound yet"
    );

    // Expose the method: the edit alone (no signal) makes it answer.
    let shown = everything_toml(scripted.addr, "").replace("{proto}", PROTO_DIR);
    std::fs::write(&path, &shown).expect("write");
    until_status(&url, 200).await;

    // A broken edit is refused; the last good config keeps serving.
    std::fs::write(
        &path,
        format!("{shown}\n[[routes]]\nservice = \"no.Such\"\n"),
    )
    .expect("write");
    until_logged(&log, "reload failed").await;
    assert_eq!(client().get(&url).send().await.expect("send").status(), 200);
    let hidden_again = hidden.clone();
    std::fs::write(&path, hidden_again).expect("write");
    until_status(&url, 405).await;
}
