//! Streams in a real browser: headless Chromium loads
//! `tests/browser/streams.html` from one loopback origin (a tiny server in
//! the test) and streams from the gateway on another, in front of the
//! tests' tonic upstream (testing.v1.Streaming):
//!
//! 1. an `EventSource` on a server stream that fails after 5 ticks gets the
//!    ticks as named events with ids, then the status as an `error` event
//!    carrying data, then the end of the body, on which it would reconnect;
//!    the page closes it;
//! 2. `fetch()` of the NDJSON stream, read with `body.getReader()` and split
//!    into lines as the chunks arrive, gets 5 ticks in order;
//! 3. a `WebSocket` on the bidi method gets each number back doubled before
//!    it sends the next, ends its input with an empty frame and sees close
//!    1000.
//!
//! The same page loaded from an origin `[cors]` does not allow gets none of
//! it: the browser blocks the event stream and the fetch, and the gateway
//! refuses the WebSocket upgrade (403), so the socket errors without opening.
//!
//! How a run ends: not with `--virtual-time-budget` (as tests/browser.rs
//! does), because Chromium lets virtual time run on while a streamed body is
//! arriving, so the budget was spent at once and the DOM dumped mid-stream.
//! Instead the page server holds the end of the document until the page's
//! script has written its results and posted `/done`; the `load` event and
//! `--dump-dom` follow at once, in real time (see tests/browser/chromium.rs).
//! Each check in the page is bounded (20 s), so the page always finishes;
//! the browser run as a whole is bounded at 120 s. No step waits on a clock.
//! Without Chromium these tests fail (CI's `.ci/run` installs it).

#[path = "browser/chromium.rs"]
mod chromium;
mod stream_upstream;
mod support;

use std::sync::atomic::Ordering;

use chromium::{HOLD, dump_dom, result, serve_page};
use stream_upstream::*;
use support::spawn_gateway;
use tokio::net::TcpListener;

const PAGE: &str = include_str!("browser/streams.html");

/// What one page load did.
struct Outcome {
    events: String,
    ndjson: String,
    socket: String,
    /// Calls the upstream got, any method.
    calls: u64,
    /// Numbers the upstream's Double got.
    numbers: u64,
    page_origin: String,
    /// Still serving, for a look behind the browser.
    gateway: support::TestGateway,
}

/// Starts the upstream and a gateway whose `[cors]` allows one page
/// server's origin, serves the page from that server and from a second one
/// it does not allow, and loads it in Chromium from the allowed one or not.
async fn load_page(from_allowed_origin: bool) -> Outcome {
    let allowed = TcpListener::bind("127.0.0.1:0").await.expect("bind page");
    let other = TcpListener::bind("127.0.0.1:0").await.expect("bind page");
    let allowed_origin = format!("http://{}", allowed.local_addr().expect("addr"));
    let upstream = spawn_stream_upstream().await;
    let route = "[routes.methods.Ticks]\nsse = { id = \"seq\", event = \"kind\" }";
    let toml = streaming_toml(upstream.addr, route).replace(
        "[server]\n",
        &format!("[cors]\nallow_origins = [\"{allowed_origin}\"]\n\n[server]\n"),
    );
    let gateway = spawn_gateway(&toml).await;
    assert!(PAGE.contains(HOLD), "the page holds its end until /done");
    let page = PAGE.replace("__GATEWAY__", &gateway.addr.to_string());
    let allowed = serve_page(allowed, page.clone());
    let other = serve_page(other, page);
    assert_eq!(allowed.origin, allowed_origin);
    let page_origin = if from_allowed_origin {
        allowed.origin.clone()
    } else {
        other.origin.clone()
    };
    let dom = dump_dom(&format!("{page_origin}/page.html"), &[]).await;
    assert_eq!(
        result(&dom, "done"),
        "done",
        "the page's script finished:\n{dom}"
    );
    Outcome {
        events: result(&dom, "events"),
        ndjson: result(&dom, "ndjson"),
        socket: result(&dom, "socket"),
        calls: upstream.state.calls.load(Ordering::SeqCst),
        numbers: upstream.state.received.load(Ordering::SeqCst),
        page_origin,
        gateway,
    }
}

/// The JSON after `prefix` on `line`.
fn json_after(line: &str, prefix: &str) -> serde_json::Value {
    let json = line
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{line:?} does not start with {prefix:?}"));
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{json:?}: {e}"))
}

#[tokio::test]
async fn a_page_on_an_allowed_origin_streams_by_event_source_fetch_and_websocket() {
    let outcome = load_page(true).await;

    // 1. EventSource: five named events with ids, the status as an error
    // event with data, then the end of the body in state CONNECTING (it
    // would reconnect), and CLOSED once the page closed it.
    let events: Vec<&str> = outcome.events.lines().collect();
    assert_eq!(events.len(), 9, "{}", outcome.events);
    assert_eq!(events[0], "open");
    for (seq, line) in (1..=5).zip(&events[1..6]) {
        let kind = if seq % 2 == 0 {
            "KIND_EVEN"
        } else {
            "KIND_ODD"
        };
        let tick = json_after(line, &format!("{kind} id={seq} "));
        assert_eq!(
            tick,
            serde_json::json!({"seq": seq.to_string(), "kind": kind})
        );
    }
    let status = json_after(events[6], "error event ");
    assert_eq!(status["code"], 9, "{status}");
    assert_eq!(status["message"], "shelf gone", "{status}");
    assert_eq!(
        &events[7..],
        ["ended readyState=0", "closed readyState=2"],
        "after the error event the body ended; EventSource was about to reconnect"
    );

    // 2. fetch + getReader: five NDJSON lines, in order, split as read.
    let ndjson: Vec<&str> = outcome.ndjson.lines().collect();
    assert_eq!(ndjson.len(), 6, "{}", outcome.ndjson);
    assert_eq!(ndjson[0], "status 200 application/x-ndjson", "{ndjson:?}");
    let reads: usize = ndjson[1]
        .strip_prefix("reads ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{ndjson:?}"));
    assert!((1..=5).contains(&reads), "{ndjson:?}");
    assert_eq!(ndjson[2], "lines 5", "{ndjson:?}");
    let per_read: usize = ndjson[3]
        .strip_prefix("lines per read ")
        .expect("lines per read")
        .split(',')
        .map(|n| n.parse::<usize>().expect("a count"))
        .sum();
    assert_eq!(per_read, 5, "{ndjson:?}");
    assert_eq!(&ndjson[4..], ["seq 1,2,3,4,5", "left over \"\""]);

    // 3. WebSocket: each answer before the next question, then a clean
    // close 1000 (the gateway waits for the browser's answering Close).
    assert_eq!(
        outcome.socket,
        "open\n\
         sent 1\n\
         got {\"value\":\"2\"}\n\
         sent 20\n\
         got {\"value\":\"40\"}\n\
         sent 300\n\
         got {\"value\":\"600\"}\n\
         sent end\n\
         close 1000 clean=true reason=\"\""
    );

    // Ticks twice and Double once: the event stream did not reconnect.
    assert_eq!(outcome.calls, 3);
    assert_eq!(outcome.numbers, 3);
}

#[tokio::test]
async fn the_same_page_on_another_origin_gets_no_stream_and_no_websocket() {
    let outcome = load_page(false).await;
    // The browser enforces CORS on the answers: the event stream fails for
    // good (CLOSED, no reconnect) and the fetch is rejected.
    assert_eq!(
        outcome.events, "ended readyState=2\nclosed readyState=2",
        "no event reached the page"
    );
    assert_eq!(outcome.ndjson, "rejected TypeError: Failed to fetch");
    // The gateway refuses the upgrade: the socket never opens.
    assert_eq!(outcome.socket, "error\nclose 1006 clean=false reason=\"\"");
    assert_eq!(outcome.numbers, 0, "no number reached the upstream");
    // The two GETs were sent (browsers enforce CORS on the answer); the
    // WebSocket upgrade never became a call.
    assert_eq!(outcome.calls, 2);

    // What the browser could not show: the upgrade from this origin is a 403.
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://{}/v1/double",
            outcome.gateway.addr
        ))
        .expect("request");
    request.headers_mut().insert(
        "origin",
        outcome.page_origin.parse().expect("origin header"),
    );
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        other => panic!("expected a 403, got {:?}", other.map(|_| ())),
    }
}
