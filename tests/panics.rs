//! A panic while one request is served never takes the gateway down: the
//! request gets a 500 with a google.rpc.Status JSON body and its request id,
//! the panic is logged with that id, and the listener goes on serving.
//!
//! The production pipeline has no panic we may keep on purpose, and a
//! panicking route in production code is not acceptable, so the inner
//! service here panics on one path; around it are the real edge layers
//! (`edge::layers`, exactly what `pipeline::service` wraps the pipeline in)
//! served by the real listener over a real socket.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::Router;
use support::*;
use tokio::net::TcpListener;

/// Log output, kept for assertions.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }
}

/// The settings of a plain routes.toml (compression on, no CORS).
fn settings() -> protogate::snapshot::Settings {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("routes.toml");
    let toml = everything_toml("127.0.0.1:9".parse().expect("addr"), "");
    std::fs::write(&path, toml.replace("{proto}", PROTO_DIR)).expect("write");
    let loaded = protogate::config::load(&path).unwrap_or_else(|_| panic!("parses"));
    protogate::snapshot::compile(&loaded)
        .unwrap_or_else(|_| panic!("compiles"))
        .settings
}

#[tokio::test]
async fn a_panicking_request_gets_a_500_with_its_request_id_and_the_server_goes_on() {
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let settings = settings();
    let inner = Router::new().fallback(|request: axum::extract::Request| async move {
        if request.uri().path() == "/panic" {
            panic!("handler bug on purpose");
        }
        "still serving"
    });
    let router = protogate::edge::layers(inner, &settings.edge);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        protogate::server::serve(
            listener,
            router,
            &settings.listener,
            &settings.limits,
            std::future::pending(),
        )
        .await
    });

    let client = client();
    let response = client
        .get(format!("http://{addr}/panic"))
        .header("x-request-id", "panic-req-42")
        .send()
        .await
        .expect("an answer, not a dropped connection");
    assert_eq!(response.status(), 500);
    assert_eq!(response.headers()["x-request-id"], "panic-req-42");
    let body: serde_json::Value = response.json().await.expect("JSON body");
    assert_eq!(body["code"], 13, "{body}");
    assert!(
        !body.to_string().contains("on purpose"),
        "panic details stay in the log: {body}"
    );
    let logged = log.text();
    assert!(
        logged.lines().any(|l| l.contains("panicked")
            && l.contains("panic-req-42")
            && l.contains("on purpose")),
        "{logged}"
    );

    let after = client
        .get(format!("http://{addr}/other"))
        .send()
        .await
        .expect("the listener goes on");
    assert_eq!(after.status(), 200);
    assert_eq!(after.text().await.expect("body"), "still serving");
    server.abort();
}
