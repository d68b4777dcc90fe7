//! Mints tokens for an HMAC provider of routes.toml: `protogate token`, so a
//! newcomer can call the demo's protected routes by copy-pasting.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::config::Loaded;

/// A signed token for `provider` with the given subject, scopes and lifetime.
pub fn token(
    loaded: &Loaded,
    provider: &str,
    subject: &str,
    scopes: &[String],
    ttl: Duration,
) -> Result<String, String> {
    let (_, section) = loaded
        .file
        .auth
        .providers
        .iter()
        .find(|(name, _)| name.get_ref() == provider)
        .ok_or_else(|| format!("routes.toml has no [auth.providers.{provider}]"))?;
    let p = section.get_ref();
    let secret = if let Some(var) = &p.secret_env {
        std::env::var(var.get_ref())
            .map_err(|_| format!("environment variable {} is not set", var.get_ref()))?
    } else if let Some(file) = &p.secret_file {
        std::fs::read_to_string(loaded.base_dir.join(file.get_ref()))
            .map_err(|e| format!("cannot read {}: {e}", file.get_ref().display()))?
    } else {
        return Err(format!(
            "provider '{provider}' verifies with public keys; only its issuer can mint tokens"
        ));
    };
    let algorithm = p
        .algorithms
        .first()
        .and_then(|a| a.get_ref().parse::<Algorithm>().ok())
        .unwrap_or(Algorithm::HS256);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let mut claims = json!({
        "iss": p.issuer,
        "sub": subject,
        "iat": now,
        "nbf": now,
        "exp": now + ttl.as_secs(),
    });
    if let Some(audience) = p.audiences.first() {
        claims["aud"] = json!(audience);
    }
    if !scopes.is_empty() {
        claims["scope"] = json!(scopes.join(" "));
    }
    let key = EncodingKey::from_secret(secret.trim_end_matches(['\n', '\r']).as_bytes());
    jsonwebtoken::encode(&Header::new(algorithm), &claims, &key).map_err(|e| e.to_string())
}
