//! W3C trace context at the gateway: every upstream call carries a
//! `traceparent` naming the gateway's span; a client's trace is continued
//! only when `[server] trust_traceparent` allows it.

mod support;

use support::*;

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

async fn sent_traceparent(
    gateway: &TestGateway,
    scripted: &Scripted,
    headers: &[(&str, &str)],
) -> String {
    let mut request = client().get(format!("{}/v1/echo?stringValue=t", gateway.base));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    assert_eq!(request.send().await.expect("send").status(), 200);
    let calls = scripted.calls();
    let call = calls.last().expect("a call");
    call.headers["traceparent"]
        .to_str()
        .expect("ascii")
        .to_string()
}

/// `00-<trace id>-<parent id>-<flags>`, checked for shape.
fn fields(traceparent: &str) -> (String, String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[0], "00", "{traceparent}");
    assert_eq!(parts[1].len(), 32, "{traceparent}");
    assert_eq!(parts[2].len(), 16, "{traceparent}");
    assert!(
        traceparent
            .bytes()
            .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{traceparent}"
    );
    (parts[1].into(), parts[2].into(), parts[3].into())
}

#[tokio::test]
async fn a_request_without_trace_context_starts_a_fresh_trace_per_request() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, "")).await;
    let first = fields(&sent_traceparent(&gateway, &scripted, &[]).await);
    let second = fields(&sent_traceparent(&gateway, &scripted, &[]).await);
    assert_ne!(first.0, second.0, "each request is its own trace");
    assert_ne!(first.1, second.1);
    assert_eq!(first.2, "01", "a fresh trace is sampled");
}

#[tokio::test]
async fn an_untrusted_client_trace_is_not_continued_and_its_tracestate_dropped() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let toml = everything_toml(scripted.addr, "")
        .replace("[server]\n", "[server]\ntrust_traceparent = false\n");
    let gateway = spawn_gateway(&toml).await;
    let client_parent = format!("00-{CLIENT_TRACE}-00f067aa0ba902b7-01");
    let sent = sent_traceparent(
        &gateway,
        &scripted,
        &[("traceparent", &client_parent), ("tracestate", "rojo=1")],
    )
    .await;
    let (trace_id, parent, _) = fields(&sent);
    assert_ne!(trace_id, CLIENT_TRACE);
    assert_ne!(parent, "00f067aa0ba902b7");
    let calls = scripted.calls();
    assert!(calls[0].headers.get("tracestate").is_none());
}

#[tokio::test]
async fn a_trusted_client_trace_is_continued_under_the_gateway_span() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, "")).await;
    let client_parent = format!("00-{CLIENT_TRACE}-00f067aa0ba902b7-00");
    let sent = sent_traceparent(&gateway, &scripted, &[("traceparent", &client_parent)]).await;
    let (trace_id, parent, flags) = fields(&sent);
    assert_eq!(trace_id, CLIENT_TRACE);
    assert_ne!(
        parent, "00f067aa0ba902b7",
        "the gateway's span is the parent"
    );
    assert_eq!(flags, "00", "the client's sampling decision is kept");
}
