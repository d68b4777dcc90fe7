//! Names the field a refused JSON body value belongs to, in the notation
//! of every other field violation: JSON keys as the client wrote them,
//! dotted (`book.authors[1].name`), list items `[1]`, map entries
//! `labels["k"]`.
//!
//! Only runs after prost-reflect has refused the body: the parse is done
//! again with the path tracked, so a body that parses pays nothing for it.

use prost_reflect::{DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor};
use serde_path_to_error::{Segment, Track};

use super::Nest;
use crate::transcode::{FieldPath, stable_json};

/// Parses `body` again, tracking where the parser is; the field path of
/// the value it stops at, or `None` if it stops at the top.
pub(super) fn refused_field(
    descriptor: &MessageDescriptor,
    field: Option<&FieldPath>,
    body: &[u8],
    options: &DeserializeOptions,
) -> Option<String> {
    let mut track = Track::new();
    let mut json = serde_json::Deserializer::from_slice(body);
    let parsed = match field {
        None => DynamicMessage::deserialize_with_options(
            descriptor.clone(),
            serde_path_to_error::Deserializer::new(&mut json, &mut track),
            options,
        ),
        Some(path) => DynamicMessage::deserialize_with_options(
            descriptor.clone(),
            serde_path_to_error::Deserializer::new(
                Nest {
                    fields: path.fields(),
                    json: &mut json,
                },
                &mut track,
            ),
            options,
        ),
    };
    parsed.err()?;
    let rendered = render(descriptor, track.path().iter());
    (!rendered.is_empty()).then_some(rendered)
}

/// What the value at a point of the path is.
enum At {
    Message(MessageDescriptor),
    MapEntries(FieldDescriptor),
    List(Kind),
    /// A scalar, a well-known type with its own JSON form, an unknown key.
    Other,
}

impl At {
    fn field(field: &FieldDescriptor) -> At {
        if field.is_map() {
            match field.kind() {
                Kind::Message(entry) => At::MapEntries(entry.map_entry_value_field()),
                _ => At::Other,
            }
        } else if field.is_list() {
            At::List(field.kind())
        } else {
            At::single(field.kind())
        }
    }

    fn single(kind: Kind) -> At {
        match kind {
            Kind::Message(m) if !stable_json::has_own_json_form(m.full_name()) => At::Message(m),
            _ => At::Other,
        }
    }
}

fn render<'a>(
    descriptor: &MessageDescriptor,
    segments: impl Iterator<Item = &'a Segment>,
) -> String {
    let mut out = String::new();
    let mut at = At::Message(descriptor.clone());
    for segment in segments {
        at = match (segment, at) {
            (Segment::Map { key }, At::MapEntries(value)) => {
                out.push_str(&format!("[{key:?}]"));
                At::single(value.kind())
            }
            (Segment::Map { key }, At::Message(message)) => {
                push_key(&mut out, key);
                message
                    .get_field_by_json_name(key)
                    .or_else(|| message.get_field_by_name(key))
                    .map_or(At::Other, |field| At::field(&field))
            }
            (Segment::Map { key }, _) => {
                push_key(&mut out, key);
                At::Other
            }
            (Segment::Seq { index }, At::List(kind)) => {
                out.push_str(&format!("[{index}]"));
                At::single(kind)
            }
            (Segment::Seq { index }, _) => {
                out.push_str(&format!("[{index}]"));
                At::Other
            }
            (Segment::Enum { .. } | Segment::Unknown, _) => At::Other,
        };
    }
    out
}

fn push_key(out: &mut String, key: &str) {
    if !out.is_empty() {
        out.push('.');
    }
    out.push_str(key);
}
