//! Headless Chromium for the browser tests (tests/browser.rs,
//! tests/browser_streams.rs): a tiny page server on a loopback origin, one
//! browser at a time under a generous bound, and the dumped DOM read back.
//!
//! How a run ends: `--dump-dom` prints the DOM once the page has loaded
//! (its `load` event), or, with `--virtual-time-budget`, once that much
//! virtual time has passed. A budget suits pages that only make ordinary
//! requests (virtual time waits for them), but not streams: Chromium lets
//! virtual time run on while a streamed response body is still arriving, so
//! the budget is spent in an instant and the DOM is dumped mid-stream. A
//! page that streams therefore holds its own `load` event instead: the page
//! server sends the document up to [`HOLD`] at once and the rest only after
//! the page's script has `POST`ed `/done`, so the DOM is dumped exactly
//! when the script has written its last result, in real time, with no
//! budget and no guessed wait.

use std::convert::Infallible;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{Request, Response};
use http_body_util::StreamBody;
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Where a held page's document pauses until its script `POST`s `/done`.
pub(crate) const HOLD: &str = "<!-- held until the script posts /done -->";

/// chromium, wherever Debian put it; fails the test with an install hint if missing.
fn chromium() -> PathBuf {
    crate::support::installed_program(
        "chromium",
        &["/usr/bin/chromium", "/usr/bin/chromium-browser"],
        "chromium",
    )
}

/// Serves `page` as `/page.html` on `listener` until dropped.
pub(crate) struct PageServer {
    pub(crate) origin: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type PageBody =
    StreamBody<futures_util::stream::BoxStream<'static, Result<Frame<Bytes>, Infallible>>>;

/// Serves `page` as `/page.html`. If it contains [`HOLD`], the part after
/// it is sent only once `POST /done` has come, so the page's `load` event
/// (and `--dump-dom`) waits for its script.
pub(crate) fn serve_page(listener: TcpListener, page: String) -> PageServer {
    let origin = format!("http://{}", listener.local_addr().expect("addr"));
    let (head, tail) = match page.split_once(HOLD) {
        Some((head, tail)) => (head.to_string(), Some(tail.to_string())),
        None => (page, None),
    };
    let (head, tail) = (Bytes::from(head), tail.map(Bytes::from));
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (head, tail) = (head.clone(), tail.clone());
            let (done_tx, done_rx) = (done_tx.clone(), done_rx.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let (head, tail) = (head.clone(), tail.clone());
                    let (done_tx, done_rx) = (done_tx.clone(), done_rx.clone());
                    async move {
                        let path = request.uri().path();
                        let mut response = if request.method() == http::Method::POST
                            && path == "/done"
                        {
                            done_tx.send_replace(true);
                            let mut ok = Response::new(frames(futures_util::stream::empty()));
                            *ok.status_mut() = http::StatusCode::NO_CONTENT;
                            ok
                        } else if path == "/page.html" {
                            let head = futures_util::stream::once(async move { head });
                            let tail = futures_util::stream::iter(tail).then(move |tail| {
                                let mut done_rx = done_rx.clone();
                                async move {
                                    // Err: the server is going away; end the page anyway.
                                    let _ = done_rx.wait_for(|done| *done).await;
                                    tail
                                }
                            });
                            let mut ok = Response::new(frames(head.chain(tail)));
                            ok.headers_mut().insert(
                                "content-type",
                                http::HeaderValue::from_static("text/html; charset=utf-8"),
                            );
                            ok
                        } else {
                            let mut missing = Response::new(frames(futures_util::stream::empty()));
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

fn frames(chunks: impl futures_util::Stream<Item = Bytes> + Send + 'static) -> PageBody {
    StreamBody::new(chunks.map(|chunk| Ok(Frame::data(chunk))).boxed())
}

/// One browser at a time: two Chromiums starting together on a 2-core CI
/// machine compete for the same cold disk cache and CPU.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// An upper bound, not a synchronisation: `--dump-dom` returns as soon as
/// the page has loaded (or its virtual time budget is spent). A freshly
/// installed Chromium's first cold start on a loaded machine has taken more
/// than 15 s.
const BROWSER_BOUND: Duration = Duration::from_secs(120);

/// Loads `url` in a fresh headless Chromium, with `args` before
/// `--dump-dom`, and returns the dumped DOM. Bounded by `BROWSER_BOUND`;
/// the browser is killed (by PID) if it overruns, and its stderr is shown
/// either way a run fails.
pub(crate) async fn dump_dom(url: &str, args: &[&str]) -> String {
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
        .args(args)
        .args(["--dump-dom", url])
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
pub(crate) fn result(dom: &str, id: &str) -> String {
    let open = format!("<pre id=\"{id}\">");
    let start = dom
        .find(&open)
        .unwrap_or_else(|| panic!("no #{id} in the DOM:\n{dom}"))
        + open.len();
    let end = dom[start..].find("</pre>").expect("closed pre") + start;
    dom[start..end].to_string()
}
