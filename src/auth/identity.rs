//! Who the caller is, after authentication, and the only source of identity
//! metadata sent upstream. The upstream metadata is built from scratch
//! ([`crate::metadata`]), so a client-sent `x-user-id` never reaches the
//! upstream: only what is set here does.

use http::{HeaderName, HeaderValue};

/// The authenticated caller (or an anonymous one on a public route).
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// `sub` of a verified token.
    pub subject: Option<String>,
    /// Consumer name of an API key.
    pub consumer: Option<String>,
    /// The API key consumer's tier, for rate limits.
    pub tier: Option<String>,
    /// Provider or `api_key` that admitted the caller; `None` when anonymous.
    pub via: Option<String>,
    /// Metadata the identity adds upstream.
    pub metadata: Vec<(HeaderName, HeaderValue)>,
}

// === impl Identity ===

impl Identity {
    /// A caller on a public route.
    pub fn anonymous() -> Identity {
        Identity::default()
    }

    /// Whether the request carried a verified credential.
    pub fn is_authenticated(&self) -> bool {
        self.via.is_some()
    }
}
