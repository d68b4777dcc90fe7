//! Edge authentication: each route's [`Policy`] checks the request's
//! credential (a JWT from a configured provider, or an API key) and yields
//! the caller's [`Identity`]; then required scopes and claim values are
//! checked. The route is matched first, so unknown paths cost no token work.

pub mod api_key;
pub mod identity;
pub mod jwks;
pub mod jwt;
pub mod load;
pub mod mint;

use std::sync::Arc;

use http::header::{AUTHORIZATION, COOKIE};
use http::request::Parts;
use http::{HeaderName, HeaderValue};
use serde_json::{Map, Value};

pub use identity::Identity;

/// Why a request is not let through.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// No credential was presented; the challenges say how to present one.
    #[error("this route requires authentication; no credential was presented")]
    Missing(Vec<Challenge>),
    /// The bearer token (JWT) is not valid: why, in words, and which kind
    /// of problem it is (for metrics).
    #[error("invalid credential: {0}")]
    Invalid(String, TokenProblem),
    /// The API key is not valid; the challenge names where a key is read from.
    #[error("invalid credential: {0}")]
    InvalidKey(String, Challenge),
    /// The credentials cannot be read unambiguously (RFC 6750 §3.1
    /// `invalid_request`): e.g. two Authorization headers, or a token and an
    /// API key together.
    #[error("malformed request: {0}")]
    Malformed(String, Vec<Challenge>),
    /// Valid credential, but not allowed here (scope or claim).
    #[error("insufficient scope: {reason}")]
    Forbidden {
        /// What is missing.
        reason: String,
        /// The scopes the route requires, for `WWW-Authenticate`.
        scopes: String,
    },
    /// The provider's keys are not loaded yet (JWKS unreachable since start-up).
    #[error("the keys of auth provider '{0}' are not available yet")]
    KeysUnavailable(String),
}

/// What was wrong with a bearer token, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenProblem {
    /// `exp` has passed.
    Expired,
    /// `nbf` is still ahead.
    NotYetValid,
    /// The signature does not verify.
    BadSignature,
    /// `iss` is not the provider's issuer.
    WrongIssuer,
    /// `aud` names none of the provider's audiences.
    WrongAudience,
    /// No key of the provider matches the token's `kid` and algorithm.
    UnknownKey,
    /// Not a readable JWS (segments, base64, JSON, size).
    Malformed,
    /// Readable and signed, but refused by policy: an algorithm that is not
    /// accepted, `crit`, a claim that is missing or unusable.
    Refused,
}

impl TokenProblem {
    /// The label value in `protogate_auth_rejections_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenProblem::Expired => "expired",
            TokenProblem::NotYetValid => "not_yet_valid",
            TokenProblem::BadSignature => "bad_signature",
            TokenProblem::WrongIssuer => "wrong_issuer",
            TokenProblem::WrongAudience => "wrong_audience",
            TokenProblem::UnknownKey => "unknown_key",
            TokenProblem::Malformed => "malformed_token",
            TokenProblem::Refused => "refused_token",
        }
    }
}

/// One way a route asks for credentials, sent as a `WWW-Authenticate`
/// challenge (RFC 9110 §11.6.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// RFC 6750 `Bearer`.
    Bearer,
    /// `ApiKey`, naming where the key is read from (`header="x-api-key"`).
    ApiKey(Source),
}

/// One way a caller may be admitted.
#[derive(Debug, Clone)]
pub enum Way {
    /// No credential needed.
    Public,
    /// A JWT from this provider, read from `source`.
    Jwt(Arc<jwt::JwtProvider>, Source),
    /// An API key read from `source`.
    ApiKey(Arc<api_key::ApiKeys>, Source),
}

/// Where a credential is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// A named header, whole value.
    Header(HeaderName),
    /// A cookie.
    Cookie(String),
    /// A query parameter.
    Query(String),
}

/// A route's authentication and authorization rule, compiled.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Any of these admits the caller.
    pub ways: Vec<Way>,
    /// Scopes the token must carry (all of them).
    pub scopes: Vec<String>,
    /// Claims that must hold one of the listed values.
    pub claims: Vec<(String, Vec<Value>)>,
    /// Forward the client's `Authorization` header upstream.
    pub forward_authorization: bool,
    /// As written, for `protogate check`.
    pub description: String,
}

// === impl Policy ===

impl Policy {
    /// One line for `protogate check`: the ways in, then required scopes.
    pub fn summary(&self) -> String {
        match self.scopes.is_empty() {
            true => self.description.clone(),
            false => format!("{}({})", self.description, self.scopes.join(",")),
        }
    }

    /// Query parameters this policy reads credentials from.
    pub fn query_parameters(&self) -> Vec<String> {
        self.ways
            .iter()
            .filter_map(|w| match w {
                Way::Jwt(_, s) | Way::ApiKey(_, s) => s.query_parameter().map(str::to_string),
                Way::Public => None,
            })
            .collect()
    }

    /// Whether anyone may call without a credential.
    pub fn is_public(&self) -> bool {
        self.ways.iter().any(|w| matches!(w, Way::Public))
    }

    /// Authenticates and authorizes a request.
    pub async fn check(&self, parts: &Parts) -> Result<Identity, AuthError> {
        if self.is_public() {
            return Ok(Identity::anonymous());
        }
        // Every credential the request carries, for every way this route
        // accepts, readable or not. More than one is ambiguous and refused,
        // never guessed.
        let mut presented: Vec<(&Source, Result<String, String>)> = Vec::new();
        let mut seen_sources: Vec<&Source> = Vec::new();
        for way in &self.ways {
            let source = match way {
                Way::Jwt(_, s) | Way::ApiKey(_, s) => s,
                Way::Public => continue,
            };
            if seen_sources.contains(&source) {
                continue;
            }
            seen_sources.push(source);
            for credential in source.extract(parts) {
                presented.push((source, credential));
            }
        }
        let (source, credential) = match presented.len() {
            0 => return Err(AuthError::Missing(self.challenges())),
            1 => presented.remove(0),
            _ => {
                return Err(AuthError::Malformed(
                    "more than one credential was presented".into(),
                    self.challenges(),
                ));
            }
        };
        let credential = credential.map_err(|reason| self.refusal(source, reason))?;
        // The one credential is tried against every way reading its source
        // (e.g. two issuers' tokens, both in `Authorization`), in order; the
        // first that verifies it decides. If none does, a provider whose
        // keys are not loaded yet answers for all (503: retry), else the
        // first way's reason is given.
        let mut refused: Option<AuthError> = None;
        for way in &self.ways {
            let verified = match way {
                // Boxed: the verification's future (a key fetch) is large,
                // and public routes' requests would carry its size too.
                Way::Jwt(provider, s) if s == source => {
                    Box::pin(provider.verify(&credential)).await
                }
                Way::ApiKey(keys, s) if s == source => keys
                    .verify(&credential)
                    .map(|identity| (identity, Map::new()))
                    .map_err(|reason| AuthError::InvalidKey(reason, Challenge::ApiKey(s.clone()))),
                _ => continue,
            };
            match verified {
                Ok((identity, claims)) => {
                    self.authorize(&claims)?;
                    return Ok(identity);
                }
                Err(error) => {
                    let replaces = match &refused {
                        None => true,
                        Some(AuthError::KeysUnavailable(_)) => false,
                        Some(_) => matches!(error, AuthError::KeysUnavailable(_)),
                    };
                    if replaces {
                        refused = Some(error);
                    }
                }
            }
        }
        Err(refused.unwrap_or_else(|| AuthError::Missing(self.challenges())))
    }

    /// How this route asks for credentials: `Bearer` when a JWT provider
    /// is accepted, and one `ApiKey` challenge per place a key is read from.
    fn challenges(&self) -> Vec<Challenge> {
        let mut challenges = Vec::new();
        for way in &self.ways {
            let challenge = match way {
                Way::Jwt(..) => Challenge::Bearer,
                Way::ApiKey(_, source) => Challenge::ApiKey(source.clone()),
                Way::Public => continue,
            };
            if !challenges.contains(&challenge) {
                challenges.push(challenge);
            }
        }
        challenges
    }

    /// A credential that could not even be read, refused in the terms of
    /// the way that reads its source: a token, or an API key.
    fn refusal(&self, source: &Source, reason: String) -> AuthError {
        let read_by_jwt = self
            .ways
            .iter()
            .any(|w| matches!(w, Way::Jwt(_, s) if s == source));
        match read_by_jwt {
            true => AuthError::Invalid(reason, TokenProblem::Malformed),
            false => AuthError::InvalidKey(reason, Challenge::ApiKey(source.clone())),
        }
    }

    fn authorize(&self, claims: &Map<String, Value>) -> Result<(), AuthError> {
        let forbidden = |reason: String| AuthError::Forbidden {
            reason,
            scopes: self.scopes.join(" "),
        };
        if !self.scopes.is_empty() {
            let granted: Vec<&str> = match claims.get("scope").or_else(|| claims.get("scp")) {
                Some(Value::String(s)) => s.split_whitespace().collect(),
                Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            let missing: Vec<&str> = self
                .scopes
                .iter()
                .map(String::as_str)
                .filter(|s| !granted.contains(s))
                .collect();
            if !missing.is_empty() {
                return Err(forbidden(format!(
                    "missing scope(s): {}",
                    missing.join(" ")
                )));
            }
        }
        for (claim, allowed) in &self.claims {
            let ok = match claims.get(claim) {
                Some(Value::Array(values)) => values.iter().any(|v| allowed.contains(v)),
                Some(value) => allowed.contains(value),
                None => false,
            };
            if !ok {
                return Err(forbidden(format!(
                    "claim '{claim}' does not have a required value"
                )));
            }
        }
        Ok(())
    }
}

// === impl Source ===

impl Source {
    /// Every credential this source finds in the request (normally 0 or 1),
    /// each readable or the reason it is not.
    fn extract(&self, parts: &Parts) -> Vec<Result<String, String>> {
        let text = |v: &HeaderValue| {
            v.to_str()
                .map(str::to_string)
                .map_err(|_| "the credential is not visible ASCII".to_string())
        };
        match self {
            Source::Bearer => parts
                .headers
                .get_all(AUTHORIZATION)
                .iter()
                .map(|v| {
                    let value = text(v)?;
                    let (scheme, token) = value.split_once(' ').unwrap_or((&value, ""));
                    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
                        return Err("the Authorization header must be 'Bearer <token>'".into());
                    }
                    Ok(token.trim().to_string())
                })
                .collect(),
            Source::Header(name) => parts.headers.get_all(name).iter().map(text).collect(),
            Source::Cookie(name) => {
                let mut found = Vec::new();
                for header in parts.headers.get_all(COOKIE) {
                    match text(header) {
                        Ok(cookies) => found.extend(cookies.split(';').filter_map(|pair| {
                            let (k, v) = pair.trim().split_once('=')?;
                            (k == name).then(|| Ok(v.to_string()))
                        })),
                        Err(reason) => found.push(Err(reason)),
                    }
                }
                found
            }
            Source::Query(name) => {
                let query = parts.uri.query().unwrap_or("");
                query
                    .split('&')
                    .filter_map(|pair| pair.split_once('='))
                    .filter(|(k, _)| k == name)
                    .map(|(_, v)| {
                        Ok(percent_encoding::percent_decode_str(v)
                            .decode_utf8_lossy()
                            .into_owned())
                    })
                    .collect()
            }
        }
    }

    /// Where this source reads from, as the `ApiKey` challenge's auth-param
    /// (`header`, `cookie` or `query`) and its value.
    pub fn challenge_param(&self) -> (&'static str, &str) {
        match self {
            Source::Bearer => ("header", "authorization"),
            Source::Header(name) => ("header", name.as_str()),
            Source::Cookie(name) => ("cookie", name),
            Source::Query(name) => ("query", name),
        }
    }

    /// The query parameter this source reads, which the transcoder must skip.
    pub fn query_parameter(&self) -> Option<&str> {
        match self {
            Source::Query(name) => Some(name),
            _ => None,
        }
    }
}
