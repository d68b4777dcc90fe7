//! Parses one text value (a path variable or a query parameter) into a field
//! value, the way proto3 JSON would read the same value as a string: 64-bit
//! integers, enums by name or number, bools, base64 or base64url bytes,
//! floats including `NaN` and `Infinity`, and the well-known types in their
//! JSON string forms (Timestamp, Duration, FieldMask, wrappers).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use prost_reflect::{DynamicMessage, Kind, MessageDescriptor, Value};
use serde::de::IntoDeserializer;

/// Parses `text` as a value of `kind` (the element kind for repeated fields).
pub fn parse(kind: &Kind, text: &str) -> Result<Value, String> {
    Ok(match kind {
        Kind::String => Value::String(text.to_string()),
        Kind::Bool => Value::Bool(match text {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => return Err(format!("{text:?} is not a bool (use true or false)")),
        }),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(integer(text)?),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(integer(text)?),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(integer(text)?),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(integer(text)?),
        Kind::Float => {
            let value = float(text)?;
            if value.is_finite() && value.abs() > f64::from(f32::MAX) {
                return Err(format!("{text:?} is out of range for a float"));
            }
            Value::F32(value as f32)
        }
        Kind::Double => Value::F64(float(text)?),
        Kind::Bytes => Value::Bytes(bytes(text)?.into()),
        Kind::Enum(descriptor) => {
            if let Some(value) = descriptor.get_value_by_name(text) {
                Value::EnumNumber(value.number())
            } else if let Ok(number) = text.parse::<i32>() {
                Value::EnumNumber(number)
            } else {
                return Err(format!(
                    "{text:?} is not a value of enum {}",
                    descriptor.full_name()
                ));
            }
        }
        Kind::Message(descriptor) => Value::Message(well_known(descriptor, text)?),
    })
}

fn integer<T: std::str::FromStr>(text: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    text.parse::<T>()
        .map_err(|e| format!("{text:?} is not a valid integer of this type: {e}"))
}

fn float(text: &str) -> Result<f64, String> {
    match text {
        "NaN" => Ok(f64::NAN),
        "Infinity" => Ok(f64::INFINITY),
        "-Infinity" => Ok(f64::NEG_INFINITY),
        // Rust also accepts "inf" and "nan"; proto3 JSON does not.
        _ if text
            .chars()
            .any(|c| c.is_ascii_alphabetic() && c != 'e' && c != 'E') =>
        {
            Err(format!("{text:?} is not a number"))
        }
        // proto3 JSON spells infinity out; a literal too large for a double
        // is out of range, as it is in a JSON body.
        _ => match text.parse::<f64>() {
            Ok(value) if value.is_infinite() => Err(format!(
                "{text:?} is out of range for a double (write Infinity or -Infinity)"
            )),
            Ok(value) => Ok(value),
            Err(_) => Err(format!("{text:?} is not a number")),
        },
    }
}

/// Standard or URL-safe base64, padded or not (proto3 JSON accepts both).
pub fn bytes(text: &str) -> Result<Vec<u8>, String> {
    let engines = [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD];
    engines
        .iter()
        .find_map(|engine| engine.decode(text).ok())
        .ok_or_else(|| format!("{text:?} is not valid base64"))
}

/// A well-known type written as a string: its JSON form, parsed by prost-reflect.
fn well_known(descriptor: &MessageDescriptor, text: &str) -> Result<DynamicMessage, String> {
    let name = descriptor.full_name();
    if let Some(scalar) = wrapper_kind(name) {
        let inner = parse(&scalar, text)?;
        let field = descriptor
            .get_field_by_name("value")
            .ok_or_else(|| format!("{name} has no value field"))?;
        let mut message = DynamicMessage::new(descriptor.clone());
        message.set_field(&field, inner);
        return Ok(message);
    }
    if name == super::field_mask::FIELD_MASK {
        // prost-reflect skips empty paths ("a,,b"); a malformed mask is refused.
        super::field_mask::check_syntax(text)?;
    }
    match name {
        "google.protobuf.Timestamp" | "google.protobuf.Duration" | "google.protobuf.FieldMask" => {
            let deserializer: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
                text.into_deserializer();
            DynamicMessage::deserialize(descriptor.clone(), deserializer)
                .map_err(|e| format!("{text:?} is not a valid {name}: {e}"))
        }
        _ => Err(format!("a {name} cannot be given as text")),
    }
}

/// The wrapped scalar kind of a `google.protobuf.*Value` wrapper.
fn wrapper_kind(name: &str) -> Option<Kind> {
    Some(match name {
        "google.protobuf.DoubleValue" => Kind::Double,
        "google.protobuf.FloatValue" => Kind::Float,
        "google.protobuf.Int64Value" => Kind::Int64,
        "google.protobuf.UInt64Value" => Kind::Uint64,
        "google.protobuf.Int32Value" => Kind::Int32,
        "google.protobuf.UInt32Value" => Kind::Uint32,
        "google.protobuf.BoolValue" => Kind::Bool,
        "google.protobuf.StringValue" => Kind::String,
        "google.protobuf.BytesValue" => Kind::Bytes,
        _ => return None,
    })
}

/// Whether a message type can be written as one text value.
pub fn is_text_message(descriptor: &MessageDescriptor) -> bool {
    let name = descriptor.full_name();
    wrapper_kind(name).is_some()
        || matches!(
            name,
            "google.protobuf.Timestamp" | "google.protobuf.Duration" | "google.protobuf.FieldMask"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_special_floats() {
        assert!(matches!(parse(&Kind::Double, "NaN"), Ok(Value::F64(v)) if v.is_nan()));
        assert_eq!(
            parse(&Kind::Double, "-Infinity"),
            Ok(Value::F64(f64::NEG_INFINITY))
        );
        assert!(parse(&Kind::Double, "inf").is_err());
        assert!(parse(&Kind::Float, "1e39").is_err());
        assert!(parse(&Kind::Double, "1e400").is_err());
        assert!(parse(&Kind::Float, "-1e999").is_err());
    }

    #[test]
    fn parses_64_bit_integers_exactly() {
        assert_eq!(
            parse(&Kind::Int64, "-9223372036854775808"),
            Ok(Value::I64(i64::MIN))
        );
        assert_eq!(
            parse(&Kind::Uint64, "18446744073709551615"),
            Ok(Value::U64(u64::MAX))
        );
        assert!(parse(&Kind::Int32, "2147483648").is_err());
        assert!(parse(&Kind::Uint32, "-1").is_err());
    }

    #[test]
    fn accepts_both_base64_alphabets() {
        assert_eq!(bytes("-_8"), Ok(vec![0xfb, 0xff]));
        assert_eq!(bytes("+/8="), Ok(vec![0xfb, 0xff]));
        assert!(bytes("not base64!").is_err());
    }
}
