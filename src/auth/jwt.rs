//! JWT validation for one provider: the token is read from the configured
//! place only, bounded in size, its `alg` must be in the provider's explicit
//! list and match the key's family (no RSA public key is ever used as an
//! HMAC secret), keys come only from configuration (`jku`, `x5u` and an
//! embedded `jwk` in the header are ignored), and `exp`, `nbf`, `iss`, `aud`
//! are checked with the configured leeway.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderName, HeaderValue};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::identity::Identity;
use super::jwks::Jwks;
use super::{AuthError, TokenProblem};

/// Keys of one provider, by `kid`.
#[derive(Debug, Default)]
pub struct KeySet {
    by_kid: HashMap<String, (DecodingKey, Option<Algorithm>)>,
    without_kid: Vec<(DecodingKey, Option<Algorithm>)>,
}

/// Where a provider's keys come from.
#[derive(Debug)]
pub enum Keys {
    /// Loaded at start-up (secret, PEM, JWKS file).
    Static(Arc<KeySet>),
    /// Fetched from a JWKS URL.
    Remote(Arc<Jwks>),
}

/// One JWT provider.
#[derive(Debug)]
pub struct JwtProvider {
    /// Name from routes.toml.
    pub name: String,
    /// The provider's validation once per accepted algorithm, listing only that one:
    /// jsonwebtoken refuses a key whose family differs from *any* listed
    /// algorithm, so one shared list of RS256 and ES256 would verify nothing.
    by_alg: Vec<(Algorithm, Validation)>,
    keys: Keys,
    max_token_bytes: usize,
    claims_to_metadata: Vec<(String, HeaderName)>,
}

// === impl KeySet ===

impl KeySet {
    /// Keys from a JWKS; unusable keys are skipped with a warning.
    pub fn from_jwks(set: &JwkSet, provider: &str) -> KeySet {
        let mut keys = KeySet::default();
        for jwk in &set.keys {
            let alg = jwk
                .common
                .key_algorithm
                .and_then(|a| a.to_string().parse::<Algorithm>().ok());
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => keys.insert(jwk.common.key_id.clone(), key, alg),
                Err(e) => {
                    tracing::warn!(%provider, kid = ?jwk.common.key_id, error = %e, "skipping unusable JWK")
                }
            }
        }
        keys
    }

    /// Adds a key.
    pub fn insert(&mut self, kid: Option<String>, key: DecodingKey, alg: Option<Algorithm>) {
        match kid {
            Some(kid) => {
                self.by_kid.insert(kid, (key, alg));
            }
            None => self.without_kid.push((key, alg)),
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.by_kid.len() + self.without_kid.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Candidate keys for a token header: by `kid`, else every kid-less key.
    fn candidates(&self, kid: Option<&str>) -> Vec<&(DecodingKey, Option<Algorithm>)> {
        match kid {
            Some(kid) => match self.by_kid.get(kid) {
                Some(key) => vec![key],
                // A key configured without a kid (a PEM file, a secret) is
                // the provider's key whatever kid the token names.
                None => self.without_kid.iter().collect(),
            },
            None if !self.without_kid.is_empty() => self.without_kid.iter().collect(),
            // A token without kid against a set where every key has one:
            // only unambiguous if there is exactly one key.
            None if self.by_kid.len() == 1 => self.by_kid.values().collect(),
            None => Vec::new(),
        }
    }
}

// === impl JwtProvider ===

impl JwtProvider {
    /// A provider with its validation rules and key source.
    pub fn new(
        name: String,
        validation: Validation,
        keys: Keys,
        max_token_bytes: usize,
        claims_to_metadata: Vec<(String, HeaderName)>,
    ) -> JwtProvider {
        let by_alg = validation
            .algorithms
            .iter()
            .map(|&alg| {
                let mut only = validation.clone();
                only.algorithms = vec![alg];
                (alg, only)
            })
            .collect();
        JwtProvider {
            name,
            by_alg,
            keys,
            max_token_bytes,
            claims_to_metadata,
        }
    }

    /// Metadata keys this provider sets (stripped from clients everywhere).
    pub fn metadata_keys(&self) -> Vec<HeaderName> {
        self.claims_to_metadata
            .iter()
            .map(|(_, h)| h.clone())
            .collect()
    }

    /// How many keys the provider holds now (remote keys: the last good set).
    pub fn key_count(&self) -> usize {
        match &self.keys {
            Keys::Static(keys) => keys.len(),
            Keys::Remote(jwks) => jwks.current().map_or(0, |keys| keys.len()),
        }
    }

    /// The JWKS source, if the keys are remote.
    pub fn jwks(&self) -> Option<&Arc<Jwks>> {
        match &self.keys {
            Keys::Remote(jwks) => Some(jwks),
            Keys::Static(_) => None,
        }
    }

    /// Verifies a token and returns the identity it proves.
    pub async fn verify(&self, token: &str) -> Result<(Identity, Map<String, Value>), AuthError> {
        if token.len() > self.max_token_bytes {
            return Err(AuthError::Invalid(
                format!("the token is longer than {} bytes", self.max_token_bytes),
                TokenProblem::Malformed,
            ));
        }
        if token.split('.').count() != 3 {
            return Err(AuthError::Invalid(
                "the token is not a JWS compact serialization (three segments)".into(),
                TokenProblem::Malformed,
            ));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| {
            AuthError::Invalid(
                format!("malformed token header: {e}"),
                TokenProblem::Malformed,
            )
        })?;
        // RFC 7515 §4.1.11: a recipient must reject a JWS whose `crit` lists
        // an extension it does not understand; protogate understands none.
        if header.crit.is_some() {
            return Err(AuthError::Invalid(
                "the token header lists critical extensions (crit), which are not supported".into(),
                TokenProblem::Refused,
            ));
        }
        let Some((_, validation)) = self.by_alg.iter().find(|(alg, _)| *alg == header.alg) else {
            return Err(AuthError::Invalid(
                format!("algorithm {:?} is not accepted", header.alg),
                TokenProblem::Refused,
            ));
        };
        let keys = match &self.keys {
            Keys::Static(keys) => keys.clone(),
            Keys::Remote(jwks) => match jwks.current() {
                Some(keys) => keys,
                None => return Err(AuthError::KeysUnavailable(self.name.clone())),
            },
        };
        let mut keys = keys;
        if header
            .kid
            .as_deref()
            .is_some_and(|kid| keys.candidates(Some(kid)).is_empty())
            && let Keys::Remote(jwks) = &self.keys
            && let Some(fresh) = jwks.refresh_for_unknown_kid().await
        {
            keys = fresh;
        }
        let candidates = keys.candidates(header.kid.as_deref());
        if candidates.is_empty() {
            let reason = match &header.kid {
                Some(kid) => format!("unknown key id {kid:?}"),
                None => "the token names no key id and the key is ambiguous".into(),
            };
            return Err(AuthError::Invalid(reason, TokenProblem::UnknownKey));
        }
        let family = family_of(header.alg);
        let mut last_error = AuthError::Invalid(
            "no key matches the token's algorithm".into(),
            TokenProblem::UnknownKey,
        );
        for (key, key_alg) in candidates {
            // The key decides its algorithm family, never the token.
            if key.family() != family || key_alg.is_some_and(|a| a != header.alg) {
                continue;
            }
            match jsonwebtoken::decode::<Map<String, Value>>(token, key, validation) {
                Ok(data) => return Ok((self.identity(&data.claims), data.claims)),
                Err(e) => last_error = AuthError::Invalid(describe(&e, token), problem(&e)),
            }
        }
        Err(last_error)
    }

    fn identity(&self, claims: &Map<String, Value>) -> Identity {
        let mut metadata = Vec::with_capacity(self.claims_to_metadata.len());
        for (claim, header) in &self.claims_to_metadata {
            let text = match claims.get(claim) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::Bool(b)) => b.to_string(),
                _ => continue,
            };
            if let Ok(value) = HeaderValue::from_str(&text) {
                metadata.push((header.clone(), value));
            }
        }
        Identity {
            subject: claims
                .get("sub")
                .and_then(Value::as_str)
                .map(str::to_string),
            consumer: None,
            tier: None,
            via: Some(self.name.clone()),
            metadata,
        }
    }
}

/// The family an algorithm belongs to.
pub fn family_of(alg: Algorithm) -> AlgorithmFamily {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => AlgorithmFamily::Hmac,
        Algorithm::ES256 | Algorithm::ES384 => AlgorithmFamily::Ec,
        Algorithm::EdDSA => AlgorithmFamily::Ed,
        _ => AlgorithmFamily::Rsa,
    }
}

/// The kind of problem jsonwebtoken found.
fn problem(error: &jsonwebtoken::errors::Error) -> TokenProblem {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => TokenProblem::Expired,
        ErrorKind::ImmatureSignature => TokenProblem::NotYetValid,
        ErrorKind::InvalidIssuer => TokenProblem::WrongIssuer,
        ErrorKind::InvalidAudience => TokenProblem::WrongAudience,
        ErrorKind::InvalidSignature => TokenProblem::BadSignature,
        ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_)
        | ErrorKind::InvalidToken => TokenProblem::Malformed,
        _ => TokenProblem::Refused,
    }
}

fn describe(error: &jsonwebtoken::errors::Error, token: &str) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => "the token has expired".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        ErrorKind::InvalidIssuer => "wrong issuer".into(),
        ErrorKind::InvalidAudience => "wrong audience".into(),
        ErrorKind::InvalidSignature => "invalid signature".into(),
        ErrorKind::InvalidAlgorithm => "algorithm does not match the key".into(),
        ErrorKind::MissingRequiredClaim(c) | ErrorKind::InvalidClaimFormat(c) => {
            describe_claim(token, c)
        }
        ErrorKind::Base64(_) => "malformed base64 in the token".into(),
        ErrorKind::Json(_) => "malformed JSON in the token".into(),
        _ => "invalid token".into(),
    }
}

/// Why a claim the validator could not use was refused. jsonwebtoken calls
/// an `exp` it cannot read as seconds "missing"; the payload says which it
/// is. Claim checks run after the signature is verified, so the payload read
/// here is the authenticated one.
fn describe_claim(token: &str, claim: &str) -> String {
    let value = token
        .split('.')
        .nth(1)
        .and_then(|payload| URL_SAFE_NO_PAD.decode(payload).ok())
        .and_then(|json| serde_json::from_slice::<Map<String, Value>>(&json).ok())
        .and_then(|mut claims| claims.remove(claim));
    let seconds = "a whole number of seconds since 1970";
    let is_time = matches!(claim, "exp" | "nbf");
    match value {
        None => format!("missing required claim '{claim}'"),
        Some(other) if !is_time => {
            format!("claim '{claim}' has the wrong type ({})", json_type(&other))
        }
        Some(Value::Number(n)) if n.as_i64().is_some_and(|v| v < 0) => {
            format!("claim '{claim}' is negative ({n}); it must be {seconds}")
        }
        Some(Value::Number(n)) => {
            format!("claim '{claim}' is out of range ({n}); it must be {seconds}")
        }
        Some(other) => format!(
            "claim '{claim}' must be {seconds}, not {}",
            json_type(&other)
        ),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
