//! Balancing across endpoints: power of two choices on calls in flight
//! sends a slow endpoint far less than its share, and passive outlier
//! ejection stops calls to an endpoint that keeps answering UNAVAILABLE
//! until its ejection runs out.

mod support;

use std::time::Duration;

use support::*;

/// Sends `total` GETs from `clients` concurrent loops.
async fn load(gateway: &TestGateway, clients: usize, total: usize) -> Vec<u16> {
    let http = client();
    let per_client = total / clients;
    let loops = (0..clients).map(|c| {
        let http = http.clone();
        let base = gateway.base.clone();
        async move {
            let mut statuses = Vec::new();
            for i in 0..per_client {
                let url = format!("{base}/v1/echo?string_value=c{c}n{i}");
                statuses.push(http.get(url).send().await.expect("send").status().as_u16());
            }
            statuses
        }
    });
    futures_util::future::join_all(loops)
        .await
        .into_iter()
        .flatten()
        .collect()
}

#[tokio::test]
async fn an_endpoint_ten_times_slower_gets_far_less_than_a_third_of_the_calls() {
    // Long enough that the gateway's and the test client's own CPU time
    // per call (a few ms on a loaded 2-core box) stays small beside it: the
    // balancer must see the endpoints' speeds, not the test's.
    let fast = Duration::from_millis(20);
    let slow = spawn_scripted(pool(), Reply::Delay(fast * 10, Box::new(Reply::Echo))).await;
    let b = spawn_scripted(pool(), Reply::Delay(fast, Box::new(Reply::Echo))).await;
    let c = spawn_scripted(pool(), Reply::Delay(fast, Box::new(Reply::Echo))).await;
    let gateway = spawn_gateway(&everything_toml_on(&[slow.addr, b.addr, c.addr], "", "")).await;
    let statuses = load(&gateway, 16, 480).await;
    assert!(statuses.iter().all(|s| *s == 200));
    let total = slow.call_count() + b.call_count() + c.call_count();
    assert_eq!(total, 480);
    let share = slow.call_count() as f64 / total as f64;
    assert!(
        share < 0.15,
        "the slow endpoint took {:.0} % of the calls ({} of {total})",
        share * 100.0,
        slow.call_count()
    );
}

#[tokio::test]
async fn calls_are_spread_over_equal_endpoints() {
    let a = spawn_scripted(pool(), Reply::Echo).await;
    let b = spawn_scripted(pool(), Reply::Echo).await;
    let c = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml_on(&[a.addr, b.addr, c.addr], "", "")).await;
    load(&gateway, 8, 600).await;
    for (name, scripted) in [("a", &a), ("b", &b), ("c", &c)] {
        let calls = scripted.call_count();
        assert!(
            (100..=300).contains(&calls),
            "endpoint {name} took {calls} of 600 calls"
        );
    }
}

#[tokio::test]
async fn an_endpoint_answering_unavailable_five_times_in_a_row_is_ejected_until_its_time_runs_out()
{
    let failing = spawn_scripted(
        pool(),
        Reply::Status {
            code: 14,
            message: "overloaded".into(),
            details: None,
        },
    )
    .await;
    let b = spawn_scripted(pool(), Reply::Echo).await;
    let c = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml_on(
        &[failing.addr, b.addr, c.addr],
        "outlier = { consecutive_unavailable = 5, base_ejection_time = \"2s\" }",
        "",
    ))
    .await;
    // GETs are retried elsewhere, so clients see no error meanwhile.
    let statuses = load(&gateway, 4, 60).await;
    assert!(statuses.iter().all(|s| *s == 200));
    let at_ejection = failing.call_count();
    assert!(
        (5..=8).contains(&at_ejection),
        "ejected after its fifth UNAVAILABLE in a row (plus calls already in flight): {at_ejection}"
    );
    load(&gateway, 4, 60).await;
    assert_eq!(failing.call_count(), at_ejection, "no calls while ejected");
    let ejected = gateway.gateway.snapshot().upstreams[0]
        .pool
        .endpoints()
        .iter()
        .find(|e| e.authority().as_str() == failing.addr.to_string())
        .expect("endpoint")
        .outlier()
        .is_ejected();
    assert!(ejected);

    // It recovers; once the ejection has run out it gets calls again.
    failing.set_reply(Reply::Echo);
    for _ in 0..200 {
        load(&gateway, 2, 20).await;
        if failing.call_count() > at_ejection {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the endpoint got no calls after its ejection ran out");
}

#[tokio::test]
async fn no_more_than_max_ejection_percent_of_the_endpoints_are_ejected() {
    let unavailable = || Reply::Status {
        code: 14,
        message: "down".into(),
        details: None,
    };
    let a = spawn_scripted(pool(), unavailable()).await;
    let b = spawn_scripted(pool(), unavailable()).await;
    let gateway = spawn_gateway(&everything_toml_on(
        &[a.addr, b.addr],
        "outlier = { consecutive_unavailable = 2, base_ejection_time = \"1h\", max_ejection_percent = 50 }\n\
         retry_budget = { percent = 0, min_per_second = 0 }",
        "",
    ))
    .await;
    load(&gateway, 1, 40).await;
    let endpoints = gateway.gateway.snapshot().upstreams[0].pool.endpoints();
    let ejected = endpoints
        .iter()
        .filter(|e| e.outlier().is_ejected())
        .count();
    assert_eq!(ejected, 1, "half of two endpoints");
    assert!(a.call_count() + b.call_count() >= 40);
}
