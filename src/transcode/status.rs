//! Renders an upstream's gRPC status: message, code and the
//! `google.protobuf.Any` details from `grpc-status-details-bin`, as proto3
//! JSON with `@type` when the type is known (the google.rpc error detail
//! types always are), and the retry delay of a `google.rpc.RetryInfo`.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions, Value};
use serde_json::json;

use tonic::Code;

/// A non-OK gRPC status from the upstream, with its details already rendered
/// as JSON (rendering needs the descriptor pool, which the caller has).
#[derive(Debug, Clone)]
pub struct UpstreamStatus {
    /// The gRPC code.
    pub code: Code,
    /// The service's message.
    pub message: String,
    /// `google.protobuf.Any` details, as proto3 JSON with `@type`.
    pub details: Vec<serde_json::Value>,
    /// From a `google.rpc.RetryInfo` detail, if any.
    pub retry_after: Option<Duration>,
    /// Allowlisted upstream metadata to return as response headers.
    pub headers: http::HeaderMap,
}

/// Turns a tonic status into the gateway's rendering of it.
pub fn upstream_status(status: &tonic::Status, pool: &DescriptorPool) -> UpstreamStatus {
    let mut details = Vec::new();
    let mut retry_after = None;
    let envelope = pool
        .get_message_by_name("google.rpc.Status")
        .and_then(|d| DynamicMessage::decode(d, status.details()).ok());
    if let Some(envelope) = envelope
        && let Some(Value::List(anys)) = envelope.get_field_by_name("details").as_deref()
    {
        for any in anys {
            let Value::Message(any) = any else { continue };
            let (type_url, value) = any_parts(any);
            let type_name = type_url.rsplit('/').next().unwrap_or("");
            let known = pool
                .get_message_by_name(type_name)
                .and_then(|d| DynamicMessage::decode(d, value.clone()).ok());
            match known {
                Some(detail) => {
                    if type_name == "google.rpc.RetryInfo" {
                        retry_after = retry_delay(&detail);
                    }
                    details.push(render_known(&type_url, &detail));
                }
                None => details.push(json!({"@type": type_url, "value": STANDARD.encode(&value)})),
            }
        }
    }
    UpstreamStatus {
        code: status.code(),
        message: status.message().to_string(),
        details,
        retry_after,
        headers: http::HeaderMap::new(),
    }
}

fn any_parts(any: &DynamicMessage) -> (String, bytes::Bytes) {
    let type_url = match any.get_field_by_name("type_url").as_deref() {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    let value = match any.get_field_by_name("value").as_deref() {
        Some(Value::Bytes(b)) => b.clone(),
        _ => bytes::Bytes::new(),
    };
    (type_url, value)
}

fn render_known(type_url: &str, detail: &DynamicMessage) -> serde_json::Value {
    let rendered = super::stable_json::to_value(detail, &SerializeOptions::new())
        .unwrap_or(serde_json::Value::Null);
    match rendered {
        serde_json::Value::Object(fields) => {
            let mut object = serde_json::Map::with_capacity(fields.len() + 1);
            object.insert("@type".into(), type_url.into());
            object.extend(fields);
            serde_json::Value::Object(object)
        }
        // Well-known types with a non-object JSON form (Duration, Timestamp...).
        other => json!({"@type": type_url, "value": other}),
    }
}

fn retry_delay(retry_info: &DynamicMessage) -> Option<Duration> {
    let Some(Value::Message(delay)) = retry_info
        .get_field_by_name("retry_delay")
        .as_deref()
        .cloned()
    else {
        return None;
    };
    let seconds = match delay.get_field_by_name("seconds").as_deref() {
        Some(Value::I64(s)) => *s,
        _ => 0,
    };
    let nanos = match delay.get_field_by_name("nanos").as_deref() {
        Some(Value::I32(n)) => *n,
        _ => 0,
    };
    (seconds >= 0 && nanos >= 0).then(|| Duration::new(seconds as u64, nanos as u32))
}
