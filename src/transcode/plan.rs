//! What transcoding needs to know about one binding, compiled once: the
//! gRPC method, the field each path variable sets, where the body goes,
//! which response field is answered, and the JSON options.

use prost_reflect::{MethodDescriptor, SerializeOptions};

use super::FieldPath;

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
    /// Answer 400 to unknown fields in a JSON body.
    pub deny_unknown_fields: bool,
    /// Answer 400 to unknown query parameters.
    pub deny_unknown_query: bool,
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
