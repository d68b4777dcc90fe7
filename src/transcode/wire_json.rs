//! Proto3 JSON written straight from the protobuf wire bytes, guided by the
//! descriptors: no `DynamicMessage` (a map and an allocation per field) in
//! between. It covers what answers are mostly made of (proto3 messages of
//! scalars, strings, bytes, enums, repeated fields, nested messages and
//! `Timestamp`) and declines the rest: [`render`] returns `None` and the
//! caller takes the general path ([`super::stable_json`]), which then
//! renders, or refuses, exactly as before.
//!
//! The output is byte for byte what the general path writes for the same
//! bytes and options (tests/wire_json.rs checks it over random messages):
//! fields in number order, the same presence rules, numbers and strings
//! through the same `serde_json` serializer. Whatever would make the two
//! readings of the bytes differ is declined rather than imitated: a field
//! out of number order, a singular field or oneof given twice (last one
//! wins, messages merge), a map, an extension, a group, proto2 syntax,
//! invalid UTF-8, a malformed record, nesting deeper than prost's limit.

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use prost::Message as _;
use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor, Syntax};
use serde::Serializer as _;

use super::stable_json::has_own_json_form;

/// The proto3 JSON options of a binding, as [`prost_reflect::SerializeOptions`]
/// has them (which does not let them be read back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Field names as in the .proto, not lowerCamelCase.
    pub proto_names: bool,
    /// Leave out fields that hold their default value.
    pub skip_defaults: bool,
    /// Enums as numbers, not names.
    pub enum_numbers: bool,
    /// 64-bit integers as JSON strings.
    pub stringify_64: bool,
}

impl Default for Options {
    /// Canonical proto3 JSON, as `SerializeOptions::new()`.
    fn default() -> Options {
        Options {
            proto_names: false,
            skip_defaults: true,
            enum_numbers: false,
            stringify_64: true,
        }
    }
}

impl Options {
    /// The same options for the general path.
    pub fn serialize_options(&self) -> prost_reflect::SerializeOptions {
        prost_reflect::SerializeOptions::new()
            .use_proto_field_name(self.proto_names)
            .skip_default_fields(self.skip_defaults)
            .use_enum_numbers(self.enum_numbers)
            .stringify_64_bit_integers(self.stringify_64)
    }
}

/// Deeper messages take the general path (prost stops at 100 levels).
const MAX_DEPTH: u32 = 32;

const TIMESTAMP: &str = "google.protobuf.Timestamp";
const NULL_VALUE: &str = "google.protobuf.NullValue";
/// The range prost-reflect accepts: years 0001 to 9999.
const TIMESTAMP_SECONDS: std::ops::RangeInclusive<i64> = -62_135_596_800..=253_402_300_799;

/// Renders the `descriptor` message encoded in `wire` as proto3 JSON, or
/// `None` when the general path must do it.
pub fn render(descriptor: &MessageDescriptor, wire: &[u8], options: &Options) -> Option<Vec<u8>> {
    let mut writer = Writer {
        out: Vec::with_capacity(wire.len() * 2 + 64),
        options,
    };
    writer.message(descriptor, wire, 0)?;
    Some(writer.out)
}

/// One wire record's value.
#[derive(Clone, Copy)]
enum Record<'a> {
    Varint(u64),
    Fixed64([u8; 8]),
    Fixed32([u8; 4]),
    Bytes(&'a [u8]),
}

/// One scalar, decoded, before it is written.
#[derive(Clone, Copy)]
enum Scalar<'a> {
    Bool(bool),
    I32(i32),
    I64(i64),
    U32(u32),
    U64(u64),
    F32(f32),
    F64(f64),
    Str(&'a str),
    Bytes(&'a [u8]),
    Enum(i32),
}

impl Scalar<'_> {
    /// Whether this is the kind's zero value, as prost-reflect compares it
    /// (`==`, so -0.0 is a default and NaN is not).
    fn is_default(&self) -> bool {
        match *self {
            Scalar::Bool(v) => !v,
            Scalar::I32(v) | Scalar::Enum(v) => v == 0,
            Scalar::I64(v) => v == 0,
            Scalar::U32(v) => v == 0,
            Scalar::U64(v) => v == 0,
            Scalar::F32(v) => v == 0.0,
            Scalar::F64(v) => v == 0.0,
            Scalar::Str(v) => v.is_empty(),
            Scalar::Bytes(v) => v.is_empty(),
        }
    }
}

/// The oneofs of one message that have a member set so far.
type OneofsSeen = ([u32; 8], usize);

struct Writer<'o> {
    out: Vec<u8>,
    options: &'o Options,
}

impl Writer<'_> {
    fn message(
        &mut self,
        descriptor: &MessageDescriptor,
        mut wire: &[u8],
        depth: u32,
    ) -> Option<()> {
        let name = descriptor.full_name();
        if name == TIMESTAMP {
            return self.timestamp(wire);
        }
        if depth >= MAX_DEPTH
            || has_own_json_form(name)
            || descriptor.parent_file().syntax() != Syntax::Proto3
        {
            return None;
        }
        self.out.push(b'{');
        let mut first = true;
        let mut pending = next_record(&mut wire)?;
        let mut previous_number = 0;
        let mut oneofs_seen: OneofsSeen = ([0; 8], 0);
        for field in descriptor.fields() {
            let number = field.number();
            // Records below this field's number belong to no field: unknown
            // (skipped, as the general path does) unless an extension.
            while let Some((n, _)) = pending.filter(|(n, _)| *n < number) {
                if n < previous_number || descriptor.get_extension(n).is_some() {
                    return None;
                }
                previous_number = n;
                pending = next_record(&mut wire)?;
            }
            let present = pending.is_some_and(|(n, _)| n == number);
            if present && !self.claim_oneof(&field, &mut oneofs_seen)? {
                return None;
            }
            if field.is_map() {
                if present {
                    return None;
                }
                if !self.options.skip_defaults {
                    self.key(&field, &mut first);
                    self.out.extend_from_slice(b"{}");
                }
            } else if field.is_list() {
                let mut written = 0usize;
                while let Some((_, record)) = pending.filter(|(n, _)| *n == number) {
                    written += self.list_records(&field, record, &mut first, written, depth)?;
                    pending = next_record(&mut wire)?;
                }
                previous_number = previous_number.max(number);
                if written > 0 {
                    self.out.push(b']');
                } else if !self.options.skip_defaults {
                    self.key(&field, &mut first);
                    self.out.extend_from_slice(b"[]");
                }
            } else if let Some((_, record)) = pending.filter(|_| present) {
                pending = next_record(&mut wire)?;
                if pending.is_some_and(|(n, _)| n == number) {
                    // Given twice: the last one wins, or messages merge.
                    return None;
                }
                previous_number = number;
                self.singular(&field, record, &mut first, depth)?;
            } else if !self.options.skip_defaults && !field.supports_presence() {
                self.key(&field, &mut first);
                self.default_value(&field.kind());
            }
        }
        while let Some((n, _)) = pending {
            if n < previous_number || descriptor.get_extension(n).is_some() {
                return None;
            }
            previous_number = n;
            pending = next_record(&mut wire)?;
        }
        self.out.push(b'}');
        Some(())
    }

    /// Marks `field`'s oneof as set; `false` if another member already was.
    /// A oneof is known by its first field's number; `None` past eight.
    fn claim_oneof(&self, field: &FieldDescriptor, seen: &mut OneofsSeen) -> Option<bool> {
        let Some(oneof) = field.containing_oneof() else {
            return Some(true);
        };
        let id = oneof.fields().next().map_or(0, |f| f.number());
        let (ids, count) = seen;
        if ids[..*count].contains(&id) {
            return Some(false);
        }
        *ids.get_mut(*count)? = id;
        *count += 1;
        Some(true)
    }

    /// Writes the elements in one record of a repeated field (several when
    /// packed), opening the array before the first; returns how many.
    fn list_records(
        &mut self,
        field: &FieldDescriptor,
        record: Record<'_>,
        first: &mut bool,
        written: usize,
        depth: u32,
    ) -> Option<usize> {
        let kind = field.kind();
        let mut count = 0;
        let mut element = |writer: &mut Self| {
            if written + count == 0 {
                writer.key(field, first);
                writer.out.push(b'[');
            } else {
                writer.out.push(b',');
            }
            count += 1;
        };
        match (&kind, record) {
            (Kind::Message(inner), Record::Bytes(bytes)) => {
                element(self);
                self.message(inner, bytes, depth + 1)?;
            }
            (Kind::String | Kind::Bytes, record) => {
                let value = scalar(&kind, record)?;
                element(self);
                self.scalar(&kind, value);
            }
            (_, Record::Bytes(mut packed)) => {
                while !packed.is_empty() {
                    let value = scalar(&kind, packed_element(&kind, &mut packed)?)?;
                    element(self);
                    self.scalar(&kind, value);
                }
            }
            (_, record) => {
                let value = scalar(&kind, record)?;
                element(self);
                self.scalar(&kind, value);
            }
        }
        Some(count)
    }

    fn singular(
        &mut self,
        field: &FieldDescriptor,
        record: Record<'_>,
        first: &mut bool,
        depth: u32,
    ) -> Option<()> {
        let kind = field.kind();
        if let Kind::Message(inner) = &kind {
            let Record::Bytes(bytes) = record else {
                return None;
            };
            self.key(field, first);
            return self.message(inner, bytes, depth + 1);
        }
        let value = scalar(&kind, record)?;
        if field.supports_presence() || !self.options.skip_defaults || !value.is_default() {
            self.key(field, first);
            self.scalar(&kind, value);
        }
        Some(())
    }

    fn key(&mut self, field: &FieldDescriptor, first: &mut bool) {
        if !std::mem::take(first) {
            self.out.push(b',');
        }
        let name = match self.options.proto_names {
            true => field.name(),
            false => field.json_name(),
        };
        let _ = self.json().serialize_str(name);
        self.out.push(b':');
    }

    fn default_value(&mut self, kind: &Kind) {
        let zero = match kind {
            Kind::Double => Scalar::F64(0.0),
            Kind::Float => Scalar::F32(0.0),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Scalar::I32(0),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Scalar::I64(0),
            Kind::Uint32 | Kind::Fixed32 => Scalar::U32(0),
            Kind::Uint64 | Kind::Fixed64 => Scalar::U64(0),
            Kind::Bool => Scalar::Bool(false),
            Kind::String => Scalar::Str(""),
            Kind::Bytes => Scalar::Bytes(&[]),
            Kind::Enum(e) => Scalar::Enum(e.default_value().number()),
            // Message fields have presence: never written as a default.
            Kind::Message(_) => return,
        };
        self.scalar(kind, zero);
    }

    fn scalar(&mut self, kind: &Kind, value: Scalar<'_>) {
        let Options {
            stringify_64: stringify,
            enum_numbers,
            ..
        } = *self.options;
        let mut json = self.json();
        let _ = match value {
            Scalar::Bool(v) => json.serialize_bool(v),
            Scalar::I32(v) => json.serialize_i32(v),
            Scalar::U32(v) => json.serialize_u32(v),
            Scalar::I64(v) if stringify => json.collect_str(&v),
            Scalar::I64(v) => json.serialize_i64(v),
            Scalar::U64(v) if stringify => json.collect_str(&v),
            Scalar::U64(v) => json.serialize_u64(v),
            Scalar::F32(v) if v.is_finite() => json.serialize_f32(v),
            Scalar::F64(v) if v.is_finite() => json.serialize_f64(v),
            Scalar::F32(v) => json.serialize_str(non_finite(f64::from(v))),
            Scalar::F64(v) => json.serialize_str(non_finite(v)),
            Scalar::Str(v) => json.serialize_str(v),
            Scalar::Bytes(v) => {
                self.out.push(b'"');
                let start = self.out.len();
                let encoded = base64::encoded_len(v.len(), true).unwrap_or(0);
                self.out.resize(start + encoded, 0);
                let _ = BASE64_STANDARD.encode_slice(v, &mut self.out[start..]);
                self.out.push(b'"');
                Ok(())
            }
            Scalar::Enum(number) => {
                let Kind::Enum(descriptor) = kind else {
                    return;
                };
                if descriptor.full_name() == NULL_VALUE {
                    json.serialize_unit()
                } else if enum_numbers {
                    json.serialize_i32(number)
                } else {
                    match descriptor.get_value(number) {
                        Some(value) => json.serialize_str(value.name()),
                        None => json.serialize_i32(number),
                    }
                }
            }
        };
    }

    /// A Timestamp as RFC 3339, the way prost-reflect writes it (prost-types'
    /// `Display`), within the same range.
    fn timestamp(&mut self, wire: &[u8]) -> Option<()> {
        let timestamp = prost_types::Timestamp::decode(wire).ok()?;
        if !TIMESTAMP_SECONDS.contains(&timestamp.seconds) {
            return None;
        }
        let _ = self.json().collect_str(&timestamp);
        Some(())
    }

    fn json(&mut self) -> serde_json::Serializer<&mut Vec<u8>> {
        serde_json::Serializer::new(&mut self.out)
    }
}

fn non_finite(v: f64) -> &'static str {
    if v.is_nan() {
        "NaN"
    } else if v > 0.0 {
        "Infinity"
    } else {
        "-Infinity"
    }
}

/// Decodes one record's value as `kind`; `None` if the wire type does not
/// fit the kind or a string is not UTF-8.
fn scalar<'a>(kind: &Kind, record: Record<'a>) -> Option<Scalar<'a>> {
    Some(match (kind, record) {
        (Kind::Double, Record::Fixed64(b)) => Scalar::F64(f64::from_le_bytes(b)),
        (Kind::Float, Record::Fixed32(b)) => Scalar::F32(f32::from_le_bytes(b)),
        // Truncation is the protobuf rule for these varints.
        (Kind::Int32, Record::Varint(v)) => Scalar::I32(v as i32),
        (Kind::Int64, Record::Varint(v)) => Scalar::I64(v as i64),
        (Kind::Uint32, Record::Varint(v)) => Scalar::U32(v as u32),
        (Kind::Uint64, Record::Varint(v)) => Scalar::U64(v),
        (Kind::Sint32, Record::Varint(v)) => {
            let v = v as u32;
            Scalar::I32(((v >> 1) as i32) ^ -((v & 1) as i32))
        }
        (Kind::Sint64, Record::Varint(v)) => Scalar::I64(((v >> 1) as i64) ^ -((v & 1) as i64)),
        (Kind::Fixed32, Record::Fixed32(b)) => Scalar::U32(u32::from_le_bytes(b)),
        (Kind::Fixed64, Record::Fixed64(b)) => Scalar::U64(u64::from_le_bytes(b)),
        (Kind::Sfixed32, Record::Fixed32(b)) => Scalar::I32(i32::from_le_bytes(b)),
        (Kind::Sfixed64, Record::Fixed64(b)) => Scalar::I64(i64::from_le_bytes(b)),
        (Kind::Bool, Record::Varint(v)) => Scalar::Bool(v != 0),
        (Kind::Enum(_), Record::Varint(v)) => Scalar::Enum(v as i32),
        (Kind::String, Record::Bytes(b)) => Scalar::Str(std::str::from_utf8(b).ok()?),
        (Kind::Bytes, Record::Bytes(b)) => Scalar::Bytes(b),
        _ => return None,
    })
}

/// The next element of a packed repeated field of `kind`.
fn packed_element<'a>(kind: &Kind, packed: &mut &'a [u8]) -> Option<Record<'a>> {
    match kind {
        Kind::Double | Kind::Fixed64 | Kind::Sfixed64 => Some(Record::Fixed64(take(packed)?)),
        Kind::Float | Kind::Fixed32 | Kind::Sfixed32 => Some(Record::Fixed32(take(packed)?)),
        Kind::String | Kind::Bytes | Kind::Message(_) => None,
        _ => Some(Record::Varint(varint(packed)?)),
    }
}

/// The next record: `Some(None)` at the end, `None` if malformed or a group.
#[allow(clippy::option_option)]
fn next_record<'a>(wire: &mut &'a [u8]) -> Option<Option<(u32, Record<'a>)>> {
    if wire.is_empty() {
        return Some(None);
    }
    let key = varint(wire)?;
    let number = u32::try_from(key >> 3)
        .ok()
        .filter(|n| (1..=536_870_911).contains(n))?;
    let record = match key & 7 {
        0 => Record::Varint(varint(wire)?),
        1 => Record::Fixed64(take(wire)?),
        2 => {
            let len = usize::try_from(varint(wire)?).ok()?;
            let (bytes, rest) = wire.split_at_checked(len)?;
            *wire = rest;
            Record::Bytes(bytes)
        }
        5 => Record::Fixed32(take(wire)?),
        _ => return None,
    };
    Some(Some((number, record)))
}

fn take<const N: usize>(wire: &mut &[u8]) -> Option<[u8; N]> {
    let (bytes, rest) = wire.split_first_chunk::<N>()?;
    *wire = rest;
    Some(*bytes)
}

/// A base-128 varint of at most ten bytes, as prost reads them.
fn varint(wire: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, &byte) in wire.iter().enumerate().take(10) {
        if i == 9 && byte > 1 {
            return None;
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            *wire = &wire[i + 1..];
            return Some(value);
        }
    }
    None
}
