//! Edge authentication over real sockets, with keys and tokens made at run
//! time: valid HS256/RS256/PS256/ES256/EdDSA tokens admit the caller and
//! only the verified `sub` reaches the upstream; every forged, malformed,
//! stale, ambiguous or misdirected credential is answered 401 (or 403 for
//! missing scopes and claims) with an RFC 6750 challenge and a
//! google.rpc.Status body, and the upstream never sees the call. API keys,
//! `forward_authorization` and `protogate token` are covered too; JWKS
//! fetching lives in `auth_jwks.rs`.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::*;

const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "api";

/// Claims a provider of these tests accepts, for subject `sub`.
fn claims(sub: &str) -> Value {
    let now = unix_now();
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 300})
}

/// `claims(sub)` with `extra` merged in (a `null` removes a claim).
fn claims_with(sub: &str, extra: Value) -> Value {
    let mut claims = claims(sub);
    for (k, v) in extra.as_object().expect("object") {
        match v {
            Value::Null => {
                claims.as_object_mut().expect("object").remove(k);
            }
            v => claims[k] = v.clone(),
        }
    }
    claims
}

/// `[auth.providers.NAME]` verifying `key`: an HMAC secret is written to a
/// `secret_file`, a public key to a `pem_file` (or, with `jwks`, the key's
/// JWK to a `jwks_file`), all under `dir`. `extra` adds lines to the table.
fn provider(name: &str, key: &TestKey, dir: &Path, jwks: bool, extra: &str) -> String {
    let source = if format!("{:?}", key.alg).starts_with("HS") {
        let path = dir.join(format!("{name}.secret"));
        std::fs::write(&path, format!("{}\n", key.verifier)).expect("write secret");
        format!("secret_file = \"{}\"", path.display())
    } else if jwks {
        let path = dir.join(format!("{name}.jwks.json"));
        std::fs::write(&path, jwks_of(&[key])).expect("write jwks");
        format!("jwks_file = \"{}\"", path.display())
    } else {
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, &key.verifier).expect("write pem");
        format!("pem_file = \"{}\"", path.display())
    };
    format!(
        r#"
[auth.providers.{name}]
issuer = "{ISSUER}"
audiences = ["{AUDIENCE}"]
algorithms = ["{alg:?}"]
{source}
claims_to_metadata = {{ sub = "x-user-id" }}
{extra}
"#,
        alg = key.alg
    )
}

/// The scripted Echo upstream and a gateway whose `POST /v1/echo` carries
/// `echo_auth`, with `tables` (the `[auth]` part) appended.
async fn setup(echo_auth: &str, tables: &str) -> (Scripted, TestGateway) {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&auth_toml(scripted.addr, echo_auth, tables)).await;
    (scripted, gateway)
}

/// `POST /v1/echo` with these headers.
async fn echo(gateway: &TestGateway, headers: &[(&str, &str)]) -> reqwest::Response {
    echo_at(gateway, "/v1/echo", headers).await
}

/// `POST` to `path_and_query` (an Echo binding) with these headers.
async fn echo_at(
    gateway: &TestGateway,
    path_and_query: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = client()
        .post(format!("{}{path_and_query}", gateway.base))
        .header("content-type", "application/json")
        .body(r#"{"stringValue":"hi"}"#);
    for &(name, value) in headers {
        request = request.header(name, value);
    }
    request.send().await.expect("send")
}

/// `POST /v1/echo` with `Authorization: Bearer <token>`.
async fn echo_with(gateway: &TestGateway, token: &str) -> reqwest::Response {
    echo(gateway, &[("authorization", &format!("Bearer {token}"))]).await
}

/// Every value of `name` in the metadata of the upstream's last call.
fn last_call_values(scripted: &Scripted, name: &str) -> Vec<String> {
    let calls = scripted.calls();
    let call = calls.last().expect("the upstream was called");
    call.headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

async fn assert_ok(response: reqwest::Response) -> Value {
    let status = response.status();
    let text = response.text().await.expect("body");
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).expect("JSON")
}

// === valid tokens, and what reaches the upstream ===

#[tokio::test]
async fn valid_hs256_rs256_ps256_es256_and_eddsa_tokens_admit_the_caller_and_forward_only_the_verified_sub()
 {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = [
        (TestKey::hmac(Algorithm::HS256), false),
        (TestKey::rsa(Algorithm::RS256, "rs"), false),
        (TestKey::rsa(Algorithm::PS256, "ps"), true),
        (TestKey::ec("es"), false),
        (TestKey::ed("ed"), true),
    ];
    for (key, jwks) in &keys {
        let (scripted, gateway) =
            setup("auth = \"a\"", &provider("a", key, dir.path(), *jwks, "")).await;
        let sub = format!("alice-{:?}", key.alg);
        let token = key.sign(&claims(&sub));
        let response = echo(
            &gateway,
            &[
                ("authorization", &format!("Bearer {token}")),
                ("x-user-id", "mallory"),
            ],
        )
        .await;
        let body = assert_ok(response).await;
        assert_eq!(body["stringValue"], "hi");
        assert_eq!(last_call_values(&scripted, "x-user-id"), [sub.as_str()]);
        assert!(last_call_values(&scripted, "authorization").is_empty());

        // The same claims signed by another key of the same kind: refused.
        let other = match key.alg {
            Algorithm::HS256 => TestKey::hmac(Algorithm::HS256),
            Algorithm::ES256 => TestKey::ec("es"),
            Algorithm::EdDSA => TestKey::ed("ed"),
            alg => TestKey::rsa(alg, key.kid.as_deref().unwrap_or("k")),
        };
        let description = assert_unauthorized(
            echo_with(&gateway, &other.sign(&claims(&sub))).await,
            "CREDENTIALS_INVALID",
        )
        .await;
        assert!(description.contains("signature"), "{description}");
        assert_eq!(scripted.call_count(), 1, "{:?}", key.alg);
    }
}

#[tokio::test]
async fn a_client_sent_x_user_id_never_reaches_the_upstream_on_public_unmatched_or_405_paths() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = TestKey::hmac(Algorithm::HS256);
    let (scripted, gateway) =
        setup("auth = \"a\"", &provider("a", &key, dir.path(), false, "")).await;
    let token = key.sign(&claims("alice"));
    let bearer = format!("Bearer {token}");

    // Public route (EchoQuery), without and with a valid token.
    for headers in [
        vec![("x-user-id", "mallory")],
        vec![("x-user-id", "mallory"), ("authorization", bearer.as_str())],
    ] {
        let mut request = client().get(format!("{}/v1/echo?stringValue=hi", gateway.base));
        for (name, value) in &headers {
            request = request.header(*name, *value);
        }
        assert_ok(request.send().await.expect("send")).await;
        assert_eq!(
            last_call_values(&scripted, "x-user-id"),
            Vec::<String>::new(),
            "public route with {headers:?}"
        );
    }
    assert_eq!(scripted.call_count(), 2);

    // A token without `sub` on the authenticated route: no x-user-id at all.
    let no_sub = key.sign(&claims_with("x", json!({"sub": null})));
    assert_ok(
        echo(
            &gateway,
            &[
                ("authorization", &format!("Bearer {no_sub}")),
                ("x-user-id", "mallory"),
            ],
        )
        .await,
    )
    .await;
    assert_eq!(
        last_call_values(&scripted, "x-user-id"),
        Vec::<String>::new()
    );

    // Unmatched path and wrong method: answered by the gateway, no call.
    let not_found = client()
        .get(format!("{}/v1/nowhere", gateway.base))
        .header("x-user-id", "mallory")
        .header("authorization", &bearer)
        .send()
        .await
        .expect("send");
    assert_eq!(refusal(not_found).await.status, 404);
    let not_allowed = client()
        .delete(format!("{}/v1/echo", gateway.base))
        .header("x-user-id", "mallory")
        .header("authorization", &bearer)
        .send()
        .await
        .expect("send");
    assert_eq!(refusal(not_allowed).await.status, 405);
    assert_eq!(scripted.call_count(), 3);
}

#[tokio::test]
async fn a_missing_or_non_bearer_authorization_answers_401_with_a_bearer_challenge() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = TestKey::hmac(Algorithm::HS256);
    let (scripted, gateway) =
        setup("auth = \"a\"", &provider("a", &key, dir.path(), false, "")).await;
    assert_unauthorized(echo(&gateway, &[]).await, "CREDENTIALS_MISSING").await;
    for bad in ["Basic YWxhZGRpbjpvcGVu", "Bearer", "Bearer ", "token abc"] {
        assert_unauthorized(
            echo(&gateway, &[("authorization", bad)]).await,
            "CREDENTIALS_INVALID",
        )
        .await;
    }
    assert_eq!(scripted.call_count(), 0);
}

#[tokio::test]
async fn a_request_without_credentials_gets_a_bare_bearer_challenge_without_an_error_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = TestKey::hmac(Algorithm::HS256);
    let (scripted, gateway) =
        setup("auth = \"a\"", &provider("a", &key, dir.path(), false, "")).await;
    let refused = refusal(echo(&gateway, &[]).await).await;
    assert_eq!(refused.status, 401, "{:?}", refused.body);
    assert_eq!(refused.body["details"][0]["reason"], "CREDENTIALS_MISSING");
    // RFC 6750 §3.1: "the resource server SHOULD NOT include an error code".
    assert_eq!(refused.challenges, ["Bearer realm=\"protogate\""]);
    assert_eq!(scripted.call_count(), 0);
}

// === forged and malformed tokens ===

#[tokio::test]
async fn alg_none_with_an_empty_signature_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = TestKey::hmac(Algorithm::HS256);
    let (scripted, gateway) =
        setup("auth = \"a\"", &provider("a", &key, dir.path(), false, "")).await;
    let payload = claims("admin").to_string();
    for header in [
        r#"{"alg":"none","typ":"JWT"}"#,
        r#"{"alg":"none"}"#,
        r#"{"alg":"None"}"#,
        r#"{"alg":"NONE"}"#,
        r#"{"typ":"JWT"}"#,
    ] {
        let token = raw_token(header, &payload, b"");
        assert!(token.ends_with('.'));
        assert_unauthorized(echo_with(&gateway, &token).await, "CREDENTIALS_INVALID").await;
    }
    assert_eq!(scripted.call_count(), 0);
}

#[tokio::test]
async fn a_correctly_signed_token_whose_header_lists_crit_is_refused_as_invalid_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = TestKey::hmac(Algorithm::HS256);
    let (scripted, gateway) =
        setup("auth = \"a\"", &provider("a", &key, dir.path(), false, "")).await;
    let secret = key.verifier.as_bytes();
    let payload = claims("alice").to_string();

    // Control: the same claims under a plain header are admitted.
    let plain = hs256_raw(secret, r#"{"alg":"HS256","typ":"JWT"}"#, &payload);
    assert_ok(echo_with(&gateway, &plain).await).await;
    assert_eq!(scripted.call_count(), 1);

    // RFC 7515 §4.1.11: an extension the recipient does not understand
    // makes the JWS invalid; protogate understands none, so any `crit` is.
    let mut minted = Header::new(Algorithm::HS256);
    minted.crit = Some(vec!["exp".into()]);
    let tokens = [
        key.sign_with(&minted, &claims("alice")),
        hs256_raw(
            secret,
            r#"{"alg":"HS256","crit":["b64"],"b64":false}"#,
            &payload,
        ),
        hs256_raw(
            secret,
            r#"{"alg":"HS256","crit":["http://example.com/ext"],"http://example.com/ext":true}"#,
            &payload,
        ),
        hs256_raw(secret, r#"{"alg":"HS256","crit":[]}"#, &payload),
    ];
    for token in &tokens {
        let description =
            assert_unauthorized(echo_with(&gateway, token).await, "CREDENTIALS_INVALID").await;
        assert!(description.contains("crit"), "{description}");
    }
    assert_eq!(scripted.call_count(), 1);
}

#[tokio::test]
async fn exp_and_nbf_values_out_of_range_are_described_as_such_not_as_a_missing_claim() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = TestKey::hmac(Algorithm::HS256);
    let (scripted, gateway) =
        setup("auth = \"a\"", &provider("a", &key, dir.path(), false, "")).await;
    let secret = key.verifier.as_bytes();
    let header = r#"{"alg":"HS256","typ":"JWT"}"#;
    let base = format!(r#""iss":"{ISSUER}","aud":"{AUDIENCE}","sub":"alice""#);
    let future = unix_now() + 300;
    let cases = [
        (
            format!(r#"{{{base},"exp":1e300}}"#),
            "claim 'exp' is out of range",
        ),
        (format!(r#"{{{base},"exp":-1}}"#), "claim 'exp' is negative"),
        (
            format!(r#"{{{base},"exp":"{future}"}}"#),
            "claim 'exp' must be a whole number of seconds since 1970, not a string",
        ),
        (
            format!(r#"{{{base},"exp":true}}"#),
            "claim 'exp' must be a whole number of seconds since 1970, not a boolean",
        ),
        (
            format!(r#"{{{base},"exp":{future},"nbf":1e300}}"#),
            "claim 'nbf' is out of range",
        ),
        (
            format!(r#"{{{base},"exp":{future},"nbf":-5}}"#),
            "claim 'nbf' is negative",
        ),
        (
            format!(r#"{{{base},"exp":{future},"nbf":"0"}}"#),
            "claim 'nbf' must be a whole number of seconds since 1970, not a string",
        ),
        // A claim that is really absent is still called missing.
        (format!(r#"{{{base}}}"#), "missing required claim 'exp'"),
    ];
    for (payload, expected) in &cases {
        let token = hs256_raw(secret, header, payload);
        let description =
            assert_unauthorized(echo_with(&gateway, &token).await, "CREDENTIALS_INVALID").await;
        assert!(
            description.contains(expected),
            "{payload}: {description:?} does not say {expected:?}"
        );
    }
    assert_eq!(scripted.call_count(), 0);
}

#[tokio::test]
async fn claims_of_the_wrong_json_type_are_refused_even_when_correctly_signed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = TestKey::hmac(Algorithm::HS256);
    let (scripted, gateway) =
        setup("auth = \"a\"", &provider("a", &key, dir.path(), false, "")).await;
    let secret = key.verifier.as_bytes();
    let header = r#"{"alg":"HS256","typ":"JWT"}"#;
    let now = unix_now();

    // The hand-signing helper itself produces tokens the gateway accepts.
    let good = format!(
        r#"{{"iss":"{ISSUER}","aud":"{AUDIENCE}","sub":"alice","exp":{}}}"#,
        now + 300
    );
    assert_ok(echo_with(&gateway, &hs256_raw(secret, header, &good)).await).await;
    assert_eq!(scripted.call_count(), 1);

    let base = format!(r#""iss":"{ISSUER}","aud":"{AUDIENCE}","sub":"alice""#);
    let future = now + 300;
    let bad = [
        format!(r#"{{{base},"exp":"9999999999"}}"#),
        format!(r#"{{{base},"exp":1e300}}"#),
        format!(r#"{{{base},"exp":-1}}"#),
        format!(r#"{{{base},"exp":-9999999999}}"#),
        format!(r#"{{{base},"exp":true}}"#),
        format!(r#"{{{base},"exp":null}}"#),
        format!(r#"{{{base},"exp":[{future}]}}"#),
        format!(r#"{{{base},"exp":{{"value":{future}}}}}"#),
        format!(r#"{{{base},"exp":{future},"nbf":"0"}}"#),
        format!(r#"{{"iss":1,"aud":"{AUDIENCE}","sub":"alice","exp":{future}}}"#),
        format!(r#"{{"iss":"{ISSUER}","aud":7,"sub":"alice","exp":{future}}}"#),
        format!(r#"[{{"iss":"{ISSUER}","aud":"{AUDIENCE}","exp":{future}}}]"#),
        "\"just a string\"".to_string(),
    ];
    for payload in &bad {
        let token = hs256_raw(secret, header, payload);
        let response = echo_with(&gateway, &token).await;
        let description = assert_unauthorized(response, "CREDENTIALS_INVALID").await;
        assert!(!description.is_empty(), "{payload}");
    }
    assert_eq!(scripted.call_count(), 1);
}

/// Checks a 400 `invalid_request` (RFC 6750 §3.1): code INVALID_ARGUMENT,
/// reason CREDENTIALS_AMBIGUOUS, and, on a route that takes tokens, a Bearer
/// challenge with that error. Returns the description.
async fn assert_invalid_request(response: reqwest::Response) -> String {
    let refused = refusal(response).await;
    assert_eq!(refused.status, 400, "{:?}", refused.body);
    assert_eq!(refused.body["code"], 3, "{:?}", refused.body);
    assert_eq!(
        refused.body["details"][0]["reason"],
        "CREDENTIALS_AMBIGUOUS"
    );
    let challenge = refused
        .challenge
        .unwrap_or_else(|| panic!("no Bearer challenge: {:?}", refused.challenges));
    assert_eq!(
        challenge.get("error").map(String::as_str),
        Some("invalid_request")
    );
    challenge
        .get("error_description")
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn two_authorization_headers_are_a_400_invalid_request_even_when_both_are_valid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = TestKey::hmac(Algorithm::HS256);
    let (scripted, gateway) =
        setup("auth = \"a\"", &provider("a", &key, dir.path(), false, "")).await;
    let first = format!("Bearer {}", key.sign(&claims("alice")));
    let second = format!("Bearer {}", key.sign(&claims("bob")));
    let response = echo(
        &gateway,
        &[("authorization", &first), ("authorization", &second)],
    )
    .await;
    let description = assert_invalid_request(response).await;
    assert!(description.contains("more than one"), "{description}");
    // The same token twice is still two credentials, and so is a valid
    // token beside a malformed header.
    for pair in [
        [&first, &first],
        [&first, &"Basic YWxhZGRpbjpvcGVu".to_string()],
    ] {
        let response = echo(
            &gateway,
            &[("authorization", pair[0]), ("authorization", pair[1])],
        )
        .await;
        assert_invalid_request(response).await;
    }
    assert_eq!(scripted.call_count(), 0);
}

#[tokio::test]
async fn a_header_token_plus_a_query_token_on_an_any_of_route_is_a_400_invalid_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = TestKey::hmac(Algorithm::HS256);
    let b = TestKey::rsa(Algorithm::RS256, "b");
    let tables = format!(
        "{}{}",
        provider("a", &a, dir.path(), false, ""),
        provider(
            "b",
            &b,
            dir.path(),
            false,
            "token = { query = \"access_token\" }"
        )
    );
    let (scripted, gateway) = setup("auth = [\"a\", \"b\"]", &tables).await;
    let header_token = a.sign(&claims("alice"));
    let query_token = b.sign(&claims("bob"));

    let both = echo_at(
        &gateway,
        &format!("/v1/echo?access_token={query_token}"),
        &[("authorization", &format!("Bearer {header_token}"))],
    )
    .await;
    let description = assert_invalid_request(both).await;
    assert!(description.contains("more than one"), "{description}");
    // Two query tokens are two credentials as well.
    let twice = echo_at(
        &gateway,
        &format!("/v1/echo?access_token={query_token}&access_token={query_token}"),
        &[],
    )
    .await;
    assert_invalid_request(twice).await;
    assert_eq!(scripted.call_count(), 0);

    // Each alone is admitted by its own provider; the query parameter is
    // consumed by authentication, not transcoded into the message.
    assert_ok(echo_with(&gateway, &header_token).await).await;
    assert_eq!(last_call_values(&scripted, "x-user-id"), ["alice"]);
    let body = assert_ok(
        echo_at(
            &gateway,
            &format!("/v1/echo?access_token={query_token}"),
            &[],
        )
        .await,
    )
    .await;
    assert_eq!(body["stringValue"], "hi");
    assert_eq!(last_call_values(&scripted, "x-user-id"), ["bob"]);
}

#[tokio::test]
async fn any_of_two_bearer_providers_admits_tokens_of_either() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = TestKey::hmac(Algorithm::HS256);
    let b = TestKey::ec("b");
    let tables = format!(
        "{}{}",
        provider("a", &a, dir.path(), false, ""),
        provider("b", &b, dir.path(), false, "")
    );
    let (scripted, gateway) = setup("auth = [\"a\", \"b\"]", &tables).await;
    assert_ok(echo_with(&gateway, &a.sign(&claims("alice"))).await).await;
    assert_eq!(last_call_values(&scripted, "x-user-id"), ["alice"]);
    assert_ok(echo_with(&gateway, &b.sign(&claims("bob"))).await).await;
    assert_eq!(last_call_values(&scripted, "x-user-id"), ["bob"]);
    // A token neither provider signed is still refused.
    let stranger = TestKey::ec("b").sign(&claims("eve"));
    assert_unauthorized(echo_with(&gateway, &stranger).await, "CREDENTIALS_INVALID").await;
    assert_eq!(scripted.call_count(), 2);
}

#[tokio::test]
async fn an_rs256_public_key_used_as_an_hs256_secret_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = TestKey::rsa(Algorithm::RS256, "rs");
    let (scripted, gateway) =
        setup("auth = \"a\"", &provider("a", &key, dir.path(), false, "")).await;
    let pem_bytes = std::fs::read(dir.path().join("a.pem")).expect("pem");
    let trimmed = key.verifier.trim_end().as_bytes().to_vec();
    let jwk_bytes = key.jwk.to_string().into_bytes();
    for secret in [pem_bytes, trimmed, jwk_bytes] {
        for kid in [None, Some("rs".to_string())] {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = kid;
            let token = jsonwebtoken::encode(
                &header,
                &claims("admin"),
                &EncodingKey::from_secret(&secret),
            )
            .expect("sign");
            assert_unauthorized(echo_with(&gateway, &token).await, "CREDENTIALS_INVALID").await;
        }
    }
    // The real key still works.
    assert_ok(echo_with(&gateway, &key.sign(&claims("alice"))).await).await;
    assert_eq!(scripted.call_count(), 1);
}

#[tokio::test]
async fn an_algorithm_not_in_the_providers_list_is_refused_even_with_the_right_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rsa = TestKey::rsa(Algorithm::RS256, "rs");
    let hmac = TestKey::hmac(Algorithm::HS256);
    let tables = format!(
        "{}{}",
        provider("a", &rsa, dir.path(), false, ""),
        provider("h", &hmac, dir.path(), false, "")
    );
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&auth_toml(scripted.addr, "auth = \"a\"", &tables)).await;
    for alg in [Algorithm::PS256, Algorithm::RS384, Algorithm::RS512] {
        let mut header = rsa.header();
        header.alg = alg;
        let token = rsa.sign_with(&header, &claims("alice"));
        let description =
            assert_unauthorized(echo_with(&gateway, &token).await, "CREDENTIALS_INVALID").await;
        assert!(
            description.contains("not accepted"),
            "{alg:?}: {description}"
        );
    }
    let hmac_gateway = spawn_gateway(&auth_toml(scripted.addr, "auth = \"h\"", &tables)).await;
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        let mut header = hmac.header();
        header.alg = alg;
        let token = hmac.sign_with(&header, &claims("alice"));
        assert_unauthorized(
            echo_with(&hmac_gateway, &token).await,
            "CREDENTIALS_INVALID",
        )
        .await;
    }
    assert_eq!(scripted.call_count(), 0);
}

#[tokio::test]
async fn a_jwk_pinned_to_rs256_refuses_a_ps256_token_from_the_same_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = TestKey::rsa(Algorithm::RS256, "rs");
    let path = dir.path().join("keys.json");
    std::fs::write(&path, jwks_of(&[&key])).expect("write jwks");
    let tables = format!(
        r#"
[auth.providers.a]
issuer = "{ISSUER}"
audiences = ["{AUDIENCE}"]
algorithms = ["RS256", "PS256"]
jwks_file = "{}"
"#,
        path.display()
    );
    let (scripted, gateway) = setup("auth = \"a\"", &tables).await;
    assert_ok(echo_with(&gateway, &key.sign(&claims("alice"))).await).await;
    let mut header = key.header();
    header.alg = Algorithm::PS256;
    let token = key.sign_with(&header, &claims("alice"));
    assert_unauthorized(echo_with(&gateway, &token).await, "CREDENTIALS_INVALID").await;
    assert_eq!(scripted.call_count(), 1);
}

#[tokio::test]
async fn a_provider_listing_rs256_and_es256_admits_tokens_of_both_families() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rsa = TestKey::rsa(Algorithm::RS256, "rs");
    let ec = TestKey::ec("es");
    let path = dir.path().join("keys.json");
    std::fs::write(&path, jwks_of(&[&rsa, &ec])).expect("write jwks");
    let tables = format!(
        r#"
[auth.providers.a]
issuer = "{ISSUER}"
audiences = ["{AUDIENCE}"]
algorithms = ["RS256", "ES256"]
jwks_file = "{}"
claims_to_metadata = {{ sub = "x-user-id" }}
"#,
        path.display()
    );
    let (scripted, gateway) = setup("auth = \"a\"", &tables).await;
    assert_ok(echo_with(&gateway, &rsa.sign(&claims("rsa-user"))).await).await;
    assert_eq!(last_call_values(&scripted, "x-user-id"), ["rsa-user"]);
    assert_ok(echo_with(&gateway, &ec.sign(&claims("ec-user"))).await).await;
    assert_eq!(last_call_values(&scripted, "x-user-id"), ["ec-user"]);
    // The EC key cannot be made to verify an RS256 token by naming its kid.
    let mut header = rsa.header();
    header.kid = Some("es".into());
    let token = rsa.sign_with(&header, &claims("x"));
    assert_unauthorized(echo_with(&gateway, &token).await, "CREDENTIALS_INVALID").await;
    assert_eq!(scripted.call_count(), 2);
}

#[tokio::test]
async fn expired_not_yet_valid_wrong_issuer_and_wrong_audience_tokens_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = TestKey::hmac(Algorithm::HS256);
    let (scripted, gateway) = setup(
        "auth = \"a\"",
        &provider("a", &key, dir.path(), false, "leeway = \"5s\""),
    )
    .await;
    let now = unix_now();
    let refused = [
        (json!({"exp": now - 60}), "expired"),
        (json!({"exp": now - 3600, "nbf": now - 7200}), "expired"),
        (json!({"nbf": now + 60}), "not valid yet"),
        (json!({"iss": "https://evil.test"}), "issuer"),
        (json!({"iss": format!("{ISSUER}/")}), "issuer"),
        (json!({"aud": "other"}), "audience"),
        (json!({"aud": ["other", "more"]}), "audience"),
        (json!({"exp": null}), "exp"),
        (json!({"iss": null}), "iss"),
        (json!({"aud": null}), "aud"),
    ];
    for (extra, expected) in &refused {
        let token = key.sign(&claims_with("alice", extra.clone()));
        let description =
            assert_unauthorized(echo_with(&gateway, &token).await, "CREDENTIALS_INVALID").await;
        assert!(description.contains(expected), "{extra}: {description}");
    }
    assert_eq!(scripted.call_count(), 0);
    // Inside the leeway, and with the audience among several: admitted.
    for extra in [
        json!({"exp": now - 2}),
        json!({"nbf": now + 2}),
        json!({"aud": ["other", AUDIENCE]}),
    ] {
        let token = key.sign(&claims_with("alice", extra.clone()));
        assert_ok(echo_with(&gateway, &token).await).await;
    }
    assert_eq!(scripted.call_count(), 3);
}

#[tokio::test]
async fn malformed_base64_wrong_segment_counts_and_oversized_tokens_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = TestKey::hmac(Algorithm::HS256);
    let (scripted, gateway) = setup(
        "auth = \"a\"",
        &provider("a", &key, dir.path(), false, "max_token_bytes = 1024"),
    )
    .await;
    let good = key.sign(&claims("alice"));
    let (header, rest) = good.split_once('.').expect("segments");
    let (payload, signature) = rest.split_once('.').expect("segments");
    let padded = format!("{good}==");
    let bad = [
        "not-a-token".to_string(),
        format!("{header}.{payload}"),
        format!("{good}.{signature}"),
        format!("{header}.{payload}.{signature}.."),
        "..".to_string(),
        "!!!.@@@.###".to_string(),
        format!("{header}.%%%%.{signature}"),
        format!("{header}.{payload}.%%%%"),
        format!("{header}=.{payload}.{signature}"),
        format!("{}.{payload}.{signature}", b64url(b"{not json")),
        format!("{}.{payload}.{signature}", b64url(b"[]")),
        padded,
    ];
    for token in &bad {
        assert_unauthorized(echo_with(&gateway, token).await, "CREDENTIALS_INVALID").await;
    }
    // Over max_token_bytes: refused by size, before any parsing.
    let big = key.sign(&claims_with("alice", json!({"pad": "x".repeat(1024)})));
    assert!(big.len() > 1024);
    let description =
        assert_unauthorized(echo_with(&gateway, &big).await, "CREDENTIALS_INVALID").await;
    assert!(description.contains("1024"), "{description}");
    let huge = "a".repeat(12_000);
    assert_unauthorized(echo_with(&gateway, &huge).await, "CREDENTIALS_INVALID").await;
    assert_eq!(scripted.call_count(), 0);
    // At the limit: admitted.
    let fitting = (0..1024)
        .rev()
        .map(|n| key.sign(&claims_with("alice", json!({"pad": "x".repeat(n)}))))
        .find(|t| t.len() <= 1024)
        .expect("a token fits");
    assert!(fitting.len() > 1000, "{}", fitting.len());
    assert_ok(echo_with(&gateway, &fitting).await).await;
    assert_eq!(scripted.call_count(), 1);
}

#[tokio::test]
async fn a_token_header_with_duplicate_keys_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = TestKey::hmac(Algorithm::HS256);
    let (scripted, gateway) =
        setup("auth = \"a\"", &provider("a", &key, dir.path(), false, "")).await;
    let secret = key.verifier.as_bytes();
    let payload = claims("alice").to_string();
    for header in [
        r#"{"alg":"HS256","alg":"none"}"#,
        r#"{"alg":"none","alg":"HS256"}"#,
        r#"{"alg":"HS256","alg":"HS256"}"#,
        r#"{"alg":"HS256","kid":"a","kid":"b"}"#,
    ] {
        let token = hs256_raw(secret, header, &payload);
        assert_unauthorized(echo_with(&gateway, &token).await, "CREDENTIALS_INVALID").await;
    }
    assert_eq!(scripted.call_count(), 0);
}

#[tokio::test]
async fn a_kid_with_quotes_backslashes_or_non_ascii_still_gets_a_valid_challenge() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = TestKey::ec("es");
    let path = dir.path().join("keys.json");
    std::fs::write(&path, jwks_of(&[&key])).expect("write jwks");
    let tables = format!(
        r#"
[auth.providers.a]
issuer = "{ISSUER}"
algorithms = ["ES256"]
jwks_file = "{}"
"#,
        path.display()
    );
    let (scripted, gateway) = setup("auth = \"a\"", &tables).await;
    for kid in ["a\"b\\c", "clé", "\u{202e}evil", "line\r\nbreak", "\u{0}"] {
        let mut header = key.header();
        header.kid = Some(kid.to_string());
        let token = key.sign_with(&header, &claims("alice"));
        let description =
            assert_unauthorized(echo_with(&gateway, &token).await, "CREDENTIALS_INVALID").await;
        assert!(description.contains("key id"), "{kid:?}: {description}");
    }
    assert_eq!(scripted.call_count(), 0);
}

#[tokio::test]
async fn jku_x5u_and_embedded_jwk_headers_pointing_at_attacker_keys_are_ignored() {
    let legit = TestKey::rsa(Algorithm::RS256, "legit");
    // The attacker's key, published under both the issuer's kid and its own.
    let attacker = TestKey::rsa(Algorithm::RS256, "legit");
    let mut renamed = attacker.jwk.clone();
    renamed["kid"] = json!("evil");
    let issuer = JwksServer::start(jwks_of(&[&legit])).await;
    let evil = JwksServer::start(json!({"keys": [attacker.jwk, renamed]}).to_string()).await;
    let tables = format!(
        r#"
[auth.providers.a]
issuer = "{ISSUER}"
audiences = ["{AUDIENCE}"]
algorithms = ["RS256"]
jwks_url = "{}"
jwks_cooldown = "0s"
"#,
        issuer.url
    );
    let (scripted, gateway) = setup("auth = \"a\"", &tables).await;
    let attacker_jwk: jsonwebtoken::jwk::Jwk =
        serde_json::from_value(attacker.jwk.clone()).expect("jwk");
    let mut headers = Vec::new();
    for kid in [Some("legit"), Some("evil"), None] {
        let mut jku = attacker.header();
        jku.kid = kid.map(str::to_string);
        jku.jku = Some(evil.url.clone());
        let mut x5u = jku.clone();
        x5u.jku = None;
        x5u.x5u = Some(evil.url.clone());
        let mut jwk = jku.clone();
        jwk.jku = None;
        jwk.jwk = Some(attacker_jwk.clone());
        let mut all = jku.clone();
        all.x5u = Some(evil.url.clone());
        all.jwk = Some(attacker_jwk.clone());
        headers.extend([jku, x5u, jwk, all]);
    }
    // Wait for the issuer's keys so refusals are about the key, not a 503.
    let deadline = Instant::now() + Duration::from_secs(5);
    while echo_with(&gateway, &legit.sign(&claims("alice")))
        .await
        .status()
        != 200
    {
        assert!(Instant::now() < deadline, "the issuer's keys never loaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let admitted = scripted.call_count();
    for header in &headers {
        let token = attacker.sign_with(header, &claims("admin"));
        assert_unauthorized(echo_with(&gateway, &token).await, "CREDENTIALS_INVALID").await;
    }
    assert_eq!(evil.requests(), 0, "the attacker's URL was fetched");
    assert_eq!(scripted.call_count(), admitted);
    // The same headers on a token the issuer's key signed change nothing.
    let mut header = headers[3].clone();
    header.kid = Some("legit".into());
    assert_ok(echo_with(&gateway, &legit.sign_with(&header, &claims("alice"))).await).await;
    assert_eq!(evil.requests(), 0);
}

#[tokio::test]
async fn a_spoofed_x_forwarded_for_is_not_trusted_on_an_authenticated_route() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = TestKey::hmac(Algorithm::HS256);
    let (scripted, gateway) =
        setup("auth = \"a\"", &provider("a", &key, dir.path(), false, "")).await;
    let token = key.sign(&claims("alice"));
    let response = echo(
        &gateway,
        &[
            ("authorization", &format!("Bearer {token}")),
            ("x-forwarded-for", "10.0.0.1, 6.6.6.6"),
        ],
    )
    .await;
    assert_ok(response).await;
    assert_eq!(
        last_call_values(&scripted, "x-forwarded-for"),
        ["127.0.0.1"]
    );
}

// === scopes, claims, forwarding ===

#[tokio::test]
async fn a_token_without_the_required_scope_gets_403_insufficient_scope() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = TestKey::hmac(Algorithm::HS256);
    let (scripted, gateway) = setup(
        "auth = \"a\"\nscopes = [\"echo.write\", \"echo.read\"]",
        &provider("a", &key, dir.path(), false, ""),
    )
    .await;
    for scope in [
        json!(null),
        json!("echo.read"),
        json!("echo.writer echo.read"),
        json!(["echo.read"]),
        json!(42),
        json!("ECHO.WRITE echo.read"),
    ] {
        let token = key.sign(&claims_with("alice", json!({"scope": scope})));
        let challenge = assert_forbidden(echo_with(&gateway, &token).await).await;
        assert_eq!(
            challenge.get("scope").map(String::as_str),
            Some("echo.write echo.read"),
            "{scope}"
        );
    }
    assert_eq!(scripted.call_count(), 0);
    for granted in [
        json!({"scope": "echo.read echo.write admin"}),
        json!({"scp": ["echo.write", "echo.read"]}),
    ] {
        let token = key.sign(&claims_with("alice", granted));
        assert_ok(echo_with(&gateway, &token).await).await;
    }
    assert_eq!(scripted.call_count(), 2);
}

#[tokio::test]
async fn a_required_claim_with_another_value_gets_403() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = TestKey::hmac(Algorithm::HS256);
    let (scripted, gateway) = setup(
        "auth = \"a\"\nclaims = { tenant = \"acme\" }",
        &provider("a", &key, dir.path(), false, ""),
    )
    .await;
    for tenant in [
        json!("globex"),
        json!("ACME"),
        json!(null),
        json!(["globex"]),
        json!({"name": "acme"}),
    ] {
        let token = key.sign(&claims_with("alice", json!({"tenant": tenant})));
        let challenge = assert_forbidden(echo_with(&gateway, &token).await).await;
        assert!(
            challenge["error_description"].contains("tenant"),
            "{challenge:?}"
        );
        // No scope is required, so none is named (not even an empty one).
        assert!(!challenge.contains_key("scope"), "{challenge:?}");
    }
    assert_eq!(scripted.call_count(), 0);
    for tenant in [json!("acme"), json!(["globex", "acme"])] {
        let token = key.sign(&claims_with("alice", json!({"tenant": tenant})));
        assert_ok(echo_with(&gateway, &token).await).await;
    }
    assert_eq!(scripted.call_count(), 2);
}

#[tokio::test]
async fn forward_authorization_true_forwards_the_header_and_the_default_does_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = TestKey::hmac(Algorithm::HS256);
    let tables = provider("a", &key, dir.path(), false, "");
    let token = key.sign(&claims("alice"));
    let bearer = format!("Bearer {token}");

    let (scripted, gateway) = setup("auth = \"a\"", &tables).await;
    assert_ok(echo_with(&gateway, &token).await).await;
    assert!(last_call_values(&scripted, "authorization").is_empty());

    let (scripted, gateway) = setup("auth = \"a\"\nforward_authorization = true", &tables).await;
    assert_ok(echo_with(&gateway, &token).await).await;
    assert_eq!(last_call_values(&scripted, "authorization"), [bearer]);
    assert_eq!(last_call_values(&scripted, "x-user-id"), ["alice"]);
}

// === API keys ===

/// A keys file with these `(consumer, key)` pairs, stored as SHA-256 hex.
fn keys_file(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(consumer, key)| {
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
            let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
            format!("[[keys]]\nconsumer = \"{consumer}\"\nsha256 = \"{hex}\"\n")
        })
        .collect()
}

fn random_api_key() -> String {
    let bytes: [u8; 24] = rand::random();
    format!("pk_{}", b64url(&bytes))
}

#[tokio::test]
async fn an_api_key_admits_its_consumer_forwarded_as_x_consumer_and_one_character_off_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = random_api_key();
    let path = dir.path().join("keys.toml");
    std::fs::write(&path, keys_file(&[("partner-a", &key)])).expect("write keys");
    let tables = format!("\n[auth.api_keys]\nkeys_file = \"{}\"\n", path.display());
    let (scripted, gateway) = setup("auth = \"api_key\"", &tables).await;
    let response = echo(
        &gateway,
        &[("x-api-key", &key), ("x-consumer", "partner-b")],
    )
    .await;
    assert_ok(response).await;
    assert_eq!(last_call_values(&scripted, "x-consumer"), ["partner-a"]);
    assert!(last_call_values(&scripted, "x-api-key").is_empty());

    let mut off_by_one = Vec::new();
    let chars: Vec<char> = key.chars().collect();
    for i in [0, chars.len() / 2, chars.len() - 1] {
        let mut changed = chars.clone();
        changed[i] = if changed[i] == 'A' { 'B' } else { 'A' };
        off_by_one.push(changed.into_iter().collect::<String>());
    }
    off_by_one.push(key[..key.len() - 1].to_string());
    off_by_one.push(format!("{key}x"));
    off_by_one.push(format!("x{key}"));
    for wrong in &off_by_one {
        assert_ne!(wrong, &key);
        assert_api_key_refused(
            echo(&gateway, &[("x-api-key", wrong)]).await,
            "CREDENTIALS_INVALID",
        )
        .await;
    }
    assert_api_key_refused(echo(&gateway, &[]).await, "CREDENTIALS_MISSING").await;
    // The key in a bearer header is not the configured source.
    assert_api_key_refused(
        echo(&gateway, &[("authorization", &format!("Bearer {key}"))]).await,
        "CREDENTIALS_MISSING",
    )
    .await;
    assert_eq!(scripted.call_count(), 1);
}

/// Checks a 401 on a route that takes only API keys: an `ApiKey` challenge
/// naming the `x-api-key` header, and no Bearer challenge (no token would do).
async fn assert_api_key_refused(response: reqwest::Response, reason: &str) {
    let refused = refusal(response).await;
    assert_eq!(refused.status, 401, "{:?}", refused.body);
    assert_eq!(refused.body["code"], 16, "{:?}", refused.body);
    assert_eq!(refused.body["details"][0]["reason"], reason);
    assert_eq!(refused.challenges, ["ApiKey header=\"x-api-key\""]);
}

#[tokio::test]
async fn an_api_key_only_route_sends_an_api_key_challenge_naming_its_header_and_no_bearer_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = random_api_key();
    let path = dir.path().join("keys.toml");
    std::fs::write(&path, keys_file(&[("partner-a", &key)])).expect("write keys");
    let tables = format!(
        "\n[auth.api_keys]\nkeys_file = \"{}\"\nsource = {{ header = \"x-partner-key\" }}\n",
        path.display()
    );
    let (scripted, gateway) = setup("auth = \"api_key\"", &tables).await;
    for headers in [vec![], vec![("x-partner-key", "pk_wrong")]] {
        let refused = refusal(echo(&gateway, &headers).await).await;
        assert_eq!(refused.status, 401, "{:?}", refused.body);
        assert_eq!(refused.challenges, ["ApiKey header=\"x-partner-key\""]);
    }
    // Two keys are ambiguous: 400, and still no Bearer challenge.
    let two = echo(
        &gateway,
        &[("x-partner-key", &key), ("x-partner-key", &key)],
    )
    .await;
    let refused = refusal(two).await;
    assert_eq!(refused.status, 400, "{:?}", refused.body);
    assert_eq!(
        refused.body["details"][0]["reason"],
        "CREDENTIALS_AMBIGUOUS"
    );
    assert!(refused.challenges.is_empty(), "{:?}", refused.challenges);
    assert_eq!(scripted.call_count(), 0);
    assert_ok(echo(&gateway, &[("x-partner-key", &key)]).await).await;
}

#[tokio::test]
async fn a_token_and_an_api_key_together_on_an_either_credential_route_are_a_400_invalid_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let api_key = random_api_key();
    let path = dir.path().join("keys.toml");
    std::fs::write(&path, keys_file(&[("partner-a", &api_key)])).expect("write keys");
    let jwt = TestKey::hmac(Algorithm::HS256);
    let tables = format!(
        "{}\n[auth.api_keys]\nkeys_file = \"{}\"\n",
        provider("a", &jwt, dir.path(), false, ""),
        path.display()
    );
    let (scripted, gateway) = setup("auth = [\"a\", \"api_key\"]", &tables).await;
    let bearer = format!("Bearer {}", jwt.sign(&claims("alice")));

    let both = echo(
        &gateway,
        &[("authorization", &bearer), ("x-api-key", &api_key)],
    )
    .await;
    let description = assert_invalid_request(both).await;
    assert!(description.contains("more than one"), "{description}");
    assert_eq!(scripted.call_count(), 0);

    // Nothing at all: both ways in are offered, neither with an error code.
    let refused = refusal(echo(&gateway, &[]).await).await;
    assert_eq!(refused.status, 401);
    assert_eq!(
        refused.challenges,
        ["Bearer realm=\"protogate\"", "ApiKey header=\"x-api-key\""]
    );
    // Each alone is admitted.
    assert_ok(echo(&gateway, &[("authorization", &bearer)]).await).await;
    assert_ok(echo(&gateway, &[("x-api-key", &api_key)]).await).await;
    assert_eq!(scripted.call_count(), 2);
}

#[tokio::test]
async fn a_revoked_api_key_is_refused_once_the_keys_file_is_rewritten_and_the_config_reloaded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let (old, kept) = (random_api_key(), random_api_key());
    let keys_path = dir.path().join("keys.toml");
    std::fs::write(&keys_path, keys_file(&[("old", &old), ("kept", &kept)])).expect("write");
    let routes = auth_toml(
        scripted.addr,
        "auth = \"api_key\"",
        "\n[auth.api_keys]\nkeys_file = \"keys.toml\"\n",
    )
    .replace("{proto}", PROTO_DIR);
    let routes_path = dir.path().join("routes.toml");
    std::fs::write(&routes_path, routes).expect("write routes");
    let (gateway, handle) = spawn_gateway_from(&routes_path).await;
    assert_ok(echo(&gateway, &[("x-api-key", &old)]).await).await;
    assert_eq!(last_call_values(&scripted, "x-consumer"), ["old"]);

    std::fs::write(&keys_path, keys_file(&[("kept", &kept)])).expect("rewrite");
    // Until the reload, the old key set serves.
    assert_ok(echo(&gateway, &[("x-api-key", &old)]).await).await;
    handle.replace(compile_snapshot(&routes_path).await);
    assert_api_key_refused(
        echo(&gateway, &[("x-api-key", &old)]).await,
        "CREDENTIALS_INVALID",
    )
    .await;
    assert_eq!(scripted.call_count(), 2);
    assert_ok(echo(&gateway, &[("x-api-key", &kept)]).await).await;
    assert_eq!(last_call_values(&scripted, "x-consumer"), ["kept"]);
}

// === protogate token and the demo ===

#[tokio::test]
async fn protogate_token_mints_a_token_the_demo_accepts_for_create_book_and_without_the_scope_403()
{
    let (bookstore, _) = spawn_bookstore().await;
    let (_dir, path) = support::demo_routes(bookstore);

    let mint = |scopes: &[&str]| {
        let mut args = vec!["token", "--config", path.to_str().expect("utf-8")];
        for scope in scopes {
            args.extend(["--scope", scope]);
        }
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_protogate"))
            .args(&args)
            .env("RUST_LOG", "off")
            .output()
            .expect("run protogate token");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout)
            .expect("utf-8")
            .trim()
            .to_string()
    };
    let writer = mint(&["bookstore.write"]);
    let reader = mint(&[]);
    assert_eq!(writer.split('.').count(), 3, "{writer}");

    let (gateway, _handle) = spawn_gateway_from(&path).await;
    let create = |token: Option<String>| {
        let mut request = client()
            .post(format!("{}/v1/shelves/1/books", gateway.base))
            .header("content-type", "application/json")
            .body(r#"{"title":"Dune","author":"Frank Herbert"}"#);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        request.send()
    };
    let created = create(Some(writer)).await.expect("send");
    assert_eq!(created.status(), 201, "the shipped CreateBook answers 201");
    let book: Value = created.json().await.expect("JSON");
    assert_eq!(book["title"], "Dune");
    let challenge = assert_forbidden(create(Some(reader)).await.expect("send")).await;
    assert_eq!(challenge["scope"], "bookstore.write");
    assert_unauthorized(create(None).await.expect("send"), "CREDENTIALS_MISSING").await;
    // Reads stay public.
    let shelves = client()
        .get(format!("{}/v1/shelves", gateway.base))
        .send()
        .await
        .expect("send");
    assert_ok(shelves).await;
}

// === provider settings ===

/// Compiles (without fetching) a routes.toml whose provider `a` reads a
/// JWKS URL with `settings`; the rendered errors, empty if it compiles.
fn compile_errors(settings: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let tables = format!(
        "\n[auth.providers.a]\nissuer = \"{ISSUER}\"\nalgorithms = [\"ES256\"]\n\
         jwks_url = \"http://127.0.0.1:9/jwks.json\"\n{settings}\n"
    );
    let toml = auth_toml(
        "127.0.0.1:9".parse().expect("addr"),
        "auth = \"a\"",
        &tables,
    )
    .replace("{proto}", PROTO_DIR);
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, toml).expect("write");
    let loaded = protogate::config::load(&path)
        .unwrap_or_else(|(source, errors)| panic!("{}", source.render(&errors)));
    match protogate::snapshot::compile(&loaded) {
        Ok(_) => String::new(),
        Err(errors) => loaded.source.render(&errors).to_string(),
    }
}

#[test]
fn a_leeway_over_an_hour_or_a_zero_jwks_refresh_or_timeout_is_a_config_error() {
    // A leeway of decades made jsonwebtoken's `now - leeway` overflow: a
    // panic on every request in debug builds, every token expired in release.
    let rendered = compile_errors("leeway = \"100years\"");
    assert!(rendered.contains("leeway"), "{rendered}");
    // A zero refresh fetched the JWKS in a tight loop (hundreds a second).
    let rendered = compile_errors("jwks_refresh = \"0s\"");
    assert!(
        rendered.contains("jwks_refresh must be longer than 0"),
        "{rendered}"
    );
    let rendered = compile_errors("jwks_timeout = \"0s\"");
    assert!(
        rendered.contains("jwks_timeout must be longer than 0"),
        "{rendered}"
    );
    for fine in [
        "",
        "leeway = \"1h\"",
        "leeway = \"0s\"",
        "jwks_cooldown = \"0s\"",
        "jwks_refresh = \"100ms\"\njwks_timeout = \"1ms\"",
    ] {
        assert_eq!(compile_errors(fine), "", "{fine:?}");
    }
}
