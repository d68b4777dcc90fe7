//! YAML for `/openapi.yaml`: the JSON document written in YAML's block
//! style. The gateway only writes YAML, never reads it, so a small emitter
//! replaces a YAML library (serde_yaml is archived, serde_yml unsound —
//! RUSTSEC-2025-0068): every string and key is double-quoted with JSON's
//! escapes, which YAML's double-quoted style shares, and numbers, booleans
//! and null are written as JSON writes them, which YAML reads the same way.

use serde_json::Value;

/// `value` as a YAML document.
pub(super) fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => block(value, 0, &mut out),
        Value::Array(items) if !items.is_empty() => block(value, 0, &mut out),
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
    out
}

/// A non-empty mapping or sequence, each entry on its own line at `indent`.
fn block(value: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                out.push_str(&pad);
                out.push_str(&quoted(key));
                out.push(':');
                nested(item, indent, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                out.push_str(&pad);
                out.push('-');
                nested(item, indent, out);
            }
        }
        _ => {}
    }
}

/// After `key:` or `-`: a scalar on the same line, a collection below it.
fn nested(item: &Value, indent: usize, out: &mut String) {
    match item {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            block(item, indent + 2, out);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            block(item, indent + 2, out);
        }
        other => {
            out.push(' ');
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => yaml_number(&n.to_string()),
        Value::String(s) => quoted(s),
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
    }
}

/// YAML 1.1 readers take `1e300` for a string: its float needs a `.` and
/// a signed exponent (`1.0e+300`).
fn yaml_number(json: &str) -> String {
    let Some((mantissa, exponent)) = json.split_once(['e', 'E']) else {
        return json.to_string();
    };
    let mantissa = match mantissa.contains('.') {
        true => mantissa.to_string(),
        false => format!("{mantissa}.0"),
    };
    let exponent = match exponent.starts_with(['+', '-']) {
        true => exponent.to_string(),
        false => format!("+{exponent}"),
    };
    format!("{mantissa}e{exponent}")
}

/// A double-quoted scalar: JSON's string escapes are YAML's.
fn quoted(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::to_yaml;

    #[test]
    fn nested_collections_are_indented_blocks_and_scalars_are_quoted() {
        let yaml = to_yaml(&json!({
            "a": { "b": [1, "two", { "c": null }], "e": {}, "f": [] },
            "g: h": "line\nbreak \"quoted\"",
            "t": true,
            "n": 1e300,
        }));
        assert_eq!(
            yaml,
            "\"a\":\n  \"b\":\n    - 1\n    - \"two\"\n    -\n      \"c\": null\n  \"e\": {}\n  \"f\": []\n\"g: h\": \"line\\nbreak \\\"quoted\\\"\"\n\"t\": true\n\"n\": 1.0e+300\n"
        );
    }
}
