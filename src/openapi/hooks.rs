//! What other features add to an operation, each in one small function so
//! that the feature that owns it changes only its own line here: the
//! success status (REST-shaped answers: 201 with `Location`, 202, 204),
//! response headers and extra responses (rate limits: `RateLimit` and
//! `RateLimit-Policy` headers, 429; idempotent writes: 409, 422 and the
//! replay marker), and request header parameters (`Idempotency-Key`).

use http::StatusCode;
use serde_json::{Value, json};

use crate::plan::MethodPlan;
use crate::ratelimit::LimitDescription;

/// The error schema (google.rpc.Status) the shared `Error` response holds.
const STATUS_SCHEMA: &str = "#/components/responses/Error/content/application~1json/schema";

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

/// The success status `plan` declares (`success_status`, `location`).
pub fn success_status(plan: &MethodPlan) -> SuccessStatus {
    let success = &plan.transcode.success;
    SuccessStatus {
        status: success.status.as_u16(),
        has_body: success.status != StatusCode::NO_CONTENT,
        location: success.location.as_ref().map(|template| {
            format!(
                "The created resource, `{}` over the response message's fields.",
                template.text
            )
        }),
    }
}

/// Response headers every answer of `plan` carries, as (name, OpenAPI
/// Header Object): the rate-limit fields on a limited route, the replay
/// marker where `Idempotency-Key` is honoured.
pub fn extra_headers(plan: &MethodPlan) -> Vec<(String, Value)> {
    let mut headers = Vec::new();
    let limits = plan.rate_limit.describe();
    if !limits.is_empty() {
        headers.push(("RateLimit-Policy".into(), rate_limit_policy(&limits)));
        headers.push(("RateLimit".into(), rate_limit_field()));
    }
    if plan.idempotency.is_some() {
        headers.push((
            "Idempotency-Replayed".into(),
            json!({
                "description": "`true` on an answer replayed for a retry with the same Idempotency-Key.",
                "schema": { "type": "string", "enum": ["true"] },
            }),
        ));
    }
    headers
}

/// Responses `plan` may give besides success and the default error, as
/// (status, OpenAPI Response Object): 429 on a limited route; 409 and 422
/// where `Idempotency-Key` is honoured.
pub fn extra_responses(plan: &MethodPlan) -> Vec<(String, Value)> {
    let mut responses = Vec::new();
    let limits = plan.rate_limit.describe();
    if !limits.is_empty() {
        responses.push((
            "429".into(),
            json!({
                "description": "Over a rate limit: retry after `Retry-After` seconds. The body's details carry RetryInfo and QuotaFailure.",
                "headers": {
                    "Retry-After": {
                        "description": "Seconds until a retry can succeed.",
                        "schema": { "type": "integer", "minimum": 0 },
                    },
                    "RateLimit-Policy": rate_limit_policy(&limits),
                    "RateLimit": rate_limit_field(),
                },
                "content": { "application/json": { "schema": { "$ref": STATUS_SCHEMA } } },
            }),
        ));
    }
    if plan.idempotency.is_some() {
        for (status, about) in [
            (
                "409",
                "A request with the same Idempotency-Key is still being processed.",
            ),
            (
                "422",
                "The Idempotency-Key was used with a different request.",
            ),
        ] {
            responses.push((
                status.into(),
                json!({
                    "description": about,
                    "content": { "application/json": { "schema": { "$ref": STATUS_SCHEMA } } },
                }),
            ));
        }
    }
    responses
}

/// Request header parameters `plan` reads, as OpenAPI Parameter Objects
/// (`in: header`): `Idempotency-Key` where it is honoured.
pub fn extra_parameters(plan: &MethodPlan) -> Vec<Value> {
    let Some(policy) = &plan.idempotency else {
        return Vec::new();
    };
    vec![json!({
        "name": "Idempotency-Key",
        "in": "header",
        "required": policy.required,
        "description": format!(
            "A Structured Field String (`\"…\"`) naming this write: a retry with the same key and request replays the first answer for {}.",
            humantime::format_duration(policy.ttl)
        ),
        "schema": { "type": "string", "pattern": "^\"[\\x20-\\x7E]{1,255}\"$" },
    })]
}

/// The `RateLimit-Policy` header of a limited route, its limits described.
fn rate_limit_policy(limits: &[LimitDescription]) -> Value {
    let described: Vec<String> = limits
        .iter()
        .map(|l| {
            let mut text = format!(
                "`{}`: {} requests per {} by {} (burst {})",
                l.name,
                l.rate.rate,
                humantime::format_duration(l.rate.per),
                l.key,
                l.rate.burst
            );
            for (tier, rate) in &l.tiers {
                text.push_str(&format!(
                    "; tier `{tier}`: {} per {}",
                    rate.rate,
                    humantime::format_duration(rate.per)
                ));
            }
            text
        })
        .collect();
    json!({
        "description": format!(
            "The route's quota policies (draft-ietf-httpapi-ratelimit-headers): {}.",
            described.join("; ")
        ),
        "schema": { "type": "string" },
    })
}

/// The `RateLimit` header: what is left of the tightest limit.
fn rate_limit_field() -> Value {
    json!({
        "description": "What remains of the tightest quota: `\"name\";r=REMAINING;t=SECONDS` (draft-ietf-httpapi-ratelimit-headers).",
        "schema": { "type": "string" },
    })
}
