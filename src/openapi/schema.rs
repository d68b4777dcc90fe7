//! The proto3 JSON mapping as JSON Schema 2020-12 (OpenAPI 3.1's dialect):
//! one component per message and enum, named by its full proto name, so
//! recursive messages are `$ref`s; well-known types inline in their JSON
//! forms. What the gateway *writes* is described: 64-bit integers as
//! strings and enums as names (numbers when the route says so); both
//! spellings are accepted on input, as proto3 JSON requires, which the
//! descriptions say.

use std::collections::{BTreeMap, HashMap};

use prost_reflect::{
    DescriptorPool, EnumDescriptor, ExtensionDescriptor, FieldDescriptor, Kind, MessageDescriptor,
    Value as ProtoValue,
};
use serde_json::{Map, Value, json};

use super::comments::Comments;

/// How a binding's JSON is written, which changes the schemas: each
/// variant in use gets its own components.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub(super) struct Variant {
    /// Field names as in the .proto, not lowerCamelCase.
    pub(super) proto_names: bool,
    /// Enums as numbers, not names.
    pub(super) enums_as_numbers: bool,
    /// A request (REQUIRED fields are required), not an answer (which
    /// omits fields holding their default value).
    pub(super) input: bool,
}

/// `google.api.FieldBehavior` values the document reads.
const REQUIRED: i32 = 2;
const OUTPUT_ONLY: i32 = 3;
const INPUT_ONLY: i32 = 4;
const IMMUTABLE: i32 = 5;

/// A text form proto3 JSON accepts for 64-bit integers, and writes.
const INT64_NOTE: &str =
    "A 64-bit integer, written as a decimal string; a JSON number is accepted too.";

/// Builds schemas and keeps the components they refer to.
pub(super) struct Schemas<'a> {
    comments: &'a Comments,
    field_behavior: Option<ExtensionDescriptor>,
    components: BTreeMap<String, Value>,
    /// Whether a message, or one it contains, has a REQUIRED field (then
    /// its request variant differs from its answer variant).
    has_required: HashMap<String, bool>,
}

impl<'a> Schemas<'a> {
    pub(super) fn new(pool: &DescriptorPool, comments: &'a Comments) -> Schemas<'a> {
        Schemas {
            comments,
            field_behavior: pool.get_extension_by_name("google.api.field_behavior"),
            components: BTreeMap::new(),
            has_required: HashMap::new(),
        }
    }

    /// The component schemas referred to so far, by name.
    pub(super) fn into_components(self) -> Map<String, Value> {
        self.components.into_iter().collect()
    }

    /// One value of `message`'s type: a well-known type inline, any other
    /// message a `$ref` to its component.
    pub(super) fn message(&mut self, message: &MessageDescriptor, variant: Variant) -> Value {
        if let Some(schema) = self.well_known(message, variant) {
            return schema;
        }
        let variant = Variant {
            input: variant.input && self.has_required(message),
            ..variant
        };
        let mut name = message.full_name().to_string();
        if variant.proto_names {
            name.push_str("-ProtoNames");
        }
        if variant.enums_as_numbers {
            name.push_str("-EnumNumbers");
        }
        if variant.input {
            name.push_str("-Input");
        }
        if !self.components.contains_key(&name) {
            // A placeholder first: a recursive field refers to it meanwhile.
            self.components.insert(name.clone(), Value::Bool(true));
            let schema = self.message_schema(message, variant);
            self.components.insert(name.clone(), schema);
        }
        json!({ "$ref": format!("#/components/schemas/{name}") })
    }

    /// A field's value: an array for a repeated field, an object for a map.
    pub(super) fn field(&mut self, field: &FieldDescriptor, variant: Variant) -> Value {
        let kind = field.kind();
        if field.is_map() {
            let Kind::Message(entry) = &kind else {
                return json!({ "type": "object" });
            };
            let key = entry.map_entry_key_field().kind();
            let value = self.kind(&entry.map_entry_value_field().kind(), variant);
            let mut schema = json!({ "type": "object", "additionalProperties": value });
            if let Some(names) = map_key_names(&key) {
                schema["propertyNames"] = names;
            }
            return schema;
        }
        let single = self.kind(&kind, variant);
        match field.is_list() {
            true => json!({ "type": "array", "items": single }),
            false => single,
        }
    }

    /// One value of `kind`.
    pub(super) fn kind(&mut self, kind: &Kind, variant: Variant) -> Value {
        match kind {
            Kind::Double | Kind::Float => json!({
                "anyOf": [
                    { "type": "number", "format": if matches!(kind, Kind::Float) { "float" } else { "double" } },
                    { "type": "string", "enum": ["NaN", "Infinity", "-Infinity"] },
                ]
            }),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => json!({
                "type": "integer", "format": "int32",
                "minimum": i32::MIN, "maximum": i32::MAX,
            }),
            Kind::Uint32 | Kind::Fixed32 => json!({
                "type": "integer", "minimum": 0, "maximum": u32::MAX,
            }),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => json!({
                "type": "string", "format": "int64", "pattern": "^-?[0-9]+$",
                "description": INT64_NOTE,
            }),
            Kind::Uint64 | Kind::Fixed64 => json!({
                "type": "string", "format": "uint64", "pattern": "^[0-9]+$",
                "description": INT64_NOTE,
            }),
            Kind::Bool => json!({ "type": "boolean" }),
            Kind::String => json!({ "type": "string" }),
            Kind::Bytes => {
                json!({ "type": "string", "format": "byte", "contentEncoding": "base64" })
            }
            Kind::Enum(enumeration) => self.enumeration(enumeration, variant),
            Kind::Message(message) => self.message(message, variant),
        }
    }

    fn message_schema(&mut self, message: &MessageDescriptor, variant: Variant) -> Value {
        let mut properties = Map::new();
        let mut required = Vec::new();
        for field in message.fields() {
            let name = match variant.proto_names {
                true => field.name().to_string(),
                false => field.json_name().to_string(),
            };
            let schema = self.property(&field, variant);
            if variant.input && self.behaviors(&field).contains(&REQUIRED) {
                required.push(Value::String(name.clone()));
            }
            properties.insert(name, schema);
        }
        let mut schema = json!({ "type": "object", "properties": properties });
        if !required.is_empty() {
            schema["required"] = Value::Array(required);
        }
        if let Some(rule) = oneof_rule(message, variant) {
            schema["not"] = rule;
        }
        let comment = self
            .comments
            .get(message.parent_file().name(), message.path());
        if let Some(text) = comment {
            schema["description"] = text.into();
        }
        let options = message.descriptor_proto().options.as_ref();
        if options.and_then(|o| o.deprecated).unwrap_or(false) {
            schema["deprecated"] = true.into();
        }
        schema
    }

    /// A field as a property: its value's schema with its comment,
    /// behaviours and deprecation beside it.
    fn property(&mut self, field: &FieldDescriptor, variant: Variant) -> Value {
        let mut schema = self.field(field, variant);
        let mut notes: Vec<String> = self
            .comments
            .get(field.parent_file().name(), field.path())
            .map(str::to_string)
            .into_iter()
            .collect();
        let behaviors = self.behaviors(field);
        if behaviors.contains(&OUTPUT_ONLY) {
            schema["readOnly"] = true.into();
            notes.push("Output only: set by the server, ignored in requests.".into());
        }
        if behaviors.contains(&INPUT_ONLY) {
            schema["writeOnly"] = true.into();
            notes.push("Input only: never returned.".into());
        }
        if behaviors.contains(&IMMUTABLE) {
            notes.push("Immutable: can be set only when the resource is created.".into());
        }
        if behaviors.contains(&REQUIRED) {
            notes.push("Required in requests.".into());
        }
        if let Some(oneof) = field.containing_oneof().filter(|o| !o.is_synthetic()) {
            notes.push(format!("At most one field of `{}` is set.", oneof.name()));
        }
        if let Some(kind_note) = schema.get("description").and_then(Value::as_str) {
            notes.push(kind_note.to_string());
        }
        if !notes.is_empty() {
            schema["description"] = notes.join("\n\n").into();
        }
        let options = field.field_descriptor_proto().options.as_ref();
        if options.and_then(|o| o.deprecated).unwrap_or(false) {
            schema["deprecated"] = true.into();
        }
        schema
    }

    /// The comment above a field's declaration.
    pub(super) fn comment_of(&self, field: &FieldDescriptor) -> Option<String> {
        (self.comments)
            .get(field.parent_file().name(), field.path())
            .map(str::to_string)
    }

    /// The `google.api.field_behavior` values of a field.
    pub(super) fn behaviors(&self, field: &FieldDescriptor) -> Vec<i32> {
        let Some(extension) = &self.field_behavior else {
            return Vec::new();
        };
        let options = field.options();
        if !options.has_extension(extension) {
            return Vec::new();
        }
        match &*options.get_extension(extension) {
            ProtoValue::List(values) => values
                .iter()
                .filter_map(ProtoValue::as_enum_number)
                .collect(),
            ProtoValue::EnumNumber(number) => vec![*number],
            _ => Vec::new(),
        }
    }

    fn has_required(&mut self, message: &MessageDescriptor) -> bool {
        if let Some(&known) = self.has_required.get(message.full_name()) {
            return known;
        }
        // False while it is worked out: a recursive message ends here.
        self.has_required
            .insert(message.full_name().to_string(), false);
        let mut found = false;
        for field in message.fields() {
            found = self.behaviors(&field).contains(&REQUIRED)
                || matches!(field.kind(), Kind::Message(inner) if self.has_required(&inner));
            if found {
                break;
            }
        }
        self.has_required
            .insert(message.full_name().to_string(), found);
        found
    }

    fn enumeration(&mut self, enumeration: &EnumDescriptor, variant: Variant) -> Value {
        if enumeration.full_name() == "google.protobuf.NullValue" {
            return json!({ "type": "null" });
        }
        let mut name = enumeration.full_name().to_string();
        if variant.enums_as_numbers {
            name.push_str("-Numbers");
        }
        if !self.components.contains_key(&name) {
            let schema = self.enum_schema(enumeration, variant.enums_as_numbers);
            self.components.insert(name.clone(), schema);
        }
        json!({ "$ref": format!("#/components/schemas/{name}") })
    }

    fn enum_schema(&self, enumeration: &EnumDescriptor, as_numbers: bool) -> Value {
        let mut lines: Vec<String> = self
            .comments
            .get(enumeration.parent_file().name(), enumeration.path())
            .map(str::to_string)
            .into_iter()
            .collect();
        let mut deprecated = Vec::new();
        for value in enumeration.values() {
            let comment = self.comments.get(value.parent_file().name(), value.path());
            if let Some(comment) = comment {
                lines.push(format!(
                    "- `{}` ({}): {}",
                    value.name(),
                    value.number(),
                    comment.replace('\n', " ")
                ));
            }
            let options = value.enum_value_descriptor_proto().options.as_ref();
            if options.and_then(|o| o.deprecated).unwrap_or(false) {
                deprecated.push(format!("`{}`", value.name()));
            }
        }
        if !deprecated.is_empty() {
            lines.push(format!("Deprecated values: {}.", deprecated.join(", ")));
        }
        lines.push(match as_numbers {
            true => "Written as numbers; names are accepted too.".into(),
            false => "Written as names; numbers are accepted too.".into(),
        });
        let values: Vec<Value> = match as_numbers {
            true => enumeration.values().map(|v| v.number().into()).collect(),
            false => enumeration.values().map(|v| v.name().into()).collect(),
        };
        json!({
            "type": if as_numbers { "integer" } else { "string" },
            "enum": values,
            "description": lines.join("\n\n"),
        })
    }

    /// The JSON forms of the well-known types (proto3 JSON mapping).
    fn well_known(&mut self, message: &MessageDescriptor, variant: Variant) -> Option<Value> {
        Some(match message.full_name() {
            "google.protobuf.Timestamp" => json!({ "type": "string", "format": "date-time" }),
            "google.protobuf.Duration" => json!({
                "type": "string", "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$",
                "description": "A duration in seconds with up to nine fractional digits and an `s` suffix, e.g. `1.5s`.",
            }),
            "google.protobuf.FieldMask" => json!({
                "type": "string",
                "description": "Field paths separated by commas, e.g. `title,author.name`.",
            }),
            "google.protobuf.Struct" => json!({ "type": "object", "additionalProperties": true }),
            "google.protobuf.Value" => json!({ "description": "Any JSON value." }),
            "google.protobuf.ListValue" => json!({ "type": "array" }),
            "google.protobuf.Empty" => json!({ "type": "object", "maxProperties": 0 }),
            "google.protobuf.Any" => json!({
                "type": "object",
                "properties": { "@type": { "type": "string", "description": "The type URL of the message, e.g. `type.googleapis.com/google.rpc.ErrorInfo`." } },
                "required": ["@type"],
                "additionalProperties": true,
                "description": "A message of any type: its `@type` and its fields (or `value` for a well-known type).",
            }),
            name if name.starts_with("google.protobuf.") && name.ends_with("Value") => {
                let value = message.get_field_by_name("value")?;
                nullable(self.kind(&value.kind(), variant))
            }
            _ => return None,
        })
    }
}

/// A scalar schema that also allows `null` (a wrapper: unset is null).
fn nullable(mut schema: Value) -> Value {
    match schema
        .get("type")
        .and_then(Value::as_str)
        .map(str::to_string)
    {
        Some(single) => {
            schema["type"] = json!([single, "null"]);
            schema
        }
        None => json!({ "anyOf": [schema, { "type": "null" }] }),
    }
}

/// Map keys are JSON object keys: integers and bools in their text forms.
fn map_key_names(key: &Kind) -> Option<Value> {
    match key {
        Kind::Bool => Some(json!({ "enum": ["true", "false"] })),
        Kind::String => None,
        Kind::Uint32 | Kind::Fixed32 | Kind::Uint64 | Kind::Fixed64 => {
            Some(json!({ "pattern": "^[0-9]+$" }))
        }
        _ => Some(json!({ "pattern": "^-?[0-9]+$" })),
    }
}

/// At most one member of each oneof: no two of them together.
fn oneof_rule(message: &MessageDescriptor, variant: Variant) -> Option<Value> {
    let mut pairs = Vec::new();
    for oneof in message.oneofs().filter(|o| !o.is_synthetic()) {
        let names: Vec<String> = oneof
            .fields()
            .map(|f| match variant.proto_names {
                true => f.name().to_string(),
                false => f.json_name().to_string(),
            })
            .collect();
        for (i, a) in names.iter().enumerate() {
            for b in &names[i + 1..] {
                pairs.push(json!({ "required": [a, b] }));
            }
        }
    }
    (!pairs.is_empty()).then(|| json!({ "anyOf": pairs }))
}
