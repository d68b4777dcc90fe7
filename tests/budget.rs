//! One budget from the first byte: the deadline starts when the request
//! head has been read, so the time authentication takes (a JWKS fetch) is
//! charged against the route's timeout, and the upstream gets what is left.

mod support;

use serde_json::{Value, json};
use support::*;

const ISSUER: &str = "https://issuer.test";

#[tokio::test]
async fn a_slow_key_fetch_is_charged_against_the_route_timeout() {
    let key = TestKey::ec("k1");
    let issuer = JwksServer::start(jwks_of(&[&key])).await;
    let tables = format!(
        r#"
[auth.providers.idp]
issuer = "{ISSUER}"
audiences = ["api"]
algorithms = ["ES256"]
jwks_url = "{}"
jwks_timeout = "3s"
jwks_cooldown = "1ms"
"#,
        issuer.url
    );
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&auth_toml(
        scripted.addr,
        "auth = \"idp\"\ntimeout = \"300ms\"",
        &tables,
    ))
    .await;
    let claims = json!({"iss": ISSUER, "aud": "api", "sub": "a", "exp": unix_now() + 300});
    let echo = |token: String| {
        client()
            .post(format!("{}/v1/echo", gateway.base))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .body("{}")
            .send()
    };
    // Wait for the start-up fetch: the known key verifies.
    while echo(key.sign(&claims)).await.expect("send").status() != 200 {
        issuer.requests();
    }
    let calls = scripted.call_count();

    // Now the issuer hangs, and a token with an unknown kid makes the
    // gateway refetch the key set and wait for it (up to jwks_timeout).
    issuer.set_mode(JwksMode::Delay(std::time::Duration::from_secs(30)));
    let rotated = TestKey::ec("k2").sign(&claims);
    let response = echo(rotated).await.expect("send");
    // Before the fetch gives up (3 s), the 300 ms budget is gone: 504, not
    // the 401 of an unknown key three seconds later.
    assert_eq!(response.status(), 504);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["details"][0]["reason"], "DEADLINE_EXHAUSTED", "{body}");
    assert_eq!(scripted.call_count(), calls, "the upstream never saw it");
}
