//! Sets request fields from the query string: `a.b=1` for nested fields,
//! repeated keys for repeated fields, text values per [`super::text`].
//!
//! Fields bound by the path or the body cannot be set again from the query,
//! a singular field given twice is an error, and unknown parameters are an
//! error unless the route says to ignore them: nothing the client sent is
//! silently dropped or silently overridden.

use std::borrow::Cow;

use bytes::BytesMut;
use percent_encoding::percent_decode;
use prost_reflect::{DynamicMessage, ReflectMessage};

use super::assign::{self, Source};
use super::plan::{BodyRule, Plan};
use super::{FieldPath, TranscodeError, json_wire, text};

const IN_QUERY: &str = " in the query string";

/// Applies every `key=value` pair of `query` to `message`.
pub fn apply(message: &mut DynamicMessage, plan: &Plan, query: &str) -> Result<(), TranscodeError> {
    let descriptor = message.descriptor();
    let mut seen_singular: Vec<FieldPath> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(raw_key)?;
        if plan.reserved_query.iter().any(|r| *r == key) {
            // A credential, already consumed by authentication.
            continue;
        }
        let value = decode(raw_value)?;
        let unknown = || TranscodeError::UnknownField {
            field: key.to_string(),
            context: IN_QUERY,
        };
        if matches!(plan.body, BodyRule::Whole) {
            // body "*" binds every field not in the path: none is left for the query.
            if plan.json.deny_unknown_query {
                return Err(TranscodeError::InvalidField {
                    field: key.to_string(),
                    reason: "this route takes every field from the body; query parameters are not accepted".into(),
                });
            }
            continue;
        }
        let path = match FieldPath::resolve(&descriptor, &key) {
            Ok(path) => path,
            Err(_) if !plan.json.deny_unknown_query => continue,
            Err(_) => return Err(unknown()),
        };
        if let Some(bound) = plan
            .variables
            .iter()
            .find(|v| path.is_within(v) || v.is_within(&path))
        {
            return Err(TranscodeError::InvalidField {
                field: path.to_string(),
                reason: format!("already bound by the path variable {{{bound}}}"),
            });
        }
        if let BodyRule::Field(body) = &plan.body
            && (path.is_within(body) || body.is_within(&path))
        {
            return Err(TranscodeError::InvalidField {
                field: path.to_string(),
                reason: format!("already bound by the request body field '{body}'"),
            });
        }
        assign::text(message, &path, &value, &mut seen_singular, Source::Query)?;
    }
    Ok(())
}

/// Appends the query's fields to a request message being written as wire
/// bytes ([`super::json_wire`]), for the plain cases only: each key one
/// top-level scalar or enum field outside any oneof, bound by neither the
/// path nor the body, a singular one given once. `None` for anything else:
/// the caller then builds the message the general way, with [`apply`].
pub fn to_wire(plan: &Plan, query: &str, buf: &mut BytesMut) -> Option<()> {
    if matches!(plan.body, BodyRule::Whole) {
        return None;
    }
    let descriptor = plan.method.input();
    let mut singular = [0u32; 16];
    let mut given = 0;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(raw_key).ok()?;
        if plan.reserved_query.iter().any(|r| *r == key) {
            continue;
        }
        let field = (descriptor.get_field_by_name(&key))
            .or_else(|| descriptor.get_field_by_json_name(&key))?;
        let bound = |path: &FieldPath| path.fields().first() == Some(&field);
        let bound_by_body = matches!(&plan.body, BodyRule::Field(body) if bound(body));
        if field.containing_oneof().is_some() || bound_by_body || plan.variables.iter().any(bound) {
            return None;
        }
        if !field.is_list() {
            if singular[..given].contains(&field.number()) {
                return None;
            }
            *singular.get_mut(given)? = field.number();
            given += 1;
        }
        let parsed = text::parse(&field.kind(), &decode(raw_value).ok()?).ok()?;
        json_wire::encode_field_value(&field, &parsed, buf)?;
    }
    Some(())
}

/// Percent-decodes a query component; `+` means space (HTML form encoding).
fn decode(raw: &str) -> Result<Cow<'_, str>, TranscodeError> {
    let spaced: Cow<'_, str> = if raw.contains('+') {
        Cow::Owned(raw.replace('+', " "))
    } else {
        Cow::Borrowed(raw)
    };
    if !spaced.contains('%') {
        return Ok(spaced);
    }
    check_escapes(&spaced)?;
    let decoded = percent_decode(spaced.as_bytes())
        .decode_utf8()
        .map_err(|_| {
            TranscodeError::InvalidQuery("the query string is not valid UTF-8 once decoded".into())
        })?;
    Ok(Cow::Owned(decoded.into_owned()))
}

/// percent_decode passes invalid escapes through; a gateway must not guess.
fn check_escapes(text: &str) -> Result<(), TranscodeError> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let valid = bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
            if !valid {
                return Err(TranscodeError::InvalidQuery(format!(
                    "invalid percent-escape in the query string at byte {i}"
                )));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(())
}
