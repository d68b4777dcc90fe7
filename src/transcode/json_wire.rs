//! Proto3 JSON request bodies written straight to protobuf wire bytes,
//! guided by the descriptors: no `DynamicMessage` (a map, a `Value` and
//! often a `String` per field) in between, and one pass over the body
//! instead of two. The counterpart of [`super::wire_json`] for requests.
//!
//! It takes what request bodies are mostly made of (proto3 messages of
//! scalars, strings, bytes, enums, repeated fields, nested messages and
//! `Timestamp`) and declines the rest: [`encode`] returns `None` and the
//! caller takes the general path ([`super::body_json`]), which then reads
//! the body, or refuses it with its precise error, exactly as before.
//!
//! Every value is read as prost-reflect's reader reads it (the same
//! conversions, bounds and casts, see [`scalar`]), so the upstream receives
//! the same message either way (tests/json_wire.rs compares the two over
//! random messages). What the general path would refuse or treat specially
//! is declined rather than imitated: a key given twice (also under its
//! other name), a key a path variable binds, an unknown key, a second
//! member of a oneof, a map, `null` inside a list or as the whole body, an
//! unknown enum name, a key with escapes, a well-known type other than
//! `Timestamp`, proto2 or editions syntax, nesting past the depth limit.

use bytes::BytesMut;
use prost::encoding::{WireType, encode_key, encode_varint};
use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor, Syntax, Value};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use super::FieldPath;
use super::stable_json::has_own_json_form;

mod scalar;

use scalar::Scalar;

/// Where a JSON body goes in the request message.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The request message.
    pub message: &'a MessageDescriptor,
    /// The body field (`body: "a.b"`), or `None` for `body: "*"`.
    pub field: Option<&'a FieldPath>,
    /// Numbers of the fields at the body's top level that a path variable
    /// also sets.
    pub bound: &'a [u32],
    /// Deepest nesting of objects and arrays taken.
    pub max_depth: usize,
}

/// Appends the wire bytes that `json` sets in the request message to
/// `buf`, or returns `None` (leaving `buf` in any state) when the general
/// path must read it.
pub fn encode(target: &Target<'_>, json: &[u8], buf: &mut BytesMut) -> Option<()> {
    let mut reader = serde_json::Deserializer::from_slice(json);
    let mut writer = Writer {
        buf,
        max_depth: target.max_depth,
    };
    match target.field {
        None => {
            if !writes_directly(target.message) {
                return None;
            }
            let fields = Fields {
                writer: &mut writer,
                descriptor: target.message,
                bound: target.bound,
                depth: 1,
            };
            fields.deserialize(&mut reader).ok()?;
        }
        Some(path) => {
            let (leaf, outer) = path.fields().split_last()?;
            let marks: Vec<usize> = outer.iter().map(|f| writer.open(f.number())).collect();
            let value = FieldValue {
                writer: &mut writer,
                field: leaf,
                kind: &leaf.kind(),
                bound: target.bound,
                element: Element::Root,
                depth: 0,
            };
            value.deserialize(&mut reader).ok()?;
            for mark in marks.into_iter().rev() {
                writer.close(mark);
            }
        }
    }
    reader.end().ok()
}

/// Appends field `path` set to `value` (a path variable's parsed value),
/// or returns `None` for a value this module does not write.
pub fn encode_path_value(path: &FieldPath, value: &Value, buf: &mut BytesMut) -> Option<()> {
    let (leaf, outer) = path.fields().split_last()?;
    let kind = leaf.kind();
    if leaf.is_list() || leaf.is_map() || matches!(kind, Kind::Message(_)) {
        return None;
    }
    let scalar = Scalar::from_value(value)?;
    let mut writer = Writer { buf, max_depth: 0 };
    // Messages on the way are present even when the leaf holds its default.
    let marks: Vec<usize> = outer.iter().map(|f| writer.open(f.number())).collect();
    if leaf.supports_presence() || !scalar.is_default() {
        scalar::write_field(leaf.number(), &kind, &scalar, writer.buf);
    }
    for mark in marks.into_iter().rev() {
        writer.close(mark);
    }
    Some(())
}

/// Appends `value` (parsed from a query parameter) as field `field` of the
/// request message: one element record for a repeated field, else the
/// field unless it holds its default without presence. `None` for a value
/// this module does not write (a message, a map).
pub fn encode_field_value(
    field: &FieldDescriptor,
    value: &Value,
    buf: &mut BytesMut,
) -> Option<()> {
    let kind = field.kind();
    if field.is_map() || matches!(kind, Kind::Message(_)) {
        return None;
    }
    let scalar = Scalar::from_value(value)?;
    if field.is_list() || field.supports_presence() || !scalar.is_default() {
        scalar::write_field(field.number(), &kind, &scalar, buf);
    }
    Some(())
}

/// Whether a message's JSON object maps field by field onto its wire form.
fn writes_directly(descriptor: &MessageDescriptor) -> bool {
    descriptor.parent_file().syntax() == Syntax::Proto3
        && !has_own_json_form(descriptor.full_name())
}

/// The wire output, with length prefixes patched in once known.
struct Writer<'b> {
    buf: &'b mut BytesMut,
    max_depth: usize,
}

impl Writer<'_> {
    /// Writes the key of length-delimited field `number` and a one-byte
    /// length placeholder; returns the placeholder's position.
    fn open(&mut self, number: u32) -> usize {
        encode_key(number, WireType::LengthDelimited, self.buf);
        self.buf.extend_from_slice(&[0]);
        self.buf.len() - 1
    }

    /// Writes the length of what followed the placeholder at `mark`,
    /// moving it along when the length needs more than one byte.
    fn close(&mut self, mark: usize) {
        let len = self.buf.len() - mark - 1;
        if len < 0x80 {
            self.buf[mark] = len as u8;
            return;
        }
        let mut prefix = BytesMut::with_capacity(10);
        encode_varint(len as u64, &mut prefix);
        let extra = prefix.len() - 1;
        let end = self.buf.len();
        self.buf.resize(end + extra, 0);
        self.buf.copy_within(mark + 1..end, mark + 1 + extra);
        self.buf[mark..mark + prefix.len()].copy_from_slice(&prefix);
    }
}

/// The one error: this body is the general path's to read.
fn decline<E: de::Error>() -> E {
    E::custom("declined")
}

/// Reads a JSON object as the fields of `descriptor`.
struct Fields<'w, 'b> {
    writer: &'w mut Writer<'b>,
    descriptor: &'w MessageDescriptor,
    bound: &'w [u32],
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Fields<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, reader: D) -> Result<(), D::Error> {
        reader.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Fields<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if self.depth > self.writer.max_depth {
            return Err(decline());
        }
        let mut seen = Seen::default();
        // A key with escapes is not a borrowed `&str`: declined.
        while let Some(key) = map.next_key::<&str>()? {
            let field = (self.descriptor.get_field_by_json_name(key))
                .or_else(|| self.descriptor.get_field_by_name(key))
                .ok_or_else(decline)?;
            if field.is_map() || self.bound.contains(&field.number()) || !seen.first(&field) {
                return Err(decline());
            }
            let set = map.next_value_seed(FieldValue {
                writer: &mut *self.writer,
                field: &field,
                kind: &field.kind(),
                bound: &[],
                element: Element::Single,
                depth: self.depth,
            })?;
            if set && !seen.claim_oneof(&field) {
                return Err(decline());
            }
        }
        Ok(())
    }
}

/// Which keys one object has given, and which oneofs they set.
#[derive(Default)]
struct Seen {
    numbers: [u32; 32],
    count: usize,
    /// Oneofs set so far, each known by its first field's number.
    oneofs: [u32; 8],
    oneof_count: usize,
}

impl Seen {
    /// Records `field`; `false` if it was given before (or past 32 keys).
    fn first(&mut self, field: &FieldDescriptor) -> bool {
        let number = field.number();
        if self.numbers[..self.count].contains(&number) || self.count == self.numbers.len() {
            return false;
        }
        self.numbers[self.count] = number;
        self.count += 1;
        true
    }

    /// Records that `field` was set; `false` if another member of its
    /// oneof was (or past eight oneofs).
    fn claim_oneof(&mut self, field: &FieldDescriptor) -> bool {
        let Some(oneof) = field.containing_oneof() else {
            return true;
        };
        let id = oneof.fields().next().map_or(0, |f| f.number());
        if self.oneofs[..self.oneof_count].contains(&id) || self.oneof_count == self.oneofs.len() {
            return false;
        }
        self.oneofs[self.oneof_count] = id;
        self.oneof_count += 1;
        true
    }
}

/// Where a value sits, which decides how it is written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Element {
    /// The whole body of `body: "field"`.
    Root,
    /// A singular field, or a repeated field's array.
    Single,
    /// An element of a repeated field, with its own key.
    Listed,
    /// An element of a packed repeated field: value only.
    Packed,
}

/// Reads one JSON value of `field` and writes it.
struct FieldValue<'w, 'b> {
    writer: &'w mut Writer<'b>,
    field: &'w FieldDescriptor,
    kind: &'w Kind,
    /// Bound numbers for the object this value is, at the body's top.
    bound: &'w [u32],
    element: Element,
    depth: usize,
}

impl FieldValue<'_, '_> {
    /// Writes a scalar; returns whether the field counts as set.
    fn scalar<E: de::Error>(self, value: Option<Scalar<'_>>) -> Result<bool, E> {
        let value = value.ok_or_else(decline)?;
        let in_list = matches!(self.element, Element::Listed | Element::Packed);
        if self.field.is_list() && !in_list {
            return Err(decline());
        }
        let buf = &mut *self.writer.buf;
        match self.element {
            Element::Packed => scalar::write_value(self.kind, &value, buf),
            Element::Listed => scalar::write_field(self.field.number(), self.kind, &value, buf),
            Element::Root | Element::Single => {
                if self.field.supports_presence() || !value.is_default() {
                    scalar::write_field(self.field.number(), self.kind, &value, buf);
                }
            }
        }
        Ok(true)
    }
}

impl<'de> DeserializeSeed<'de> for FieldValue<'_, '_> {
    type Value = bool;

    fn deserialize<D: de::Deserializer<'de>>(self, reader: D) -> Result<bool, D::Error> {
        reader.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FieldValue<'_, '_> {
    /// Whether the field was set (`null` leaves it unset).
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a proto3 JSON value")
    }

    /// `null` leaves a field unset, except where it is a value of its own
    /// (`google.protobuf.Value`, `NullValue`): those are declined.
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        let own_null = match self.kind {
            Kind::Message(m) => m.full_name() == "google.protobuf.Value",
            Kind::Enum(e) => e.full_name() == "google.protobuf.NullValue",
            _ => false,
        };
        match self.element {
            Element::Single if !own_null => Ok(false),
            _ => Err(decline()),
        }
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        let value = scalar::from_bool(self.kind, v);
        self.scalar(value)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
        let value = scalar::from_u64(self.kind, v);
        self.scalar(value)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
        let value = scalar::from_i64(self.kind, v);
        self.scalar(value)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<bool, E> {
        let value = scalar::from_f64(self.kind, v);
        self.scalar(value)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        let value = scalar::from_str(self.kind, v);
        self.scalar(value)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let depth = self.depth + 1;
        let listable = matches!(self.element, Element::Root | Element::Single);
        if !self.field.is_list() || !listable || depth > self.writer.max_depth {
            return Err(decline());
        }
        let packed = self.field.is_packed();
        let start = self.writer.buf.len();
        let mark = packed.then(|| self.writer.open(self.field.number()));
        let element = if packed {
            Element::Packed
        } else {
            Element::Listed
        };
        let mut count = 0usize;
        while seq
            .next_element_seed(FieldValue {
                writer: &mut *self.writer,
                field: self.field,
                kind: self.kind,
                bound: &[],
                element,
                depth,
            })?
            .is_some()
        {
            count += 1;
        }
        match mark {
            // An empty list is not written, as an unset one.
            Some(_) if count == 0 => self.writer.buf.truncate(start),
            Some(mark) => self.writer.close(mark),
            None => {}
        }
        Ok(true)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<bool, A::Error> {
        let Kind::Message(descriptor) = self.kind else {
            return Err(decline());
        };
        let listable = self.element == Element::Listed || !self.field.is_list();
        if !listable || !writes_directly(descriptor) {
            return Err(decline());
        }
        let mark = self.writer.open(self.field.number());
        let fields = Fields {
            writer: &mut *self.writer,
            descriptor,
            bound: self.bound,
            depth: self.depth + 1,
        };
        fields.visit_map(map)?;
        self.writer.close(mark);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lengths_move_the_message_along() {
        let mut buf = BytesMut::new();
        let mut writer = Writer {
            buf: &mut buf,
            max_depth: 0,
        };
        let mark = writer.open(1);
        writer.buf.extend_from_slice(&[7; 300]);
        writer.close(mark);
        assert_eq!(&buf[..3], &[0x0a, 0xac, 0x02]);
        assert_eq!(buf.len(), 3 + 300);
        assert!(buf[3..].iter().all(|&b| b == 7));
    }
}
