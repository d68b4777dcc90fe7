//! What transcoding needs to know about one binding, compiled once: the
//! gRPC method, the field each path variable sets, where the body goes,
//! which response field is answered, and the JSON options.

use prost_reflect::{Kind, MethodDescriptor, SerializeOptions};

use super::{FieldPath, HTTP_BODY};

/// The transcoding piece of a method plan.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The gRPC method called; its input and output types are transcoded.
    pub method: MethodDescriptor,
    /// One resolved field per template variable, in template order.
    pub variables: Vec<FieldPath>,
    /// Where the HTTP body goes.
    pub body: BodyRule,
    /// The response field answered instead of the whole message.
    pub response_body: Option<FieldPath>,
    /// JSON mapping options.
    pub json: JsonMapping,
    /// Query parameters that carry credentials, not message fields.
    pub reserved_query: Vec<String>,
    /// The successful answer's status and `Location` (routes.toml
    /// `success_status` and `location`).
    pub success: super::Success,
}

/// Where a binding puts the HTTP request body.
#[derive(Debug, Clone)]
pub enum BodyRule {
    /// No body; every unbound field may come from the query.
    None,
    /// `body: "*"`: the body is the whole request message.
    Whole,
    /// `body: "field"`: the body is that field.
    Field(FieldPath),
}

/// Resolved JSON options of one binding.
#[derive(Debug, Clone)]
pub struct JsonMapping {
    /// How responses are written.
    pub serialize: SerializeOptions,
    /// The same options, readable, for writing answers straight from the
    /// wire bytes ([`super::wire_json`]).
    pub render: super::wire_json::Options,
    /// Answer 400 to unknown fields in a JSON body.
    pub deny_unknown_fields: bool,
    /// Answer 400 to unknown query parameters.
    pub deny_unknown_query: bool,
}

// === impl Plan ===

impl Plan {
    /// Whether the HTTP body is a `google.api.HttpBody` (raw bytes with
    /// their content type): the whole request message, or the body field.
    pub fn takes_http_body(&self) -> bool {
        match &self.body {
            BodyRule::None => false,
            BodyRule::Whole => self.method.input().full_name() == HTTP_BODY,
            BodyRule::Field(path) => is_http_body(path),
        }
    }

    /// Whether the answer is raw `google.api.HttpBody` bytes: the whole
    /// response message, or its `response_body` field.
    pub fn answers_http_body(&self) -> bool {
        match &self.response_body {
            None => self.method.output().full_name() == HTTP_BODY,
            Some(path) => is_http_body(path),
        }
    }
}

/// Whether a field path ends at one (not repeated) `google.api.HttpBody`.
fn is_http_body(path: &FieldPath) -> bool {
    let leaf = path.leaf();
    matches!(leaf.kind(), Kind::Message(m) if m.full_name() == HTTP_BODY) && !leaf.is_list()
}

// === impl BodyRule ===

impl BodyRule {
    /// As written in the rule: `*`, a field path, or empty.
    pub fn as_written(&self) -> String {
        match self {
            BodyRule::None => String::new(),
            BodyRule::Whole => "*".into(),
            BodyRule::Field(field) => field.to_string(),
        }
    }
}
