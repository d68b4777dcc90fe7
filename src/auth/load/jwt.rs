//! Compiles one `[auth.providers.NAME]` into a [`JwtProvider`]: the
//! algorithms (never inferred from tokens) must fit the one key source, the
//! keys are loaded (a file, a PEM, an HMAC secret) or fetched (JWKS), and the
//! validation rules are fixed.

use std::path::Path;
use std::sync::Arc;

use http::HeaderName;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use toml::Spanned;

use super::source;
use crate::auth::Source;
use crate::auth::jwks::{Jwks, JwksConfig};
use crate::auth::jwt::{JwtProvider, KeySet, Keys, family_of};
use crate::config::ConfigError;
use crate::config::auth::JwtProviderSection;
use crate::headers::is_forwardable;

/// Shortest HMAC secret accepted (RFC 7518 §3.2: at least the hash size).
const MIN_SECRET_BYTES: usize = 32;

/// Longest clock-skew leeway accepted. jsonwebtoken computes `now - leeway`
/// unchecked: a leeway of decades panics (debug) or expires every token.
const MAX_LEEWAY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Builds one provider, or reports why it cannot be built.
pub(super) fn provider(
    name: &str,
    section: &Spanned<JwtProviderSection>,
    base_dir: &Path,
    fetch: bool,
    errors: &mut Vec<ConfigError>,
) -> Option<(Arc<JwtProvider>, Source)> {
    let span = section.span();
    let p = section.get_ref();
    let before = errors.len();
    let algorithms = algorithms(name, section, errors);
    if !one_key_source(name, section, errors) {
        return None;
    }
    check_settings(name, section, errors);
    let keys = match &p.jwks_url {
        Some(url) => remote_keys(name, url, p, fetch && errors.len() == before, errors)?,
        None => match static_keys(name, p, &algorithms, base_dir) {
            Ok(set) => Keys::Static(Arc::new(set)),
            Err(reason) => {
                errors.push(ConfigError::at(
                    span,
                    format!("provider '{name}': {reason}"),
                ));
                return None;
            }
        },
    };
    let validation = validation(p, algorithms);
    let claims_to_metadata = claims_to_metadata(p, errors);
    let token_source = source(&p.token, Source::Bearer, span, errors);
    if errors.len() > before {
        return None;
    }
    let provider = JwtProvider::new(
        name.to_string(),
        validation,
        keys,
        p.max_token_bytes,
        claims_to_metadata,
    );
    Some((Arc::new(provider), token_source))
}

/// The listed algorithms; at least one, each known.
fn algorithms(
    name: &str,
    section: &Spanned<JwtProviderSection>,
    errors: &mut Vec<ConfigError>,
) -> Vec<Algorithm> {
    let p = section.get_ref();
    let mut algorithms = Vec::new();
    for alg in &p.algorithms {
        match alg.get_ref().parse::<Algorithm>() {
            Ok(a) => algorithms.push(a),
            Err(_) => errors.push(
                ConfigError::at(alg.span(), format!("unknown algorithm '{}'", alg.get_ref()))
                    .hint("use HS256/384/512, RS256/384/512, PS256/384/512, ES256/384 or EdDSA"),
            ),
        }
    }
    if p.algorithms.is_empty() {
        errors.push(
            ConfigError::at(
                section.span(),
                format!("provider '{name}' lists no algorithms"),
            )
            .hint("add algorithms = [\"RS256\"] (never inferred from tokens)"),
        );
    }
    algorithms
}

/// Exactly one of the key sources is given.
fn one_key_source(
    name: &str,
    section: &Spanned<JwtProviderSection>,
    errors: &mut Vec<ConfigError>,
) -> bool {
    let p = section.get_ref();
    let sources = [
        p.jwks_url.is_some(),
        p.jwks_file.is_some(),
        p.pem_file.is_some(),
        p.secret_env.is_some(),
        p.secret_file.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if sources != 1 {
        errors.push(
            ConfigError::at(
                section.span(),
                format!("provider '{name}' needs exactly one key source"),
            )
            .hint("give one of jwks_url, jwks_file, pem_file, secret_env, secret_file"),
        );
    }
    sources == 1
}

/// Algorithms fit the key source; leeway and JWKS durations are sane.
fn check_settings(
    name: &str,
    section: &Spanned<JwtProviderSection>,
    errors: &mut Vec<ConfigError>,
) {
    let p = section.get_ref();
    let span = section.span();
    let hmac = p.secret_env.is_some() || p.secret_file.is_some();
    for written in &p.algorithms {
        let Ok(alg) = written.get_ref().parse::<Algorithm>() else {
            continue;
        };
        if (family_of(alg) == AlgorithmFamily::Hmac) != hmac {
            errors.push(
                ConfigError::at(written.span(), format!("algorithm {alg:?} does not fit provider '{name}''s key source"))
                    .hint("HS* algorithms need secret_env/secret_file; the others need a public key (jwks_url, jwks_file, pem_file)"),
            );
        }
    }
    if p.leeway > MAX_LEEWAY {
        errors.push(
            ConfigError::at(
                span.clone(),
                format!(
                    "provider '{name}': leeway is {:?}, over the limit of 1h",
                    p.leeway
                ),
            )
            .hint("leeway absorbs clock skew: seconds, a few minutes at most"),
        );
    }
    if p.jwks_url.is_none() {
        return;
    }
    // A zero refresh refetches in a tight loop; a zero timeout never lets a
    // fetch succeed.
    for (key, value) in [
        ("jwks_refresh", p.jwks_refresh),
        ("jwks_timeout", p.jwks_timeout),
    ] {
        if value.is_zero() {
            errors.push(
                ConfigError::at(
                    span.clone(),
                    format!("provider '{name}': {key} must be longer than 0"),
                )
                .hint("e.g. jwks_refresh = \"5m\", jwks_timeout = \"2s\""),
            );
        }
    }
}

/// Keys from `jwks_url`: fetched in the background when `fetch` (serving),
/// an empty set otherwise (`check`).
fn remote_keys(
    name: &str,
    url: &Spanned<String>,
    p: &JwtProviderSection,
    fetch: bool,
    errors: &mut Vec<ConfigError>,
) -> Option<Keys> {
    if !(url.get_ref().starts_with("https://") || url.get_ref().starts_with("http://")) {
        errors.push(ConfigError::at(
            url.span(),
            "jwks_url must be an http(s) URL",
        ));
        return Some(Keys::Static(Arc::new(KeySet::default())));
    }
    if !fetch {
        return Some(Keys::Static(Arc::new(KeySet::default())));
    }
    let config = JwksConfig {
        provider: name.to_string(),
        url: url.get_ref().clone(),
        refresh: p.jwks_refresh,
        cooldown: p.jwks_cooldown,
        timeout: p.jwks_timeout,
        max_bytes: p.jwks_max_bytes,
    };
    match Jwks::start(config) {
        Ok(jwks) => Some(Keys::Remote(jwks)),
        Err(reason) => {
            errors.push(
                ConfigError::at(
                    url.span(),
                    format!("provider '{name}': cannot build the HTTP client for jwks_url: {reason}"),
                )
                .hint("install the system's CA certificates (e.g. the ca-certificates package), or point SSL_CERT_FILE at a PEM bundle"),
            );
            None
        }
    }
}

/// Keys read once, at load time: a JWKS file, a PEM public key, or an
/// HMAC secret (from the environment or a file).
fn static_keys(
    name: &str,
    p: &JwtProviderSection,
    algorithms: &[Algorithm],
    base_dir: &Path,
) -> Result<KeySet, String> {
    let mut set = KeySet::default();
    if let Some(file) = &p.jwks_file {
        let text = std::fs::read(base_dir.join(file.get_ref()))
            .map_err(|e| format!("cannot read jwks_file: {e}"))?;
        let jwks =
            serde_json::from_slice(&text).map_err(|e| format!("jwks_file is not a JWKS: {e}"))?;
        return Ok(KeySet::from_jwks(&jwks, name));
    }
    if let Some(file) = &p.pem_file {
        let pem = std::fs::read(base_dir.join(file.get_ref()))
            .map_err(|e| format!("cannot read pem_file: {e}"))?;
        let family = algorithms
            .first()
            .map(|a| family_of(*a))
            .ok_or("no algorithm")?;
        let key = match family {
            AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(&pem),
            AlgorithmFamily::Ec => DecodingKey::from_ec_pem(&pem),
            AlgorithmFamily::Ed => DecodingKey::from_ed_pem(&pem),
            AlgorithmFamily::Hmac => return Err("a PEM key cannot be an HMAC secret".into()),
        }
        .map_err(|e| format!("pem_file is not a {family:?} public key: {e}"))?;
        set.insert(None, key, None);
        return Ok(set);
    }
    let secret = hmac_secret(p, base_dir)?;
    set.insert(None, DecodingKey::from_secret(secret.as_bytes()), None);
    Ok(set)
}

fn hmac_secret(p: &JwtProviderSection, base_dir: &Path) -> Result<String, String> {
    let secret = if let Some(var) = &p.secret_env {
        std::env::var(var.get_ref())
            .map_err(|_| format!("environment variable {} is not set", var.get_ref()))?
    } else if let Some(file) = &p.secret_file {
        std::fs::read_to_string(base_dir.join(file.get_ref()))
            .map_err(|e| format!("cannot read secret_file: {e}"))?
    } else {
        String::new()
    };
    let secret = secret.trim_end_matches(['\n', '\r']);
    if secret.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "the HMAC secret is {} bytes; at least {MIN_SECRET_BYTES} are required",
            secret.len()
        ));
    }
    Ok(secret.to_string())
}

/// What a token must be: one of the algorithms, from the issuer, for one
/// of the audiences, unexpired and already valid.
fn validation(p: &JwtProviderSection, algorithms: Vec<Algorithm>) -> Validation {
    let mut validation = Validation::new(algorithms.first().copied().unwrap_or(Algorithm::RS256));
    validation.algorithms = algorithms;
    validation.leeway = p.leeway.as_secs();
    // nbf is off by default in jsonwebtoken; a not-yet-valid token must fail.
    validation.validate_nbf = true;
    validation.set_issuer(&[&p.issuer]);
    let mut required = vec!["exp", "iss"];
    if p.audiences.is_empty() {
        validation.validate_aud = false;
    } else {
        validation.set_audience(&p.audiences);
        required.push("aud");
    }
    validation.set_required_spec_claims(&required);
    validation
}

fn claims_to_metadata(
    p: &JwtProviderSection,
    errors: &mut Vec<ConfigError>,
) -> Vec<(String, HeaderName)> {
    let mut out = Vec::new();
    for (claim, header) in &p.claims_to_metadata {
        let lower = header.get_ref().to_ascii_lowercase();
        match HeaderName::from_bytes(lower.as_bytes()) {
            Ok(h) if is_forwardable(&lower) && lower != "authorization" => {
                out.push((claim.clone(), h))
            }
            _ => errors.push(ConfigError::at(
                header.span(),
                format!("'{}' cannot be an identity metadata key", header.get_ref()),
            )),
        }
    }
    out
}
