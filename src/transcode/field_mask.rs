//! Checks the `google.protobuf.FieldMask` values of a request before it is
//! sent: a mask that names a field the message does not have is refused
//! with the path named, instead of reaching the service as a silent no-op
//! or as a different field than the client meant.
//!
//! Which message a mask names fields of is not in the descriptor; this
//! follows the API design guide: a route whose body is bound to a message
//! field is an update of that message (AIP-134), so its masks name fields of
//! it; otherwise masks are read masks and name fields of the response
//! message (AIP-157) or, for a list response with one repeated message
//! field, of the listed resource.

use prost_reflect::{DynamicMessage, Kind, MessageDescriptor, ReflectMessage, Value};

use super::plan::{BodyRule, Plan};
use super::{FieldPath, TranscodeError, stable_json};

/// Full name of the FieldMask well-known type.
pub const FIELD_MASK: &str = "google.protobuf.FieldMask";

/// Checks a FieldMask's JSON text (`a.b,cD`): comma-separated paths of
/// dot-separated lowerCamelCase names, none empty. `""` is the empty mask.
pub fn check_syntax(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Ok(());
    }
    for path in text.split(',') {
        if path.is_empty() {
            return Err(format!("{text:?} has an empty path"));
        }
        let well_formed = path
            .split('.')
            .all(|name| !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric()));
        if !well_formed {
            return Err(format!(
                "{path:?} is not a field path (dot-separated lowerCamelCase names)"
            ));
        }
    }
    Ok(())
}

/// Checks every FieldMask in `message`, the request of the binding `plan` describes.
pub fn validate(message: &DynamicMessage, plan: &Plan) -> Result<(), TranscodeError> {
    check_message(message, plan).map_err(|(mut location, path, reason)| {
        location.reverse();
        TranscodeError::InvalidField {
            field: location.join("."),
            reason: format!("the mask path '{path}' names no field: {reason}"),
        }
    })
}

/// A mask's location (innermost field first), the bad path, and why.
type MaskError = (Vec<String>, String, String);

/// The messages whose fields the binding's masks may name.
fn targets(plan: &Plan) -> Vec<MessageDescriptor> {
    let resource = match &plan.body {
        BodyRule::Field(path) if !path.leaf().is_list() && !path.leaf().is_map() => {
            match path.leaf().kind() {
                Kind::Message(m) if !stable_json::has_own_json_form(m.full_name()) => Some(m),
                _ => None,
            }
        }
        _ => None,
    };
    let primary = resource.unwrap_or_else(|| plan.method.output());
    let listed: Vec<MessageDescriptor> = primary
        .fields()
        .filter(|f| f.is_list())
        .filter_map(|f| f.kind().as_message().cloned())
        .take(2)
        .collect();
    let mut targets = vec![primary];
    if let [element] = listed.as_slice() {
        targets.push(element.clone());
    }
    targets
}

fn check_message(message: &DynamicMessage, plan: &Plan) -> Result<(), MaskError> {
    let descriptor = message.descriptor();
    if descriptor.full_name() == FIELD_MASK {
        return check_mask(message, plan);
    }
    if stable_json::has_own_json_form(descriptor.full_name()) {
        return Ok(());
    }
    for (field, value) in message.fields() {
        check_value(value, plan).map_err(|mut e| {
            e.0.push(field.name().to_string());
            e
        })?;
    }
    Ok(())
}

fn check_value(value: &Value, plan: &Plan) -> Result<(), MaskError> {
    match value {
        Value::Message(inner) => check_message(inner, plan),
        Value::List(items) if matches!(items.first(), Some(Value::Message(_))) => {
            items.iter().try_for_each(|item| check_value(item, plan))
        }
        Value::Map(entries) => entries.values().try_for_each(|v| check_value(v, plan)),
        _ => Ok(()),
    }
}

fn check_mask(mask: &DynamicMessage, plan: &Plan) -> Result<(), MaskError> {
    let paths = mask.get_field_by_name("paths");
    let Some(Value::List(paths)) = paths.as_deref() else {
        return Ok(());
    };
    // Masks are rare: the candidate messages are found only when there is one.
    let targets = targets(plan);
    for path in paths {
        let Value::String(path) = path else { continue };
        let mut first_error = None;
        let resolves = targets
            .iter()
            .any(|target| match FieldPath::resolve(target, path) {
                Ok(_) => true,
                Err(e) => {
                    first_error.get_or_insert(e);
                    false
                }
            });
        if !resolves {
            let reason = first_error.map_or_else(String::new, |e| e.to_string());
            return Err((Vec::new(), path.clone(), reason));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_syntax() {
        assert!(check_syntax("").is_ok());
        assert!(check_syntax("title,pageCount,author.name").is_ok());
        for bad in [",", "a,,b", "a..b", "a.", ".a", "page_count", "a, b", "a-b"] {
            assert!(check_syntax(bad).is_err(), "{bad}");
        }
    }
}
