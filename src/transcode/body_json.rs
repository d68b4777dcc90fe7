//! Reads a JSON request body strictly, so that the gateway and the upstream
//! can never disagree about what one request says.
//!
//! - The body is one JSON value (RFC 8259 §2); anything after it other than
//!   whitespace is malformed.
//! - With `body: "field"` the value is read as that field on its own and
//!   assigned to it; it cannot reach any other field.
//! - A key given twice in one object is refused, at every level, including a
//!   field given under both its JSON name and its proto name (`bookCount`
//!   and `book_count`) and a map key given twice (`"1"` and `"01"` for an
//!   integer key): proto3 JSON parsers disagree on which one wins.
//! - A field that a path variable binds may not also be set by the body:
//!   one of the two would be dropped silently.
//!
//! The checks run in a first pass over the bytes that allocates nothing for
//! objects of up to `strict::FEW` keys; prost-reflect's own parser then builds the
//! message.

use prost_reflect::{DeserializeOptions, DynamicMessage, FieldDescriptor, MessageDescriptor};
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde_json::de::SliceRead;

use super::{FieldPath, TranscodeError};

mod locate;
mod strict;

use strict::check;

/// Parses `body` as the request message (`field` is `None`, `body: "*"`)
/// or as the value of `field` within an otherwise empty request message.
/// `variables` are the fields the route's path binds.
pub fn parse(
    descriptor: &MessageDescriptor,
    field: Option<&FieldPath>,
    variables: &[FieldPath],
    body: &[u8],
    options: &DeserializeOptions,
) -> Result<DynamicMessage, TranscodeError> {
    check(descriptor, field, variables, body)?;
    let mut json = serde_json::Deserializer::from_slice(body);
    let parsed = match field {
        None => DynamicMessage::deserialize_with_options(descriptor.clone(), &mut json, options),
        Some(path) => DynamicMessage::deserialize_with_options(
            descriptor.clone(),
            Nest {
                fields: path.fields(),
                json: &mut json,
            },
            options,
        ),
    };
    parsed
        .and_then(|message| json.end().map(|()| message))
        .map_err(|e| match e.classify() {
            // A value the message cannot take: name its field.
            serde_json::error::Category::Data => {
                let at = locate::refused_field(descriptor, field, body, options);
                field_error(&e, at)
            }
            _ => json_error(&e),
        })
}

/// The client's error for a value prost-reflect refused at field path `at`.
fn field_error(error: &serde_json::Error, at: Option<String>) -> TranscodeError {
    match (json_error(error), at) {
        (TranscodeError::UnknownField { field, context }, Some(at)) => {
            // The path stops at the unknown key, or at the object holding it.
            let field = if at == field || at.ends_with(&format!(".{field}")) {
                at
            } else {
                format!("{at}.{field}")
            };
            TranscodeError::UnknownField { field, context }
        }
        (TranscodeError::MalformedJson { message, .. }, Some(at)) => TranscodeError::InvalidField {
            field: at,
            reason: message,
        },
        (other, _) => other,
    }
}

/// Turns a serde_json error into the client's error, with the position in
/// the client's own body.
pub fn json_error(error: &serde_json::Error) -> TranscodeError {
    let full = error.to_string();
    // serde_json appends " at line X column Y"; we report our own position.
    let message = full
        .rsplit_once(" at line ")
        .map_or(full.as_str(), |(m, _)| m)
        .to_string();
    if let Some(name) = message
        .strip_prefix("unrecognized field name '")
        .or_else(|| message.strip_prefix("unrecognized field name `"))
        .and_then(|rest| rest.strip_suffix('\'').or_else(|| rest.strip_suffix('`')))
    {
        return TranscodeError::UnknownField {
            field: name.to_string(),
            context: " in the request body",
        };
    }
    TranscodeError::MalformedJson {
        message,
        line: error.line(),
        column: error.column(),
    }
}

// === body: "field" ===

/// Presents the body to prost-reflect as `{"a": {"b": BODY}}` for the body
/// field `a.b`, without building that text: the body is read as the value
/// of `b` on its own, so it can set nothing else and its errors keep their
/// own line and column.
struct Nest<'a, 'de> {
    fields: &'a [FieldDescriptor],
    json: &'a mut serde_json::Deserializer<SliceRead<'de>>,
}

impl<'de> de::Deserializer<'de> for Nest<'_, 'de> {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_map(NestEntry {
            fields: self.fields,
            json: self.json,
            done: false,
        })
    }

    // A message field is read as an optional value; this one is present.
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_some(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

/// The one entry `{"<first field>": ...}` of a [`Nest`].
struct NestEntry<'a, 'de> {
    fields: &'a [FieldDescriptor],
    json: &'a mut serde_json::Deserializer<SliceRead<'de>>,
    done: bool,
}

impl<'de> MapAccess<'de> for NestEntry<'_, 'de> {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        let Some(first) = self.fields.first().filter(|_| !self.done) else {
            return Ok(None);
        };
        let name = de::value::StrDeserializer::<serde_json::Error>::new(first.name());
        seed.deserialize(name).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        self.done = true;
        match self.fields {
            [_] => seed.deserialize(&mut *self.json),
            [_, rest @ ..] => seed.deserialize(Nest {
                fields: rest,
                json: &mut *self.json,
            }),
            [] => Err(de::Error::custom("empty body field path")),
        }
    }
}
