//! Builds the gRPC request message: the body per the binding's rule, then
//! the path variables, then the remaining fields from the query string, and
//! encodes it as one framed gRPC message.

use bytes::Bytes;
use http::HeaderValue;
use prost::Message;
use prost_reflect::{DeserializeOptions, DynamicMessage, MessageDescriptor, Value};

use super::TranscodeError;
use super::multipart::{self, MultipartLimits};
use super::plan::{BodyRule, Plan};
use super::{FieldPath, body_json, field_mask, json_wire, query, text};
use crate::headers::OCTET_STREAM;
use crate::upstream::grpc::{frame, try_frame};

/// The body media types a binding with a body accepts (besides raw bytes
/// for google.api.HttpBody).
const JSON_OR_FORM: &str = "application/json or multipart/form-data";

/// The parts of an HTTP request that feed the gRPC message.
#[derive(Debug)]
pub struct HttpInput<'a> {
    /// Decoded path variables, `(variable index, value)`.
    pub captures: &'a [(usize, String)],
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    /// The request's Content-Type.
    pub content_type: Option<&'a HeaderValue>,
    /// The whole (decompressed, size-checked) body.
    pub body: Bytes,
    /// Deepest JSON nesting accepted.
    pub max_json_depth: usize,
    /// Bounds on a `multipart/form-data` body; `None` passes a form on
    /// unparsed (a streamed upload's chunks are not whole forms).
    pub multipart: Option<MultipartLimits>,
}

/// Builds and frames the request message for the binding `plan` describes.
pub fn request(plan: &Plan, input: HttpInput<'_>) -> Result<Bytes, TranscodeError> {
    if let Some(framed) = straight_to_wire(plan, &input) {
        return Ok(framed);
    }
    general(plan, input)
}

/// The framed request written straight from the JSON body, the path
/// variables and the query ([`json_wire`], [`query::to_wire`]), when each
/// is one they write; the same message [`general`] builds.
fn straight_to_wire(plan: &Plan, input: &HttpInput<'_>) -> Option<Bytes> {
    if plan.takes_http_body() {
        return None;
    }
    let field = match &plan.body {
        BodyRule::None if !input.body.is_empty() => return None,
        BodyRule::None | BodyRule::Whole => None,
        BodyRule::Field(path) => Some(path),
    };
    // A form is read as one even when empty; only JSON (or nothing) here.
    let bare = input.body.is_empty() && input.content_type.is_none();
    if !bare && check_json_content_type(input.content_type).is_err() {
        return None;
    }
    let mut bound = [0u32; 8];
    let bound = bound_by_variables(plan, field, &mut bound)?;
    let target = json_wire::Target {
        message: &plan.method.input(),
        field,
        bound,
        max_depth: input.max_json_depth,
    };
    try_frame(
        |buf| {
            if !input.body.is_empty() {
                json_wire::encode(&target, &input.body, buf)?;
            }
            for (index, value) in input.captures {
                let Some(path) = plan.variables.get(*index) else {
                    continue;
                };
                let parsed = text::parse(&path.leaf().kind(), value).ok()?;
                json_wire::encode_path_value(path, &parsed, buf)?;
            }
            match input.query.filter(|q| !q.is_empty()) {
                Some(query) => query::to_wire(plan, query, buf),
                None => Some(()),
            }
        },
        input.body.len() + 16,
    )
}

/// The numbers of the fields at the body's top level that path variables
/// set, written into `out`; `None` when a variable is the body field itself
/// or there are more than `out` holds.
fn bound_by_variables<'a>(
    plan: &Plan,
    body: Option<&FieldPath>,
    out: &'a mut [u32; 8],
) -> Option<&'a [u32]> {
    let mut count = 0;
    for variable in &plan.variables {
        let at = match body {
            None => 0,
            Some(path) if variable == path => return None,
            Some(path) if variable.is_within(path) => path.fields().len(),
            Some(_) => continue,
        };
        *out.get_mut(count)? = variable.fields().get(at)?.number();
        count += 1;
    }
    Some(&out[..count])
}

/// Builds the request message field by field on a `DynamicMessage`: every
/// body, query and variable form, with the precise error for each refusal.
pub fn general(plan: &Plan, input: HttpInput<'_>) -> Result<Bytes, TranscodeError> {
    let descriptor = plan.method.input();
    let mut message = match &plan.body {
        BodyRule::None if !input.body.is_empty() => {
            return Err(TranscodeError::InvalidField {
                field: "(body)".into(),
                reason: "this route takes no request body; send the fields in the query string"
                    .into(),
            });
        }
        BodyRule::None => DynamicMessage::new(descriptor),
        BodyRule::Whole => body_message(plan, &descriptor, None, &input)?,
        BodyRule::Field(path) => body_message(plan, &descriptor, Some(path), &input)?,
    };
    for (index, value) in input.captures {
        let Some(field) = plan.variables.get(*index) else {
            continue;
        };
        let parsed = text::parse(&field.leaf().kind(), value).map_err(|reason| {
            TranscodeError::InvalidField {
                field: field.to_string(),
                reason,
            }
        })?;
        field.set(&mut message, parsed);
    }
    if let Some(query) = input.query.filter(|q| !q.is_empty()) {
        query::apply(&mut message, plan, query)?;
    }
    field_mask::validate(&message, plan)?;
    Ok(frame(|buf| message.encode_raw(buf), message.encoded_len()))
}

fn body_message(
    plan: &Plan,
    descriptor: &MessageDescriptor,
    field: Option<&FieldPath>,
    input: &HttpInput<'_>,
) -> Result<DynamicMessage, TranscodeError> {
    // Before the HttpBody pass-through: a form uploads its file part, not
    // the form itself.
    if let Some(limits) = input.multipart
        && let Some(boundary) = multipart::boundary(input.content_type)?
    {
        let body = input.body.clone();
        return multipart::parse(plan, descriptor, field, body, boundary, limits);
    }
    if plan.takes_http_body() {
        return Ok(http_body_message(descriptor, field, input));
    }
    if input.body.is_empty() {
        return Ok(DynamicMessage::new(descriptor.clone()));
    }
    check_json_content_type(input.content_type)?;
    if exceeds_depth(&input.body, input.max_json_depth) {
        return Err(TranscodeError::JsonTooDeep {
            limit: input.max_json_depth,
        });
    }
    let options = DeserializeOptions::new().deny_unknown_fields(plan.json.deny_unknown_fields);
    body_json::parse(descriptor, field, &plan.variables, &input.body, &options)
}

fn http_body_message(
    descriptor: &MessageDescriptor,
    field: Option<&FieldPath>,
    input: &HttpInput<'_>,
) -> DynamicMessage {
    let mut message = DynamicMessage::new(descriptor.clone());
    let content_type = input
        .content_type
        .and_then(|v| v.to_str().ok())
        .unwrap_or(OCTET_STREAM)
        .to_string();
    let fill = |body: &mut DynamicMessage| {
        body.set_field_by_name("content_type", Value::String(content_type.clone()));
        body.set_field_by_name("data", Value::Bytes(input.body.clone()));
    };
    match field {
        None => fill(&mut message),
        Some(path) => {
            if let Some(Value::Message(body)) = path.get_mut(&mut message) {
                fill(body);
            }
        }
    }
    message
}

/// A Content-Type's media type without its parameters, lower-cased
/// (RFC 9110 §8.3.1: type and subtype are case-insensitive).
pub fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn check_json_content_type(content_type: Option<&HeaderValue>) -> Result<(), TranscodeError> {
    let Some(value) = content_type else {
        return Err(TranscodeError::UnsupportedMediaType {
            got: String::new(),
            expected: JSON_OR_FORM,
        });
    };
    let text = value.to_str().unwrap_or("");
    let essence = essence(text);
    let is_json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if !is_json {
        return Err(TranscodeError::UnsupportedMediaType {
            got: text.to_string(),
            expected: JSON_OR_FORM,
        });
    }
    if !charset_is_utf8(text) {
        // JSON is UTF-8 (RFC 8259 §8.1); bytes declared in another charset
        // would be read as something other than what the client meant.
        return Err(TranscodeError::UnsupportedMediaType {
            got: text.to_string(),
            expected: "application/json in UTF-8 (no charset, or charset=utf-8)",
        });
    }
    Ok(())
}

/// Whether a media type's `charset` parameter, if any, is UTF-8. Parameter
/// names and the charset name are case-insensitive; the value may be quoted
/// (RFC 9110 §8.3.1, §5.6.6).
fn charset_is_utf8(content_type: &str) -> bool {
    content_type.split(';').skip(1).all(|parameter| {
        let Some((name, value)) = parameter.split_once('=') else {
            return true;
        };
        if !name.trim().eq_ignore_ascii_case("charset") {
            return true;
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        value.eq_ignore_ascii_case("utf-8")
    })
}

/// Whether JSON text nests objects/arrays deeper than `limit`. A linear scan
/// that skips strings, run before parsing so a deep document costs nothing.
pub fn exceeds_depth(json: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in json {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_ignores_brackets_in_strings() {
        assert!(!exceeds_depth(br#"{"a":"[[[[[[[["}"#, 2));
        assert!(exceeds_depth(br#"{"a":[[{"b":1}]]}"#, 3));
        assert!(!exceeds_depth(br#"{"a":[[{"b":"\"{"}]]}"#, 4));
    }

    #[test]
    fn json_content_types() {
        assert!(
            check_json_content_type(Some(&HeaderValue::from_static(
                "application/json; charset=utf-8"
            )))
            .is_ok()
        );
        assert!(
            check_json_content_type(Some(&HeaderValue::from_static(
                "application/merge-patch+json"
            )))
            .is_ok()
        );
        assert!(check_json_content_type(Some(&HeaderValue::from_static("text/plain"))).is_err());
        for charset in ["UTF-8", "utf-8", "\"utf-8\""] {
            let value = format!("application/json;charset={charset}");
            let header = HeaderValue::from_str(&value).expect("valid header");
            assert!(check_json_content_type(Some(&header)).is_ok(), "{value}");
        }
        for charset in ["latin1", "iso-8859-1", "utf-16", "\"\""] {
            let value = format!("application/json; charset={charset}");
            let header = HeaderValue::from_str(&value).expect("valid header");
            assert!(check_json_content_type(Some(&header)).is_err(), "{value}");
        }
        assert!(check_json_content_type(None).is_err());
    }
}
