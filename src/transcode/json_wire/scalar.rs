//! One JSON token read as a value of one field kind, exactly as
//! prost-reflect's proto3 JSON reader takes it, and written as protobuf
//! wire bytes. Whatever that reader would refuse, or read as "not set",
//! is `None` here: the caller then declines the whole body.

use std::str::FromStr;

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::{DecodeError, Engine as _, alphabet};
use bytes::{BufMut, BytesMut};
use prost::encoding::{WireType, encode_key, encode_varint};
use prost_reflect::{Kind, Value};

const TIMESTAMP: &str = "google.protobuf.Timestamp";
/// The range prost-reflect accepts: years 0001 to 9999.
const TIMESTAMP_SECONDS: std::ops::RangeInclusive<i64> = -62_135_596_800..=253_402_300_799;

/// Base64 as prost-reflect reads it: padding optional, trailing bits
/// allowed, the URL-safe alphabet when the standard one meets `-` or `_`.
const BASE64_CONFIG: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_allow_trailing_bits(true)
    .with_decode_padding_mode(DecodePaddingMode::Indifferent);
const BASE64_STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, BASE64_CONFIG);
const BASE64_URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, BASE64_CONFIG);

/// One decoded value, ready to be written.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Scalar<'a> {
    Bool(bool),
    I32(i32),
    I64(i64),
    U32(u32),
    U64(u64),
    F32(f32),
    F64(f64),
    Str(&'a str),
    Bytes(Vec<u8>),
    Timestamp { seconds: i64, nanos: i32 },
}

impl Scalar<'_> {
    /// Whether this is the kind's zero value, which a field without
    /// presence leaves off the wire (`==`, so -0.0 is one and NaN is not).
    pub(super) fn is_default(&self) -> bool {
        match self {
            Scalar::Bool(v) => !v,
            Scalar::I32(v) => *v == 0,
            Scalar::I64(v) => *v == 0,
            Scalar::U32(v) => *v == 0,
            Scalar::U64(v) => *v == 0,
            Scalar::F32(v) => *v == 0.0,
            Scalar::F64(v) => *v == 0.0,
            Scalar::Str(v) => v.is_empty(),
            Scalar::Bytes(v) => v.is_empty(),
            Scalar::Timestamp { .. } => false,
        }
    }

    /// A path variable's parsed value (see `transcode::text`).
    pub(super) fn from_value(value: &Value) -> Option<Scalar<'_>> {
        Some(match value {
            Value::Bool(v) => Scalar::Bool(*v),
            Value::I32(v) | Value::EnumNumber(v) => Scalar::I32(*v),
            Value::I64(v) => Scalar::I64(*v),
            Value::U32(v) => Scalar::U32(*v),
            Value::U64(v) => Scalar::U64(*v),
            Value::F32(v) => Scalar::F32(*v),
            Value::F64(v) => Scalar::F64(*v),
            Value::String(v) => Scalar::Str(v),
            Value::Bytes(v) => Scalar::Bytes(v.to_vec()),
            Value::Message(_) | Value::List(_) | Value::Map(_) => return None,
        })
    }
}

// === reading: one JSON token per kind ===

pub(super) fn from_bool(kind: &Kind, v: bool) -> Option<Scalar<'static>> {
    matches!(kind, Kind::Bool).then_some(Scalar::Bool(v))
}

pub(super) fn from_u64(kind: &Kind, v: u64) -> Option<Scalar<'static>> {
    Some(match kind {
        Kind::Double => Scalar::F64(v as f64),
        Kind::Float => Scalar::F32(v as f32),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Scalar::I32(v.try_into().ok()?),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Scalar::I64(v.try_into().ok()?),
        Kind::Uint32 | Kind::Fixed32 => Scalar::U32(v.try_into().ok()?),
        Kind::Uint64 | Kind::Fixed64 => Scalar::U64(v),
        Kind::Enum(e) if !is_null_value(e) => Scalar::I32(v.try_into().ok()?),
        _ => return None,
    })
}

pub(super) fn from_i64(kind: &Kind, v: i64) -> Option<Scalar<'static>> {
    Some(match kind {
        Kind::Double => Scalar::F64(v as f64),
        Kind::Float => Scalar::F32(v as f32),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Scalar::I32(v.try_into().ok()?),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Scalar::I64(v),
        Kind::Uint32 | Kind::Fixed32 => Scalar::U32(v.try_into().ok()?),
        Kind::Uint64 | Kind::Fixed64 => Scalar::U64(v.try_into().ok()?),
        Kind::Enum(e) if !is_null_value(e) => Scalar::I32(v.try_into().ok()?),
        _ => return None,
    })
}

/// A JSON number with a fraction or exponent. Integer kinds take it only
/// when it is whole and within range, with the reader's own bounds and
/// casts (`i64::MAX as f64` is 2^63, which then saturates).
pub(super) fn from_f64(kind: &Kind, v: f64) -> Option<Scalar<'static>> {
    let whole = v.fract() == 0.0;
    Some(match kind {
        Kind::Double => Scalar::F64(v),
        Kind::Float if v < f64::from(f32::MIN) || v > f64::from(f32::MAX) => return None,
        Kind::Float => Scalar::F32(v as f32),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32
            if whole && v >= f64::from(i32::MIN) && v <= f64::from(i32::MAX) =>
        {
            Scalar::I32(v as i32)
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64
            if whole && v >= i64::MIN as f64 && v <= i64::MAX as f64 =>
        {
            Scalar::I64(v as i64)
        }
        Kind::Uint32 | Kind::Fixed32 if whole && v >= 0.0 && v <= f64::from(u32::MAX) => {
            Scalar::U32(v as u32)
        }
        Kind::Uint64 | Kind::Fixed64 if whole && v >= 0.0 && v <= u64::MAX as f64 => {
            Scalar::U64(v as u64)
        }
        _ => return None,
    })
}

pub(super) fn from_str<'a>(kind: &Kind, v: &'a str) -> Option<Scalar<'a>> {
    Some(match kind {
        Kind::String => Scalar::Str(v),
        Kind::Bytes => Scalar::Bytes(base64(v)?),
        Kind::Double => Scalar::F64(float(v)?),
        Kind::Float => Scalar::F32(float(v)?),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Scalar::I32(v.parse().ok()?),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Scalar::I64(v.parse().ok()?),
        Kind::Uint32 | Kind::Fixed32 => Scalar::U32(v.parse().ok()?),
        Kind::Uint64 | Kind::Fixed64 => Scalar::U64(v.parse().ok()?),
        // An unknown name is an error or "not set", by option: declined.
        Kind::Enum(e) if !is_null_value(e) => Scalar::I32(e.get_value_by_name(v)?.number()),
        Kind::Message(m) if m.full_name() == TIMESTAMP => timestamp(v)?,
        _ => return None,
    })
}

/// `f64::from_str` (which also takes `inf` and `nan` in any case) and the
/// proto3 JSON spellings.
fn float<T: FromStr + From<f32>>(v: &str) -> Option<T> {
    match v.parse::<T>() {
        Ok(value) => Some(value),
        Err(_) if v == "Infinity" => Some(T::from(f32::INFINITY)),
        Err(_) if v == "-Infinity" => Some(T::from(f32::NEG_INFINITY)),
        Err(_) if v == "NaN" => Some(T::from(f32::NAN)),
        Err(_) => None,
    }
}

fn base64(v: &str) -> Option<Vec<u8>> {
    match BASE64_STANDARD.decode(v) {
        Ok(bytes) => Some(bytes),
        Err(DecodeError::InvalidByte(_, b'-' | b'_')) => BASE64_URL_SAFE.decode(v).ok(),
        Err(_) => None,
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z` only: a subset of what the reader's
/// strict RFC 3339 check passes, parsed by the same `prost_types` parser
/// and held to the same range. Offsets and longer fractions are declined.
fn timestamp(v: &str) -> Option<Scalar<'static>> {
    const SHAPE: &[u8] = b"dddd-dd-ddTdd:dd:dd";
    let (head, rest) = v.as_bytes().split_at_checked(SHAPE.len())?;
    let head_ok = SHAPE.iter().zip(head).all(|(&s, &b)| match s {
        b'd' => b.is_ascii_digit(),
        _ => b == s,
    });
    let fraction_ok = match rest.strip_suffix(b"Z") {
        Some([]) => true,
        Some([b'.', digits @ ..]) => {
            (1..=9).contains(&digits.len()) && digits.iter().all(u8::is_ascii_digit)
        }
        _ => false,
    };
    if !head_ok || !fraction_ok {
        return None;
    }
    let parsed = prost_types::Timestamp::from_str(v).ok()?;
    TIMESTAMP_SECONDS
        .contains(&parsed.seconds)
        .then_some(Scalar::Timestamp {
            seconds: parsed.seconds,
            nanos: parsed.nanos,
        })
}

/// google.protobuf.NullValue reads `null` as its value: left to the
/// general path.
fn is_null_value(e: &prost_reflect::EnumDescriptor) -> bool {
    e.full_name() == "google.protobuf.NullValue"
}

// === writing ===

/// The wire type a value of `kind` is written with (unpacked).
pub(super) fn wire_type(kind: &Kind) -> WireType {
    match kind {
        Kind::Fixed32 | Kind::Sfixed32 | Kind::Float => WireType::ThirtyTwoBit,
        Kind::Fixed64 | Kind::Sfixed64 | Kind::Double => WireType::SixtyFourBit,
        Kind::String | Kind::Bytes | Kind::Message(_) => WireType::LengthDelimited,
        _ => WireType::Varint,
    }
}

/// Writes `value` as field `number` of `kind`.
pub(super) fn write_field(number: u32, kind: &Kind, value: &Scalar<'_>, buf: &mut BytesMut) {
    encode_key(number, wire_type(kind), buf);
    write_value(kind, value, buf);
}

/// Writes `value` without its key (a packed element, or after the key).
pub(super) fn write_value(kind: &Kind, value: &Scalar<'_>, buf: &mut BytesMut) {
    match (kind, value) {
        (Kind::Sint32, Scalar::I32(v)) => encode_varint(u64::from(zigzag32(*v)), buf),
        (Kind::Sint64, Scalar::I64(v)) => encode_varint(zigzag64(*v), buf),
        (Kind::Sfixed32, Scalar::I32(v)) => buf.put_i32_le(*v),
        (Kind::Sfixed64, Scalar::I64(v)) => buf.put_i64_le(*v),
        (Kind::Fixed32, Scalar::U32(v)) => buf.put_u32_le(*v),
        (Kind::Fixed64, Scalar::U64(v)) => buf.put_u64_le(*v),
        // int32 and enums: negative values sign-extend to ten bytes.
        (_, Scalar::I32(v)) => encode_varint(i64::from(*v) as u64, buf),
        (_, Scalar::I64(v)) => encode_varint(*v as u64, buf),
        (_, Scalar::U32(v)) => encode_varint(u64::from(*v), buf),
        (_, Scalar::U64(v)) => encode_varint(*v, buf),
        (_, Scalar::Bool(v)) => encode_varint(u64::from(*v), buf),
        (_, Scalar::F32(v)) => buf.put_f32_le(*v),
        (_, Scalar::F64(v)) => buf.put_f64_le(*v),
        (_, Scalar::Str(v)) => length_delimited(v.as_bytes(), buf),
        (_, Scalar::Bytes(v)) => length_delimited(v, buf),
        (_, Scalar::Timestamp { seconds, nanos }) => {
            let mut inner = BytesMut::with_capacity(16);
            if *seconds != 0 {
                encode_key(1, WireType::Varint, &mut inner);
                encode_varint(*seconds as u64, &mut inner);
            }
            if *nanos != 0 {
                encode_key(2, WireType::Varint, &mut inner);
                encode_varint(i64::from(*nanos) as u64, &mut inner);
            }
            length_delimited(&inner, buf);
        }
    }
}

fn length_delimited(bytes: &[u8], buf: &mut BytesMut) {
    encode_varint(bytes.len() as u64, buf);
    buf.put_slice(bytes);
}

fn zigzag32(v: i32) -> u32 {
    ((v << 1) ^ (v >> 31)) as u32
}

fn zigzag64(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_outside_the_plain_utc_shape_are_declined() {
        let kind = Kind::Bool;
        assert_eq!(from_str(&kind, "true"), None);
        for good in [
            "2024-03-01T12:00:00Z",
            "2024-03-01T12:00:00.5Z",
            "0001-01-01T00:00:00Z",
        ] {
            assert!(timestamp(good).is_some(), "{good}");
        }
        for bad in [
            "2024-03-01T12:00:00+01:00",
            "2024-03-01t12:00:00Z",
            "2024-03-01T12:00:00.Z",
            "2024-03-01T12:00:00.1234567890Z",
            "2024-13-01T12:00:00Z",
            "2024-03-01T12:00:00",
            "Z",
            "",
        ] {
            assert!(timestamp(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn zigzag_matches_the_wire_format() {
        assert_eq!(zigzag32(0), 0);
        assert_eq!(zigzag32(-1), 1);
        assert_eq!(zigzag32(1), 2);
        assert_eq!(zigzag32(i32::MIN), u32::MAX);
        assert_eq!(zigzag64(-2), 3);
        assert_eq!(zigzag64(i64::MAX), u64::MAX - 1);
    }
}
