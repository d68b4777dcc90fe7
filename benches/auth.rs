//! Token verification cost through `JwtProvider::verify` with the key
//! already loaded (the request path once a JWKS is cached): HS256, RS256
//! (a JWKS key and a PEM key), ES256 and EdDSA, each a valid token with
//! the claims a real issuer sends, checked for signature, `exp`, `nbf`,
//! `iss` and `aud`, with `sub` mapped to identity metadata.

use std::future::Future;
use std::hint::black_box;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
};
use base64::Engine;
use criterion::{Criterion, criterion_group, criterion_main};
use http::HeaderName;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use protogate::auth::jwt::{JwtProvider, KeySet, Keys};
use serde_json::json;

const ISSUER: &str = "https://issuer.example";
const AUDIENCE: &str = "api";

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn pem(label: &str, der: &[u8]) -> String {
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = text
        .as_bytes()
        .chunks(64)
        .map(|l| std::str::from_utf8(l).expect("ascii"))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// A provider as routes.toml builds one: one algorithm, issuer, audience,
/// exp/iss/aud required, nbf checked, `sub` → `x-user-id`.
fn provider(alg: Algorithm, kid: Option<&str>, key: DecodingKey) -> JwtProvider {
    let mut validation = Validation::new(alg);
    validation.leeway = 30;
    validation.validate_nbf = true;
    validation.set_issuer(&[ISSUER]);
    validation.set_audience(&[AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    let mut keys = KeySet::default();
    keys.insert(kid.map(str::to_string), key, Some(alg));
    JwtProvider::new(
        "bench".into(),
        validation,
        Keys::Static(Arc::new(keys)),
        8 << 10,
        vec![("sub".into(), HeaderName::from_static("x-user-id"))],
    )
}

/// A token with the claims of a typical access token.
fn token(alg: Algorithm, kid: Option<&str>, key: &EncodingKey) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "user-1234567890",
        "iat": now, "nbf": now, "exp": now + 3600,
        "scope": "bookstore.read bookstore.write", "tenant": "acme",
    });
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, &claims, key).expect("sign")
}

fn jwk(value: serde_json::Value) -> DecodingKey {
    let jwk: Jwk = serde_json::from_value(value).expect("jwk");
    DecodingKey::from_jwk(&jwk).expect("usable jwk")
}

/// Every case: name, provider, valid token.
fn cases() -> Vec<(&'static str, JwtProvider, String)> {
    let mut cases = Vec::new();

    let secret: [u8; 32] = rand::random();
    let secret = b64url(&secret);
    let encoding = EncodingKey::from_secret(secret.as_bytes());
    cases.push((
        "hs256",
        provider(
            Algorithm::HS256,
            None,
            DecodingKey::from_secret(secret.as_bytes()),
        ),
        token(Algorithm::HS256, None, &encoding),
    ));

    let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("rsa");
    let pkcs8: Pkcs8V1Der<'_> = rsa.as_der().expect("pkcs8");
    let encoding =
        EncodingKey::from_rsa_pem(pem("PRIVATE KEY", pkcs8.as_ref()).as_bytes()).expect("pem");
    let public = rsa.public_key();
    let rsa_jwk = jwk(json!({
        "kty": "RSA", "kid": "rsa-1", "alg": "RS256",
        "n": b64url(public.modulus().big_endian_without_leading_zero()),
        "e": b64url(public.exponent().big_endian_without_leading_zero()),
    }));
    let rs256 = token(Algorithm::RS256, Some("rsa-1"), &encoding);
    cases.push((
        "rs256_jwks_key",
        provider(Algorithm::RS256, Some("rsa-1"), rsa_jwk),
        rs256.clone(),
    ));
    let spki: PublicKeyX509Der<'_> = public.as_der().expect("spki");
    let rsa_pem =
        DecodingKey::from_rsa_pem(pem("PUBLIC KEY", spki.as_ref()).as_bytes()).expect("rsa pem");
    cases.push((
        "rs256_pem_key",
        provider(Algorithm::RS256, None, rsa_pem),
        rs256,
    ));

    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("p-256");
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).expect("p-256");
    let point = pair.public_key().as_ref();
    let ec_jwk = jwk(json!({
        "kty": "EC", "kid": "ec-1", "alg": "ES256", "crv": "P-256",
        "x": b64url(&point[1..33]), "y": b64url(&point[33..65]),
    }));
    cases.push((
        "es256_jwks_key",
        provider(Algorithm::ES256, Some("ec-1"), ec_jwk),
        token(
            Algorithm::ES256,
            Some("ec-1"),
            &EncodingKey::from_ec_der(pkcs8.as_ref()),
        ),
    ));

    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("ed25519");
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("ed25519");
    let ed_jwk = jwk(json!({
        "kty": "OKP", "kid": "ed-1", "alg": "EdDSA", "crv": "Ed25519",
        "x": b64url(pair.public_key().as_ref()),
    }));
    cases.push((
        "eddsa_jwks_key",
        provider(Algorithm::EdDSA, Some("ed-1"), ed_jwk),
        token(
            Algorithm::EdDSA,
            Some("ed-1"),
            &EncodingKey::from_ed_der(pkcs8.as_ref()),
        ),
    ));
    cases
}

/// Runs `verify` to completion: with static keys it never waits, so one
/// poll finishes it (no executor in the measurement).
fn verify_now(provider: &JwtProvider, token: &str) -> usize {
    let mut future = std::pin::pin!(provider.verify(token));
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(Ok((identity, claims))) => identity.metadata.len() + claims.len(),
        Poll::Ready(Err(e)) => panic!("the benchmark token is refused: {e}"),
        Poll::Pending => panic!("verify waited with static keys"),
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("jwt_verify");
    for (name, provider, token) in cases() {
        assert!(verify_now(&provider, &token) > 0);
        group.bench_function(name, |b| {
            b.iter(|| verify_now(black_box(&provider), black_box(&token)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
