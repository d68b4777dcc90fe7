//! The `WWW-Authenticate` challenge (RFC 6750 §3) for an auth failure.

use http::HeaderValue;

use crate::auth::AuthError;

/// The RFC 6750 challenge for an auth failure.
pub(super) fn www_authenticate(error: &AuthError) -> Option<HeaderValue> {
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
    let value = match error {
        AuthError::Missing => {
            "Bearer realm=\"protogate\", error=\"invalid_token\", error_description=\"no credentials\"".to_string()
        }
        AuthError::Invalid(reason) => format!(
            "Bearer realm=\"protogate\", error=\"invalid_token\", error_description=\"{}\"",
            quote(reason)
        ),
        // A route that requires only claim values names no scope.
        AuthError::Forbidden { reason, scopes } if scopes.is_empty() => format!(
            "Bearer realm=\"protogate\", error=\"insufficient_scope\", error_description=\"{}\"",
            quote(reason)
        ),
        AuthError::Forbidden { reason, scopes } => format!(
            "Bearer realm=\"protogate\", error=\"insufficient_scope\", error_description=\"{}\", scope=\"{}\"",
            quote(reason),
            quote(scopes)
        ),
        AuthError::KeysUnavailable(_) => return None,
    };
    HeaderValue::from_str(&value).ok()
}
