//! Turns the upstream's response message into the HTTP answer: proto3 JSON
//! of the whole message or of its `response_body` field, or raw bytes with
//! their own content type for `google.api.HttpBody`.

use bytes::Bytes;
use http::HeaderValue;
use prost_reflect::{DynamicMessage, Kind, ReflectMessage, Value};

use super::TranscodeError;
use super::plan::Plan;
use super::{HTTP_BODY, stable_json, wire_json};
use crate::headers::{CONTENT_TYPE_JSON, CONTENT_TYPE_OCTET_STREAM};

/// The HTTP answer's body and content type.
#[derive(Debug)]
pub struct HttpReply {
    /// Response body.
    pub body: Bytes,
    /// Its content type.
    pub content_type: HeaderValue,
    /// The `Location` of a 201, from the binding's template.
    pub location: Option<HeaderValue>,
}

/// Decodes `message` (the output type of the plan's method) and renders it.
pub fn response(plan: &Plan, message: Bytes) -> Result<HttpReply, TranscodeError> {
    if plan.response_body.is_none()
        && let Some(body) = straight_from_wire(plan, &message)
    {
        // A `Location` template reads the decoded message; the body still
        // comes straight from the wire.
        let location = match &plan.success.location {
            Some(template) => template.render(&decode(plan, message)?),
            None => None,
        };
        return Ok(HttpReply {
            body: body.into(),
            content_type: CONTENT_TYPE_JSON,
            location,
        });
    }
    let decoded = decode(plan, message)?;
    let location = (plan.success.location.as_ref()).and_then(|template| template.render(&decoded));
    let mut reply = render(plan, &decoded)?;
    reply.location = location;
    Ok(reply)
}

fn decode(plan: &Plan, message: Bytes) -> Result<DynamicMessage, TranscodeError> {
    DynamicMessage::decode(plan.method.output(), message).map_err(|e| {
        TranscodeError::UndecodableResponse {
            message_type: plan.method.output().full_name().to_string(),
            reason: e.to_string(),
        }
    })
}

fn render(plan: &Plan, decoded: &DynamicMessage) -> Result<HttpReply, TranscodeError> {
    let Some(path) = &plan.response_body else {
        return render_message(plan, decoded);
    };
    let leaf = path.leaf();
    match (leaf.kind(), leaf.is_list() || leaf.is_map()) {
        (Kind::Message(descriptor), false) => {
            let value = path.get(decoded);
            match value.as_deref() {
                Some(Value::Message(inner)) => render_message(plan, inner),
                _ => render_message(plan, &DynamicMessage::new(descriptor)),
            }
        }
        _ => render_field(plan, decoded),
    }
}

/// The whole message's JSON written from the wire bytes, when
/// [`wire_json`] can; the same bytes as [`render_message`] would write.
fn straight_from_wire(plan: &Plan, message: &[u8]) -> Option<Vec<u8>> {
    let descriptor = plan.method.output();
    if descriptor.full_name() == HTTP_BODY {
        return None;
    }
    let body = wire_json::render(&descriptor, message, &plan.json.render)?;
    // A `null` sends stable_json through its tree pass (which also writes
    // floats differently); leave that case to it.
    (!body.windows(4).any(|w| w == b"null")).then_some(body)
}

fn render_message(plan: &Plan, message: &DynamicMessage) -> Result<HttpReply, TranscodeError> {
    if message.descriptor().full_name() == HTTP_BODY {
        return Ok(http_body(message));
    }
    let body = stable_json::to_vec(message, &plan.json.serialize).map_err(|e| {
        TranscodeError::Render(format!(
            "cannot render {}: {e}",
            message.descriptor().full_name()
        ))
    })?;
    Ok(HttpReply {
        body: body.into(),
        content_type: CONTENT_TYPE_JSON,
        location: None,
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
    let json = stable_json::to_value(&parent, &options)
        .map_err(|e| TranscodeError::Render(format!("cannot render response_body: {e}")))?;
    let value = json
        .get(leaf.json_name())
        .or_else(|| json.get(leaf.name()))
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    let body = serde_json::to_vec(&value).map_err(|e| TranscodeError::Render(e.to_string()))?;
    Ok(HttpReply {
        body: body.into(),
        content_type: CONTENT_TYPE_JSON,
        location: None,
    })
}

fn http_body(message: &DynamicMessage) -> HttpReply {
    let content_type = match message.get_field_by_name("content_type").as_deref() {
        Some(Value::String(ct)) if !ct.is_empty() => {
            HeaderValue::from_str(ct).unwrap_or(CONTENT_TYPE_OCTET_STREAM)
        }
        _ => CONTENT_TYPE_OCTET_STREAM,
    };
    let body = match message.get_field_by_name("data").as_deref() {
        Some(Value::Bytes(data)) => data.clone(),
        _ => Bytes::new(),
    };
    HttpReply {
        body,
        content_type,
        location: None,
    }
}
