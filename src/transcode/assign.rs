//! Sets one value the client gave by field name (a query parameter, a form
//! part) at its field path: text parsed per [`super::text`], repeated
//! fields appended to. A singular field given twice, or a second member of
//! one oneof, is refused: nothing the client sent is silently overridden.

use std::borrow::Cow;

use prost_reflect::{DynamicMessage, Kind, Value};

use super::{FieldPath, TranscodeError, text};

/// Where a named value came from, for the error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A `key=value` pair of the query string.
    Query,
    /// A part of a `multipart/form-data` body.
    Form,
}

/// Sets `path` to `value` parsed as text; `seen_singular` collects the
/// singular fields already set from this source.
pub fn text(
    message: &mut DynamicMessage,
    path: &FieldPath,
    value: &str,
    seen_singular: &mut Vec<FieldPath>,
    source: Source,
) -> Result<(), TranscodeError> {
    let leaf = path.leaf();
    if leaf.is_map() {
        return Err(invalid(
            path,
            format!("map fields cannot be set from {}", source.name()),
        ));
    }
    let kind = leaf.kind();
    if let Kind::Message(m) = &kind
        && !text::is_text_message(m)
    {
        let first = m
            .fields()
            .next()
            .map_or("field".to_string(), |f| f.name().to_string());
        return Err(invalid(
            path,
            format!(
                "is a message; set its fields instead, e.g. {}",
                source.example(&format!("{path}.{first}"))
            ),
        ));
    }
    let parsed = text::parse(&kind, value).map_err(|reason| invalid(path, reason))?;
    self::value(message, path, parsed, seen_singular)
}

/// Sets `path` to `value` (an element, for a repeated field), already of
/// the leaf's kind.
pub fn value(
    message: &mut DynamicMessage,
    path: &FieldPath,
    value: Value,
    seen_singular: &mut Vec<FieldPath>,
) -> Result<(), TranscodeError> {
    if let Some((other, oneof)) = oneof_conflict(message, path) {
        return Err(invalid(
            path,
            format!("'{other}' of the same oneof '{oneof}' is already set"),
        ));
    }
    if path.leaf().is_list() {
        if let Some(Value::List(list)) = path.get_mut(message) {
            list.push(value);
        }
        return Ok(());
    }
    if seen_singular.contains(path) {
        return Err(invalid(
            path,
            "a singular field was given more than once".into(),
        ));
    }
    seen_singular.push(path.clone());
    path.set(message, value);
    Ok(())
}

fn invalid(path: &FieldPath, reason: String) -> TranscodeError {
    TranscodeError::InvalidField {
        field: path.to_string(),
        reason,
    }
}

/// `(set member, oneof)` if a field on `path`, at any depth, belongs to a
/// oneof whose other member is already set: setting `a.b` when a sibling of
/// `a` is set would silently clear that sibling.
fn oneof_conflict(message: &DynamicMessage, path: &FieldPath) -> Option<(String, String)> {
    let mut current = message;
    let last = path.fields().len() - 1;
    for (depth, field) in path.fields().iter().enumerate() {
        if let Some(oneof) = field.containing_oneof()
            && let Some(other) = oneof.fields().find(|o| o != field && current.has_field(o))
        {
            return Some((other.name().to_string(), oneof.name().to_string()));
        }
        if depth == last || !current.has_field(field) {
            break;
        }
        current = match current.get_field(field) {
            Cow::Borrowed(Value::Message(next)) => next,
            _ => break,
        };
    }
    None
}

// === impl Source ===

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::Query => "the query string",
            Source::Form => "a form part",
        }
    }

    /// How a client sets `dotted` from this source.
    fn example(self, dotted: &str) -> String {
        match self {
            Source::Query => format!("{dotted}=..."),
            Source::Form => format!("a part named '{dotted}'"),
        }
    }
}
