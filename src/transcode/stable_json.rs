//! Proto3 JSON with exactly one rendering per message, so the same answer
//! always has the same bytes (and so the same strong ETag).
//!
//! prost-reflect writes a map field in the order of its `HashMap`, which is
//! seeded per map: one message came out differently on every call. The
//! reference printers write map entries sorted by key (integers in numeric
//! order, `false` before `true`, strings bytewise), and so does this module.
//!
//! A message without a map of two or more entries (the common case) is
//! written in one pass straight to bytes. Only one with such a map (or an
//! `Any`, whose payload cannot be seen without decoding it) goes through a
//! `serde_json::Value` tree that is then reordered, guided by the
//! descriptors. The same walk writes non-finite float wrappers as strings.

use prost_reflect::{DynamicMessage, Kind, MapKey, ReflectMessage, SerializeOptions, Value};

/// Renders `message` as proto3 JSON bytes, map entries in key order.
pub fn to_vec(
    message: &DynamicMessage,
    options: &SerializeOptions,
) -> Result<Vec<u8>, serde_json::Error> {
    if !needs_tree(message) {
        let mut body = Vec::with_capacity(256);
        message.serialize_with_options(&mut serde_json::Serializer::new(&mut body), options)?;
        // prost-reflect writes a NaN or infinite DoubleValue/FloatValue as
        // `null`; only then is the patched rendering needed.
        if !body.windows(4).any(|w| w == b"null") {
            return Ok(body);
        }
    }
    serde_json::to_vec(&to_value(message, options)?)
}

/// Renders `message` as a proto3 JSON tree, map entries in key order.
pub fn to_value(
    message: &DynamicMessage,
    options: &SerializeOptions,
) -> Result<serde_json::Value, serde_json::Error> {
    let mut json = message.serialize_with_options(serde_json::value::Serializer, options)?;
    normalise_message(message, &mut json);
    Ok(json)
}

/// Whether the one-pass rendering could differ from the canonical one.
fn needs_tree(message: &DynamicMessage) -> bool {
    let descriptor = message.descriptor();
    let name = descriptor.full_name();
    if name == ANY {
        return true;
    }
    if has_own_json_form(name) {
        // Struct's map is rendered from a BTreeMap, already in key order.
        return false;
    }
    message.fields().any(|(_, value)| value_needs_tree(value))
}

fn value_needs_tree(value: &Value) -> bool {
    match value {
        Value::Map(entries) => entries.len() > 1 || entries.values().any(value_needs_tree),
        Value::Message(inner) => needs_tree(inner),
        // Only lists of messages can hold maps; skip scanning scalar lists.
        Value::List(items) if matches!(items.first(), Some(Value::Message(_))) => {
            items.iter().any(value_needs_tree)
        }
        _ => false,
    }
}

const ANY: &str = "google.protobuf.Any";

/// Well-known types whose JSON form is not an object of their fields.
pub(crate) fn has_own_json_form(name: &str) -> bool {
    matches!(
        name,
        "google.protobuf.Any"
            | "google.protobuf.Timestamp"
            | "google.protobuf.Duration"
            | "google.protobuf.FieldMask"
            | "google.protobuf.Struct"
            | "google.protobuf.Value"
            | "google.protobuf.ListValue"
            | "google.protobuf.DoubleValue"
            | "google.protobuf.FloatValue"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.Int32Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.BoolValue"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue"
    )
}

/// Reorders every map object in `json` (the rendering of `message`) by key,
/// and writes non-finite float wrappers as the strings proto3 JSON requires.
fn normalise_message(message: &DynamicMessage, json: &mut serde_json::Value) {
    match message.descriptor().full_name() {
        "google.protobuf.DoubleValue" | "google.protobuf.FloatValue" => {
            restore_non_finite(message, json);
        }
        ANY => normalise_any(message, json),
        name if has_own_json_form(name) => {}
        _ => normalise_fields(message, json),
    }
}

fn normalise_fields(message: &DynamicMessage, json: &mut serde_json::Value) {
    let serde_json::Value::Object(object) = json else {
        return;
    };
    for (field, value) in message.fields() {
        // JSON names and proto names never collide (protoc rejects that), so
        // whichever of the two the options chose is the field's key.
        let key = if object.contains_key(field.json_name()) {
            field.json_name()
        } else {
            field.name()
        };
        let Some(slot) = object.get_mut(key) else {
            continue;
        };
        match (value, slot) {
            (Value::List(items), serde_json::Value::Array(slots)) => {
                for (item, slot) in items.iter().zip(slots) {
                    normalise_value(item, slot);
                }
            }
            (Value::Map(entries), serde_json::Value::Object(slots)) => {
                let value_is_message = matches!(
                    field.kind(),
                    Kind::Message(entry) if entry.map_entry_value_field().kind().as_message().is_some()
                );
                sort_map(entries, slots, value_is_message);
            }
            (item, slot) => normalise_value(item, slot),
        }
    }
}

fn normalise_value(value: &Value, json: &mut serde_json::Value) {
    if let Value::Message(inner) = value {
        normalise_message(inner, json);
    }
}

/// Rebuilds `slots` (the JSON object of the map `entries`) in key order.
fn sort_map(
    entries: &std::collections::HashMap<MapKey, Value>,
    slots: &mut serde_json::Map<String, serde_json::Value>,
    value_is_message: bool,
) {
    let mut sorted: Vec<(&MapKey, &Value)> = entries.iter().collect();
    // MapKey's order is the reference one: all keys of one map share a
    // variant, and within it integers compare numerically, false < true,
    // and strings bytewise.
    sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut rebuilt = serde_json::Map::with_capacity(slots.len());
    for (key, value) in sorted {
        let text = map_key_text(key);
        if let Some(mut slot) = slots.remove(&text) {
            if value_is_message {
                normalise_value(value, &mut slot);
            }
            rebuilt.insert(text, slot);
        }
    }
    *slots = rebuilt;
}

/// An Any's payload is rendered beside `@type` (or under `value` for a
/// well-known type); its maps need the same ordering.
fn normalise_any(any: &DynamicMessage, json: &mut serde_json::Value) {
    let type_url = any.get_field_by_name("type_url");
    let bytes = any.get_field_by_name("value");
    let (Some(Value::String(type_url)), Some(Value::Bytes(bytes))) =
        (type_url.as_deref(), bytes.as_deref())
    else {
        return;
    };
    let type_name = type_url.rsplit('/').next().unwrap_or("");
    let Some(descriptor) = any
        .descriptor()
        .parent_pool()
        .get_message_by_name(type_name)
    else {
        return;
    };
    let Ok(payload) = DynamicMessage::decode(descriptor, bytes.clone()) else {
        return;
    };
    if has_own_json_form(type_name) {
        if let Some(slot) = json.get_mut("value") {
            normalise_message(&payload, slot);
        }
    } else {
        // "@type" names no field, so the walk passes over it.
        normalise_fields(&payload, json);
    }
}

/// Writes `"NaN"`, `"Infinity"` or `"-Infinity"` where `json` is `null` for a
/// non-finite `DoubleValue`/`FloatValue`: prost-reflect writes those wrappers
/// with a plain `serialize_f64`, which JSON turns into `null`.
fn restore_non_finite(wrapper: &DynamicMessage, json: &mut serde_json::Value) {
    let number = match wrapper.get_field_by_name("value").as_deref() {
        Some(Value::F64(v)) => *v,
        Some(Value::F32(v)) => f64::from(*v),
        _ => return,
    };
    if json.is_null() && !number.is_finite() {
        let text = if number.is_nan() {
            "NaN"
        } else if number > 0.0 {
            "Infinity"
        } else {
            "-Infinity"
        };
        *json = serde_json::Value::String(text.into());
    }
}

fn map_key_text(key: &MapKey) -> String {
    match key {
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(v) => v.to_string(),
        MapKey::I64(v) => v.to_string(),
        MapKey::U32(v) => v.to_string(),
        MapKey::U64(v) => v.to_string(),
        MapKey::String(s) => s.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> prost_reflect::DescriptorPool {
        crate::descriptors::load(&crate::descriptors::DescriptorSource::Protos {
            files: vec!["testing/v1/everything.proto".into()],
            include: vec![concat!(env!("CARGO_MANIFEST_DIR"), "/proto").into()],
        })
        .expect("repo protos compile")
    }

    fn everything(json: &str) -> DynamicMessage {
        let descriptor = pool()
            .get_message_by_name("testing.v1.Everything")
            .expect("Everything");
        let mut deserializer = serde_json::Deserializer::from_str(json);
        DynamicMessage::deserialize(descriptor, &mut deserializer).expect("valid Everything")
    }

    #[test]
    fn map_entries_come_out_in_key_order_for_every_key_kind() {
        let message = everything(
            r#"{"stringMap":{"b":"1","a":"2","B":"3","":"4","aa":"5"},
                "intMap":{"10":{"label":"x","count":1},"-3":{},"9":{},"0":{}},
                "boolEnumMap":{"true":"COLOR_RED","false":"COLOR_BLUE"}}"#,
        );
        let body = to_vec(&message, &SerializeOptions::new()).expect("renders");
        let text = String::from_utf8(body).expect("UTF-8");
        assert_eq!(
            text,
            r#"{"stringMap":{"":"4","B":"3","a":"2","aa":"5","b":"1"},"intMap":{"-3":{},"0":{},"9":{},"10":{"label":"x","count":1}},"boolEnumMap":{"false":"COLOR_BLUE","true":"COLOR_RED"}}"#
        );
    }

    #[test]
    fn maps_inside_lists_maps_and_any_are_ordered_too() {
        let message = everything(
            r#"{"any":{"@type":"type.googleapis.com/testing.v1.Everything",
                       "stringMap":{"z":"1","y":"2"}}}"#,
        );
        let json = to_value(&message, &SerializeOptions::new()).expect("renders");
        let keys: Vec<&String> = json["any"]["stringMap"]
            .as_object()
            .expect("object")
            .keys()
            .collect();
        assert_eq!(keys, ["y", "z"]);
    }

    #[test]
    fn one_entry_maps_take_the_one_pass_path() {
        assert!(!needs_tree(&everything(r#"{"stringMap":{"a":"b"}}"#)));
        assert!(!needs_tree(&everything(
            r#"{"structValue":{"b":1,"a":2},"repeatedString":["x","y"]}"#
        )));
        assert!(needs_tree(&everything(
            r#"{"stringMap":{"a":"b","c":"d"}}"#
        )));
        assert!(needs_tree(&everything(
            r#"{"repeatedNested":[{}],"intMap":{"1":{},"2":{}}}"#
        )));
    }
}
