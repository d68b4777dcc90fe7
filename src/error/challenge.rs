//! The `WWW-Authenticate` challenges for an auth failure: RFC 6750 §3 for
//! bearer tokens, an `ApiKey` challenge naming where the key goes for API
//! keys (never a Bearer challenge on a route that takes no tokens).

use http::HeaderValue;

use crate::auth::{AuthError, Challenge};

/// The challenges for an auth failure, one `WWW-Authenticate` field each.
pub(super) fn www_authenticate(error: &AuthError) -> Vec<HeaderValue> {
    // RFC 6750 §3 allows only %x20-21 / %x23-5B / %x5D-7E in these values:
    // quotes and backslashes become `'`, anything else outside printable
    // ASCII (from a token's kid, say) `?`; long reasons are cut short.
    let quote = |text: &str| {
        text.chars()
            .take(200)
            .map(|c| match c {
                '"' | '\\' => '\'',
                ' '..='~' => c,
                _ => '?',
            })
            .collect::<String>()
    };
    let challenge = |challenge: &Challenge| match challenge {
        Challenge::Bearer => "Bearer realm=\"protogate\"".to_string(),
        Challenge::ApiKey(source) => {
            let (param, name) = source.challenge_param();
            format!("ApiKey {param}=\"{}\"", quote(name))
        }
    };
    let bearer_error = |error: &str, reason: &str| {
        format!(
            "Bearer realm=\"protogate\", error=\"{error}\", error_description=\"{}\"",
            quote(reason)
        )
    };
    let values = match error {
        // RFC 6750 §3.1: a request without credentials gets no error code.
        AuthError::Missing(challenges) => challenges.iter().map(challenge).collect(),
        AuthError::Invalid(reason, _) => vec![bearer_error("invalid_token", reason)],
        AuthError::InvalidKey(_, key) => vec![challenge(key)],
        // A 400 needs no challenge; a route that takes tokens says why in RFC 6750 terms.
        AuthError::Malformed(reason, challenges) => challenges
            .iter()
            .filter(|c| **c == Challenge::Bearer)
            .map(|_| bearer_error("invalid_request", reason))
            .collect(),
        // A route that requires only claim values names no scope.
        AuthError::Forbidden { reason, scopes } if scopes.is_empty() => {
            vec![bearer_error("insufficient_scope", reason)]
        }
        AuthError::Forbidden { reason, scopes } => vec![format!(
            "{}, scope=\"{}\"",
            bearer_error("insufficient_scope", reason),
            quote(scopes)
        )],
        AuthError::KeysUnavailable(_) => Vec::new(),
    };
    values
        .iter()
        .filter_map(|v| HeaderValue::from_str(v).ok())
        .collect()
}
