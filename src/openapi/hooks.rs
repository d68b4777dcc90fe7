//! What other features add to an operation, each in one small function so
//! that the feature that owns it changes only its own line here: the
//! success status (REST-shaped answers: 201 with `Location`, 202, 204),
//! response headers and extra responses (rate limits: `RateLimit` and
//! `RateLimit-Policy` headers, 429), and request header parameters
//! (`Idempotency-Key`). Today every binding answers 200 with a body and
//! adds nothing.

use serde_json::Value;

use crate::plan::MethodPlan;

/// How a binding answers success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuccessStatus {
    /// The HTTP status, e.g. 200.
    pub status: u16,
    /// Whether the answer has a body (false for 204).
    pub has_body: bool,
    /// A description of the `Location` header it sets, if any (201).
    pub location: Option<String>,
}

/// The success status of `plan`: (200, with a body, no `Location`) today.
pub fn success_status(_plan: &MethodPlan) -> SuccessStatus {
    SuccessStatus {
        status: 200,
        has_body: true,
        location: None,
    }
}

/// Response headers every answer of `plan` carries, as (name, OpenAPI
/// Header Object); none today.
pub fn extra_headers(_plan: &MethodPlan) -> Vec<(String, Value)> {
    Vec::new()
}

/// Responses `plan` may give besides success and the default error, as
/// (status, OpenAPI Response Object); none today.
pub fn extra_responses(_plan: &MethodPlan) -> Vec<(String, Value)> {
    Vec::new()
}

/// Request header parameters `plan` reads, as OpenAPI Parameter Objects
/// (`in: header`); none today.
pub fn extra_parameters(_plan: &MethodPlan) -> Vec<Value> {
    Vec::new()
}
