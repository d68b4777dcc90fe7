//! A binding's successful answer: its status (200, or 201/202/204 as
//! routes.toml declares) and, for 201, the `Location` built from a
//! template over the response message.
//!
//! A template is a URI reference with RFC 6570 level-2 expressions whose
//! names are field paths of the response message: `{name}` percent-encodes
//! everything but unreserved characters (so a `/` in the value becomes
//! `%2F`), `{+name}` keeps `/` as a path separator (for resource names such
//! as `shelves/1/books/2`). Fields must be singular scalars or enums.

use http::{HeaderValue, StatusCode};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use prost_reflect::{DynamicMessage, Kind, MessageDescriptor, Value};

use super::FieldPath;

/// What a binding answers on success.
#[derive(Debug, Clone)]
pub struct Success {
    /// 200 (default), 201, 202 or 204. A 204 has no body and no Content-Type.
    pub status: StatusCode,
    /// The `Location` of a 201, rendered from the response message.
    pub location: Option<LocationTemplate>,
}

impl Default for Success {
    fn default() -> Self {
        Success {
            status: StatusCode::OK,
            location: None,
        }
    }
}

/// A parsed `location` template.
#[derive(Debug, Clone)]
pub struct LocationTemplate {
    /// As written in routes.toml.
    pub text: String,
    /// Literal text and expressions, in order.
    pub parts: Vec<LocationPart>,
}

/// One piece of a [`LocationTemplate`].
#[derive(Debug, Clone)]
pub enum LocationPart {
    /// Copied as is.
    Literal(String),
    /// A response field's value.
    Field {
        /// The field, resolved against the response message.
        path: FieldPath,
        /// `{+path}`: `/` is kept rather than encoded.
        keep_slashes: bool,
    },
}

/// RFC 3986 unreserved characters stay; everything else is encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// The same, keeping `/`.
const PATH: &AsciiSet = &SEGMENT.remove(b'/');

impl LocationTemplate {
    /// Parses `text` and resolves each expression against `response`.
    /// The error says what is wrong, for a `check` diagnostic.
    pub fn compile(text: &str, response: &MessageDescriptor) -> Result<LocationTemplate, String> {
        if !(text.starts_with('/') || text.starts_with("https://") || text.starts_with("http://")) {
            return Err(format!(
                "location template {text:?} must start with '/' or an http(s):// origin"
            ));
        }
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let literal = &rest[..open];
            check_literal(literal, text)?;
            if !literal.is_empty() {
                parts.push(LocationPart::Literal(literal.to_string()));
            }
            let Some(close) = rest[open..].find('}') else {
                return Err(format!("location template {text:?} has an unclosed '{{'"));
            };
            let expression = &rest[open + 1..open + close];
            let (keep_slashes, name) = match expression.strip_prefix('+') {
                Some(name) => (true, name),
                None => (false, expression),
            };
            parts.push(LocationPart::Field {
                path: field(name, response)?,
                keep_slashes,
            });
            rest = &rest[open + close + 1..];
        }
        check_literal(rest, text)?;
        if !rest.is_empty() {
            parts.push(LocationPart::Literal(rest.to_string()));
        }
        if !parts
            .iter()
            .any(|p| matches!(p, LocationPart::Field { .. }))
        {
            return Err(format!(
                "location template {text:?} names no response field; write e.g. \"/v1/{{name}}\""
            ));
        }
        Ok(LocationTemplate {
            text: text.to_string(),
            parts,
        })
    }

    /// The `Location` for `response`, or `None` when a field it names is an
    /// empty string (no resource to point at).
    pub fn render(&self, response: &DynamicMessage) -> Option<HeaderValue> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                LocationPart::Literal(text) => out.push_str(text),
                LocationPart::Field { path, keep_slashes } => {
                    let text = scalar_text(path, response)?;
                    let set = if *keep_slashes { PATH } else { SEGMENT };
                    out.extend(utf8_percent_encode(&text, set));
                }
            }
        }
        HeaderValue::from_str(&out).ok()
    }
}

fn check_literal(literal: &str, text: &str) -> Result<(), String> {
    match literal.chars().find(|c| *c == '}' || !c.is_ascii_graphic()) {
        Some(c) => Err(format!(
            "location template {text:?} has {c:?} outside an expression"
        )),
        None => Ok(()),
    }
}

fn field(name: &str, response: &MessageDescriptor) -> Result<FieldPath, String> {
    if name.is_empty() {
        return Err("location template has an empty '{}'".into());
    }
    let path =
        FieldPath::resolve(response, name).map_err(|e| format!("location field '{name}': {e}"))?;
    let leaf = path.leaf();
    if path.fields()[..path.fields().len() - 1]
        .iter()
        .any(|f| f.is_list() || f.is_map())
    {
        return Err(format!(
            "location field '{name}' goes through a repeated field"
        ));
    }
    let scalar = matches!(
        leaf.kind(),
        Kind::String
            | Kind::Int32
            | Kind::Int64
            | Kind::Uint32
            | Kind::Uint64
            | Kind::Sint32
            | Kind::Sint64
            | Kind::Fixed32
            | Kind::Fixed64
            | Kind::Sfixed32
            | Kind::Sfixed64
            | Kind::Bool
            | Kind::Enum(_)
    );
    if !scalar || leaf.is_list() || leaf.is_map() {
        return Err(format!(
            "location field '{name}' of {} is not a singular string, integer, bool or enum field",
            response.full_name()
        ));
    }
    Ok(path)
}

fn scalar_text(path: &FieldPath, message: &DynamicMessage) -> Option<String> {
    let value = path.get(message);
    let leaf = path.leaf();
    let value = value
        .map(|v| v.into_owned())
        .unwrap_or_else(|| Value::default_value_for_field(leaf));
    Some(match value {
        Value::String(s) if s.is_empty() => return None,
        Value::String(s) => s,
        Value::I32(n) => n.to_string(),
        Value::I64(n) => n.to_string(),
        Value::U32(n) => n.to_string(),
        Value::U64(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::EnumNumber(n) => match leaf.kind() {
            Kind::Enum(e) => e
                .get_value(n)
                .map_or(n.to_string(), |v| v.name().to_string()),
            _ => n.to_string(),
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book() -> MessageDescriptor {
        crate::descriptors::load(&crate::descriptors::DescriptorSource::Protos {
            files: vec!["bookstore/v1/bookstore.proto".into()],
            include: vec![concat!(env!("CARGO_MANIFEST_DIR"), "/proto").into()],
        })
        .expect("bookstore compiles")
        .get_message_by_name("bookstore.v1.Book")
        .expect("Book")
    }

    #[test]
    fn values_are_percent_encoded_per_expression_kind() {
        let descriptor = book();
        let mut message = DynamicMessage::new(descriptor.clone());
        message.set_field_by_name("name", Value::String("shelves/1/books/a b".into()));
        let plain = LocationTemplate::compile("/v1/{name}", &descriptor).expect("compiles");
        assert_eq!(
            plain.render(&message).expect("rendered"),
            "/v1/shelves%2F1%2Fbooks%2Fa%20b"
        );
        let kept = LocationTemplate::compile("/v1/{+name}", &descriptor).expect("compiles");
        assert_eq!(
            kept.render(&message).expect("rendered"),
            "/v1/shelves/1/books/a%20b"
        );
        message.set_field_by_name("name", Value::String(String::new()));
        assert!(kept.render(&message).is_none());
    }

    #[test]
    fn bad_templates_say_what_is_wrong() {
        let descriptor = book();
        for (text, says) in [
            ("v1/{name}", "must start with"),
            ("/v1/{nope}", "no field 'nope'"),
            ("/v1/{name", "unclosed"),
            ("/v1/books", "names no response field"),
            ("/v1/{}", "empty"),
        ] {
            let error = LocationTemplate::compile(text, &descriptor).expect_err(text);
            assert!(error.contains(says), "{text}: {error}");
        }
    }
}
