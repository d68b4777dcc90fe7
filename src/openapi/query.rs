//! Query parameters: every field a binding's path and body leave unbound
//! that a query string can set (`a.b=1` for nested fields, repeated keys
//! for repeated fields, enums by name, the well-known types in their text
//! forms), as the gateway reads them in `transcode::query`.

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Value, json};

use super::schema::{Schemas, Variant};
use crate::transcode::{BodyRule, Plan};

/// Deepest nesting listed; deeper fields can still be set.
const MAX_DEPTH: usize = 8;

/// Well-known types a query value can spell (see `transcode::text`).
const TEXT_FORMS: [&str; 3] = [
    "google.protobuf.Timestamp",
    "google.protobuf.Duration",
    "google.protobuf.FieldMask",
];

/// The query parameters of a binding.
pub(super) fn parameters(plan: &Plan, schemas: &mut Schemas<'_>, variant: Variant) -> Vec<Value> {
    let mut bound: Vec<String> = plan.variables.iter().map(|v| v.to_string()).collect();
    match &plan.body {
        // Every field not in the path comes from the body.
        BodyRule::Whole => return Vec::new(),
        BodyRule::Field(field) => bound.push(field.to_string()),
        BodyRule::None => {}
    }
    let mut walk = Walk {
        schemas,
        variant,
        bound,
        parameters: Vec::new(),
        open: Vec::new(),
    };
    walk.message(&plan.method.input(), "", "");
    walk.parameters
}

struct Walk<'s, 'a> {
    schemas: &'s mut Schemas<'a>,
    variant: Variant,
    /// Field paths (proto names, dotted) the path or body sets.
    bound: Vec<String>,
    parameters: Vec<Value>,
    /// Messages being walked: a recursive one is not entered again.
    open: Vec<String>,
}

impl Walk<'_, '_> {
    fn message(&mut self, message: &MessageDescriptor, proto_prefix: &str, prefix: &str) {
        if self.open.len() >= MAX_DEPTH || self.open.iter().any(|m| m == message.full_name()) {
            return;
        }
        self.open.push(message.full_name().to_string());
        for field in message.fields() {
            let proto_path = format!("{proto_prefix}{}", field.name());
            if self
                .bound
                .iter()
                .any(|b| *b == proto_path || proto_path.starts_with(&format!("{b}.")))
            {
                continue;
            }
            let name = match self.variant.proto_names {
                true => field.name(),
                false => field.json_name(),
            };
            let name = format!("{prefix}{name}");
            self.field(&field, &proto_path, &name);
        }
        self.open.pop();
    }

    fn field(&mut self, field: &FieldDescriptor, proto_path: &str, name: &str) {
        if field.is_map() {
            return;
        }
        if let Kind::Message(inner) = field.kind() {
            let text_form = TEXT_FORMS.contains(&inner.full_name())
                || (inner.full_name().starts_with("google.protobuf.")
                    && inner.full_name().ends_with("Value")
                    && inner.get_field_by_name("value").is_some()
                    && inner.full_name() != "google.protobuf.Value");
            if !text_form {
                if !field.is_list() && !inner.full_name().starts_with("google.protobuf.") {
                    self.message(&inner, &format!("{proto_path}."), &format!("{name}."));
                }
                return;
            }
        }
        let mut schema = self.schemas.field(
            field,
            Variant {
                input: true,
                ..self.variant
            },
        );
        if let Kind::Message(inner) = field.kind()
            && inner.full_name().ends_with("Value")
            && let Some(types) = schema.get_mut("type").and_then(Value::as_array_mut)
        {
            // A wrapper in the query is its value; there is no null to send.
            types.retain(|t| t != "null");
        }
        let mut parameter = json!({ "name": name, "in": "query", "schema": schema });
        if field.is_list() {
            parameter["style"] = "form".into();
            parameter["explode"] = true.into();
        }
        let options = field.field_descriptor_proto().options.as_ref();
        if options.and_then(|o| o.deprecated).unwrap_or(false) {
            parameter["deprecated"] = true.into();
        }
        if let Some(text) = self.schemas.comment_of(field) {
            parameter["description"] = text.into();
        }
        self.parameters.push(parameter);
    }
}
