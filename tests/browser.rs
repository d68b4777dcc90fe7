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

#[path = "browser/chromium.rs"]
mod chromium;
#[path = "varnish/recorder.rs"]
mod recorder;
mod support;

use chromium::{dump_dom, result, serve_page};
use recorder::Recorder;
use support::*;
use tokio::net::TcpListener;

const PAGE: &str = include_str!("browser/page.html");

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
    let dom = dump_dom(
        &format!("{page_origin}/page.html"),
        &["--virtual-time-budget=10000"],
    )
    .await;
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
