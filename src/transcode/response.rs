//! Turns the upstream's response message into the HTTP answer: proto3 JSON
//! of the whole message or of its `response_body` field, or raw bytes with
//! their own content type for `google.api.HttpBody`.

use bytes::Bytes;
use http::HeaderValue;
use prost_reflect::{DynamicMessage, Kind, ReflectMessage, Value};

use super::HTTP_BODY;
use super::TranscodeError;
use super::plan::Plan;
use crate::headers::CONTENT_TYPE_JSON;

/// The HTTP answer's body and content type.
#[derive(Debug)]
pub struct HttpReply {
    /// Response body.
    pub body: Bytes,
    /// Its content type.
    pub content_type: HeaderValue,
}

/// Decodes `message` (the output type of the plan's method) and renders it.
pub fn response(plan: &Plan, message: Bytes) -> Result<HttpReply, TranscodeError> {
    let decoded = DynamicMessage::decode(plan.method.output(), message).map_err(|e| {
        TranscodeError::UndecodableResponse {
            message_type: plan.method.output().full_name().to_string(),
            reason: e.to_string(),
        }
    })?;
    let Some(path) = &plan.response_body else {
        return render_message(plan, &decoded);
    };
    let leaf = path.leaf();
    match (leaf.kind(), leaf.is_list() || leaf.is_map()) {
        (Kind::Message(descriptor), false) => {
            let value = path.get(&decoded);
            match value.as_deref() {
                Some(Value::Message(inner)) => render_message(plan, inner),
                _ => render_message(plan, &DynamicMessage::new(descriptor)),
            }
        }
        _ => render_field(plan, &decoded),
    }
}

fn render_message(plan: &Plan, message: &DynamicMessage) -> Result<HttpReply, TranscodeError> {
    if message.descriptor().full_name() == HTTP_BODY {
        return Ok(http_body(message));
    }
    let cannot_render = |e: &dyn std::fmt::Display| {
        TranscodeError::Render(format!(
            "cannot render {}: {e}",
            message.descriptor().full_name()
        ))
    };
    let mut body = Vec::with_capacity(256);
    message
        .serialize_with_options(
            &mut serde_json::Serializer::new(&mut body),
            &plan.json.serialize,
        )
        .map_err(|e| cannot_render(&e))?;
    // prost-reflect writes a NaN or infinite DoubleValue/FloatValue as `null`
    // (which reads back as "unset"); only then is the slower, patched rendering needed.
    if body.windows(4).any(|w| w == b"null") {
        let mut json = message
            .serialize_with_options(serde_json::value::Serializer, &plan.json.serialize)
            .map_err(|e| cannot_render(&e))?;
        restore_non_finite(message, &mut json);
        body = serde_json::to_vec(&json).map_err(|e| cannot_render(&e))?;
    }
    Ok(HttpReply {
        body: body.into(),
        content_type: CONTENT_TYPE_JSON,
    })
}

/// A non-message response_body (a scalar, list or map): rendered through its
/// containing message so the proto3 JSON rules apply, then taken out.
fn render_field(plan: &Plan, decoded: &DynamicMessage) -> Result<HttpReply, TranscodeError> {
    let Some(path) = &plan.response_body else {
        return render_message(plan, decoded);
    };
    let leaf = path.leaf();
    let parent_descriptor = leaf.parent_message().clone();
    let mut parent = DynamicMessage::new(parent_descriptor);
    if let Some(value) = path.get(decoded) {
        parent.set_field(leaf, value.into_owned());
    }
    let options = plan.json.serialize.clone().skip_default_fields(false);
    let mut json = parent
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|e| TranscodeError::Render(format!("cannot render response_body: {e}")))?;
    restore_non_finite(&parent, &mut json);
    let value = json
        .get(leaf.json_name())
        .or_else(|| json.get(leaf.name()))
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    let body = serde_json::to_vec(&value).map_err(|e| TranscodeError::Render(e.to_string()))?;
    Ok(HttpReply {
        body: body.into(),
        content_type: CONTENT_TYPE_JSON,
    })
}

fn http_body(message: &DynamicMessage) -> HttpReply {
    let content_type = match message.get_field_by_name("content_type").as_deref() {
        Some(Value::String(ct)) if !ct.is_empty() => HeaderValue::from_str(ct)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
        _ => HeaderValue::from_static("application/octet-stream"),
    };
    let body = match message.get_field_by_name("data").as_deref() {
        Some(Value::Bytes(data)) => data.clone(),
        _ => Bytes::new(),
    };
    HttpReply { body, content_type }
}

/// Writes `"NaN"`, `"Infinity"` or `"-Infinity"` where `json` (the rendering
/// of `message`) has `null` for a non-finite `google.protobuf.DoubleValue` or
/// `FloatValue`, as the proto3 JSON mapping requires; prost-reflect writes
/// those wrappers with a plain `serialize_f64`, which JSON turns into `null`.
fn restore_non_finite(message: &DynamicMessage, json: &mut serde_json::Value) {
    let serde_json::Value::Object(object) = json else {
        return;
    };
    for field in message.descriptor().fields() {
        let Kind::Message(kind) = field.kind() else {
            continue;
        };
        // JSON names and proto names never collide (protoc rejects that), so
        // whichever of the two the options chose is the field's key.
        let key = if object.contains_key(field.json_name()) {
            field.json_name()
        } else {
            field.name()
        };
        let Some(slot) = object.get_mut(key) else {
            continue;
        };
        let value = message.get_field(&field);
        match (value.as_ref(), slot) {
            (Value::List(items), serde_json::Value::Array(slots)) => {
                for (item, slot) in items.iter().zip(slots) {
                    restore_in_value(&kind, item, slot);
                }
            }
            (Value::Map(entries), serde_json::Value::Object(slots)) => {
                let Some(Kind::Message(value_kind)) = kind
                    .map_entry_value_field()
                    .kind()
                    .as_message()
                    .cloned()
                    .map(Kind::Message)
                else {
                    continue;
                };
                for (key, item) in entries {
                    if let Some(slot) = slots.get_mut(&map_key_text(key)) {
                        restore_in_value(&value_kind, item, slot);
                    }
                }
            }
            (item, slot) => restore_in_value(&kind, item, slot),
        }
    }
}

fn restore_in_value(
    kind: &prost_reflect::MessageDescriptor,
    value: &Value,
    slot: &mut serde_json::Value,
) {
    let Value::Message(inner) = value else {
        return;
    };
    match kind.full_name() {
        "google.protobuf.DoubleValue" | "google.protobuf.FloatValue" => {
            let number = match inner.get_field_by_name("value").as_deref() {
                Some(Value::F64(v)) => *v,
                Some(Value::F32(v)) => f64::from(*v),
                _ => return,
            };
            if slot.is_null() && !number.is_finite() {
                let text = if number.is_nan() {
                    "NaN"
                } else if number > 0.0 {
                    "Infinity"
                } else {
                    "-Infinity"
                };
                *slot = serde_json::Value::String(text.into());
            }
        }
        // Rendered in their own JSON forms, with no wrapper fields to patch.
        "google.protobuf.Any"
        | "google.protobuf.Struct"
        | "google.protobuf.Value"
        | "google.protobuf.ListValue" => {}
        _ => restore_non_finite(inner, slot),
    }
}

fn map_key_text(key: &prost_reflect::MapKey) -> String {
    use prost_reflect::MapKey;
    match key {
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(v) => v.to_string(),
        MapKey::I64(v) => v.to_string(),
        MapKey::U32(v) => v.to_string(),
        MapKey::U64(v) => v.to_string(),
        MapKey::String(s) => s.clone(),
    }
}
