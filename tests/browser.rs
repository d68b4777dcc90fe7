//! A real browser against the gateway's CORS: headless Chromium (Debian's
//! `chromium`) loads `tests/browser/page.html` from one loopback origin
//! (a tiny server in the test) and `fetch()`es the gateway on another, with
//! a recording proxy in front of the gateway to see the preflight. The page
//! writes each outcome into the DOM; `--dump-dom` hands it back once
//! `--virtual-time-budget` has let the fetches finish.
//!
//! From an allowed origin the simple GET and the preflighted JSON POST with
//! `Authorization` both succeed with credentials; the preflight is answered
//! at the edge and only the two real calls reach the upstream. From any
//! other origin the browser rejects both fetches. Without Chromium these
//! tests fail (CI's `.ci/run` installs it).

#[path = "varnish/recorder.rs"]
mod recorder;
mod support;

use std::convert::Infallible;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use recorder::Recorder;
use support::*;
use tokio::net::TcpListener;

const PAGE: &str = include_str!("browser/page.html");

/// chromium, wherever Debian put it; fails the test with an install hint if missing.
fn chromium() -> PathBuf {
    installed_program(
        "chromium",
        &["/usr/bin/chromium", "/usr/bin/chromium-browser"],
        "chromium",
    )
}

/// Serves `page` as `/page.html` on `listener` until dropped.
struct PageServer {
    origin: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn serve_page(listener: TcpListener, page: String) -> PageServer {
    let origin = format!("http://{}", listener.local_addr().expect("addr"));
    let page = Bytes::from(page);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let page = page.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let page = page.clone();
                    async move {
                        let mut response = if request.uri().path() == "/page.html" {
                            let mut ok = Response::new(Full::new(page));
                            ok.headers_mut().insert(
                                "content-type",
                                http::HeaderValue::from_static("text/html; charset=utf-8"),
                            );
                            ok
                        } else {
                            let mut missing = Response::new(Full::new(Bytes::new()));
                            *missing.status_mut() = http::StatusCode::NOT_FOUND;
                            missing
                        };
                        response
                            .headers_mut()
                            .insert("cache-control", http::HeaderValue::from_static("no-store"));
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    PageServer { origin, task }
}

/// One browser at a time: two Chromiums starting together on a 2-core CI
/// machine compete for the same cold disk cache and CPU.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// An upper bound, not a synchronisation: `--dump-dom` returns as soon as
/// the page's virtual time budget is spent. A freshly installed Chromium's
/// first cold start on a loaded machine has taken more than 15 s.
const BROWSER_BOUND: Duration = Duration::from_secs(120);

/// Loads `url` in a fresh headless Chromium and returns the dumped DOM.
/// Bounded by `BROWSER_BOUND`; the browser is killed (by PID) if it
/// overruns, and its stderr is shown either way a run fails.
async fn dump_dom(url: &str) -> String {
    let _one_browser = ONE_BROWSER.lock().await;
    let profile = tempfile::tempdir().expect("profile dir");
    let mut child = tokio::process::Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            "--no-proxy-server",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--virtual-time-budget=10000", "--dump-dom", url])
        // No session bus in CI containers: without this Chromium waits on
        // D-Bus connection attempts before it starts.
        .env("DBUS_SESSION_BUS_ADDRESS", "disabled:")
        .env("DBUS_SYSTEM_BUS_ADDRESS", "disabled:")
        .env("HOME", profile.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn chromium");
    let stdout = tokio::spawn(read_all(child.stdout.take()));
    let stderr = tokio::spawn(read_all(child.stderr.take()));
    let status = tokio::time::timeout(BROWSER_BOUND, child.wait()).await;
    if status.is_err() {
        let _ = child.kill().await;
    }
    let dom = stdout.await.expect("stdout reader");
    let log = stderr.await.expect("stderr reader");
    match status {
        Ok(status) => {
            let status = status.expect("wait for chromium");
            assert!(
                status.success() && dom.contains("</html>"),
                "chromium failed ({status}); stderr:\n{log}"
            );
            dom
        }
        Err(_) => panic!(
            "chromium did not dump the DOM within {} s; stderr:\n{log}",
            BROWSER_BOUND.as_secs()
        ),
    }
}

/// Everything a child's pipe carries until it closes.
async fn read_all(pipe: Option<impl tokio::io::AsyncRead + Unpin>) -> String {
    let mut bytes = Vec::new();
    if let Some(mut pipe) = pipe {
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut pipe, &mut bytes).await;
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The text of `<pre id="{id}">` in a dumped DOM.
fn result(dom: &str, id: &str) -> String {
    let open = format!("<pre id=\"{id}\">");
    let start = dom
        .find(&open)
        .unwrap_or_else(|| panic!("no #{id} in the DOM:\n{dom}"))
        + open.len();
    let end = dom[start..].find("</pre>").expect("closed pre") + start;
    dom[start..end].to_string()
}

/// What one page load did.
struct Outcome {
    get: String,
    post: String,
    exchanges: Vec<recorder::Exchange>,
    upstream_calls: usize,
    page_origin: String,
}

/// Serves the page from 127.0.0.1:PORT_A, the gateway (behind a recorder)
/// on 127.0.0.1:PORT_B with `[cors]` allowing `allowed(page origin)`, and
/// loads the page in Chromium.
async fn load_page(allowed: impl Fn(&str) -> String) -> Outcome {
    let page_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind page");
    let page_origin = format!("http://{}", page_listener.local_addr().expect("addr"));
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml(
        scripted.addr,
        &format!(
            "cache = {{ public = true, max_age = \"10s\", surrogate_keys = \"echo\" }}\n\
             [cors]\n\
             allow_origins = [\"{}\"]\n\
             allow_credentials = true\n",
            allowed(&page_origin)
        ),
    ))
    .await;
    let recorder = Recorder::start(gateway.addr).await;
    let server = serve_page(
        page_listener,
        PAGE.replace("__GATEWAY__", &format!("http://{}", recorder.addr)),
    );
    assert_eq!(server.origin, page_origin);
    let dom = dump_dom(&format!("{page_origin}/page.html")).await;
    assert_eq!(
        result(&dom, "done"),
        "done",
        "the page's script finished:\n{dom}"
    );
    Outcome {
        get: result(&dom, "get"),
        post: result(&dom, "post"),
        exchanges: recorder.exchanges(),
        upstream_calls: scripted.call_count(),
        page_origin,
    }
}

fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().expect("ASCII"))
}

#[tokio::test]
async fn page_on_an_allowed_origin_gets_and_posts_with_credentials_through_one_edge_preflight() {
    let outcome = load_page(|origin| origin.to_string()).await;
    assert_eq!(
        outcome.get, "200 hello request-id:true etag:true surrogate-key:null",
        "exposed headers are readable, others are not"
    );
    assert_eq!(outcome.post, "200 posted 7");
    assert_eq!(
        outcome.upstream_calls, 2,
        "only the GET and the POST reach the upstream"
    );
    let methods: Vec<&str> = outcome
        .exchanges
        .iter()
        .map(|e| e.method.as_str())
        .collect();
    assert_eq!(
        methods,
        ["GET", "OPTIONS", "POST"],
        "{:?}",
        outcome.exchanges
    );
    let preflight = &outcome.exchanges[1];
    assert_eq!(preflight.target, "/v1/echo");
    assert_eq!(
        header(&preflight.request, "access-control-request-method"),
        Some("POST")
    );
    let asked = header(&preflight.request, "access-control-request-headers").unwrap_or("");
    assert!(
        asked.contains("authorization") && asked.contains("content-type"),
        "{asked}"
    );
    assert!(preflight.status.is_success(), "{}", preflight.status);
    assert_eq!(
        header(&preflight.response, "access-control-allow-origin"),
        Some(outcome.page_origin.as_str())
    );
    assert_eq!(
        header(&preflight.response, "access-control-allow-credentials"),
        Some("true")
    );
    for exchange in &outcome.exchanges {
        assert_eq!(
            header(&exchange.request, "origin"),
            Some(outcome.page_origin.as_str()),
            "{} carries the page's origin",
            exchange.method
        );
    }
}

#[tokio::test]
async fn page_on_another_origin_is_blocked_by_the_browser() {
    let outcome = load_page(|_| "http://127.0.0.1:1".to_string()).await;
    assert_eq!(outcome.get, "rejected TypeError: Failed to fetch");
    assert_eq!(outcome.post, "rejected TypeError: Failed to fetch");
    // The simple GET was sent (browsers enforce CORS on the answer); the
    // POST never was, because its preflight got no Access-Control-* headers.
    let methods: Vec<&str> = outcome
        .exchanges
        .iter()
        .map(|e| e.method.as_str())
        .collect();
    assert_eq!(methods, ["GET", "OPTIONS"], "{:?}", outcome.exchanges);
    assert!(
        outcome.exchanges[1]
            .response
            .keys()
            .all(|k| !k.as_str().starts_with("access-control-")),
        "{:?}",
        outcome.exchanges[1].response
    );
    assert_eq!(outcome.upstream_calls, 1);
}
