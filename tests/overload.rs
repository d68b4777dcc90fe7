//! Overload protection: past `max_concurrent_calls` on an upstream, or
//! `max_concurrent_requests` in the gateway, a request is answered 503
//! with `Retry-After` at once — before auth, transcoding or an upstream
//! call — while the requests inside the bound keep their latency.

mod support;

use std::time::Duration;

use support::*;

/// `name;dur=X` from Server-Timing, in milliseconds.
fn timing(answer: &reqwest::Response, name: &str) -> Option<f64> {
    answer
        .headers()
        .get_all("server-timing")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|entry| {
            let (metric, dur) = entry.trim().split_once(";dur=")?;
            (metric == name).then(|| dur.parse().ok())?
        })
}

struct Outcome {
    status: u16,
    retry_after: Option<String>,
    reason: Option<String>,
    gateway_ms: f64,
    upstream_ms: Option<f64>,
}

/// Sends `count` GETs at once and collects what each got.
async fn burst(gateway: &TestGateway, count: usize) -> Vec<Outcome> {
    let http = client();
    let sends = (0..count).map(|i| {
        let http = http.clone();
        let url = format!("{}/v1/echo?string_value=n{i}", gateway.base);
        async move {
            let answer = http.get(url).send().await.expect("send");
            let status = answer.status().as_u16();
            let retry_after = answer
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().expect("ascii").to_string());
            let gateway_ms = timing(&answer, "gateway").expect("gateway timing");
            let upstream_ms = timing(&answer, "upstream");
            let body: serde_json::Value = answer.json().await.expect("json");
            let reason = body["details"][0]["reason"].as_str().map(str::to_string);
            Outcome {
                status,
                retry_after,
                reason,
                gateway_ms,
                upstream_ms,
            }
        }
    });
    futures_util::future::join_all(sends).await
}

fn check_shedding(outcomes: &[Outcome], bound: usize, upstream_delay: Duration) {
    let (accepted, shed): (Vec<&Outcome>, Vec<&Outcome>) =
        outcomes.iter().partition(|o| o.status == 200);
    assert_eq!(accepted.len(), bound, "exactly the bound is served");
    assert_eq!(shed.len(), outcomes.len() - bound);
    for o in &shed {
        assert_eq!(o.status, 503);
        assert_eq!(o.retry_after.as_deref(), Some("1"));
        assert_eq!(o.reason.as_deref(), Some("OVERLOADED"));
        // A thread the OS preempts on a loaded 2-core machine can stretch
        // one answer's wall time; none may take long.
        assert!(
            o.gateway_ms < 10.0,
            "shed in {} ms of gateway time",
            o.gateway_ms
        );
    }
    let mut times: Vec<f64> = shed.iter().map(|o| o.gateway_ms).collect();
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    assert!(
        median < 1.0,
        "shed answers take {median} ms of gateway time (median)"
    );
    let slowest_allowed = upstream_delay.as_secs_f64() * 1000.0 * 1.5;
    for o in &accepted {
        let upstream = o.upstream_ms.expect("upstream timing");
        assert!(
            upstream < slowest_allowed,
            "an accepted call took {upstream} ms upstream for a {upstream_delay:?} service"
        );
    }
}

#[tokio::test]
async fn past_max_concurrent_calls_an_upstream_sheds_with_503_and_retry_after() {
    let delay = Duration::from_millis(400);
    let scripted = spawn_scripted(pool(), Reply::Delay(delay, Box::new(Reply::Echo))).await;
    let gateway = spawn_gateway(&everything_toml_with(
        scripted.addr,
        "max_concurrent_calls = 4",
        "",
    ))
    .await;
    let outcomes = burst(&gateway, 8).await;
    check_shedding(&outcomes, 4, delay);
    assert_eq!(
        scripted.call_count(),
        4,
        "shed requests never reach the upstream"
    );
    let snapshot = gateway.gateway.snapshot();
    let shed = snapshot.upstreams[0]
        .counters()
        .shed
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(shed, 4, "shedding is counted");
}

#[tokio::test]
async fn past_max_concurrent_requests_the_gateway_sheds_with_503_and_retry_after() {
    let delay = Duration::from_millis(400);
    let scripted = spawn_scripted(pool(), Reply::Delay(delay, Box::new(Reply::Echo))).await;
    let gateway = spawn_gateway(&everything_toml(
        scripted.addr,
        "[limits]\nmax_concurrent_requests = 3\n",
    ))
    .await;
    let outcomes = burst(&gateway, 6).await;
    check_shedding(&outcomes, 3, delay);
    assert_eq!(scripted.call_count(), 3);
}
