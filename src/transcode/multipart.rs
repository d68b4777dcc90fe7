//! Reads a `multipart/form-data` body (RFC 7578) into the request message.
//!
//! The body target is the request message (`body: "*"`) or the field the
//! body rule names. When that target is a message, each part's name (proto
//! or JSON name, dotted for nested fields) selects one of its fields; when
//! it is a single field, parts named like it set it. Files go to `bytes`
//! fields as raw bytes and to `google.api.HttpBody` fields with their
//! content type, and a bytes or HttpBody target also takes the form's one
//! file part under any name. Text parts are parsed as query values are,
//! repeated fields take a part once per element, and unknown names are a
//! 400 when the binding denies unknown fields.

use std::convert::Infallible;

use bytes::Bytes;
use futures_util::FutureExt as _;
use http::HeaderValue;
use multer::{Constraints, Multipart, SizeLimit};
use prost_reflect::{DynamicMessage, Kind, MessageDescriptor, ReflectMessage, Value};

use super::assign::{self, Source};
use super::field_path::FieldPathError;
use super::plan::Plan;
use super::{FieldPath, HTTP_BODY, TranscodeError, text};
use crate::headers::OCTET_STREAM;

/// A part's content type when it declares none and is not a file (RFC 7578 §4.4).
const TEXT_PLAIN: &str = "text/plain";

const IN_FORM: &str = " in the multipart form";

/// The bounds on one form; the body as a whole was bounded by
/// `max_body_bytes` when it was read.
#[derive(Debug, Clone, Copy)]
pub struct MultipartLimits {
    /// Largest part's content, in bytes.
    pub max_part_bytes: usize,
    /// Most parts in one form.
    pub max_parts: usize,
}

/// One part, read whole.
#[derive(Debug)]
struct Part {
    /// The form field name from `Content-Disposition`.
    name: String,
    /// Set for file parts.
    file_name: Option<String>,
    /// The part's own `Content-Type`, if it has one.
    content_type: Option<String>,
    data: Bytes,
}

/// What the parts of a form fill.
#[derive(Debug)]
enum Target<'a> {
    /// Each part names a field of the request message, or of the message
    /// field `within` the body rule names.
    Fields { within: Option<&'a FieldPath> },
    /// The body is one field without fields to name (bytes, HttpBody, a
    /// scalar, a list, a map): parts named like it set it.
    Field(&'a FieldPath),
    /// `body: "*"` on a google.api.HttpBody request: one part is the message.
    WholeHttpBody,
}

/// The boundary of a `multipart/form-data` content type, or `None` for
/// any other content type (which the JSON path then judges).
pub fn boundary(content_type: Option<&HeaderValue>) -> Result<Option<String>, TranscodeError> {
    let Some(text) = content_type.and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    match multer::parse_boundary(text) {
        Ok(boundary) => Ok(Some(boundary)),
        Err(multer::Error::NoBoundary) => Err(TranscodeError::MalformedMultipart(
            "the Content-Type has no boundary parameter".into(),
        )),
        Err(_) => Ok(None),
    }
}

/// Parses the form in `body` into a request message of type `descriptor`,
/// the body going where `body_field` says (`None`: the whole message).
pub fn parse(
    plan: &Plan,
    descriptor: &MessageDescriptor,
    body_field: Option<&FieldPath>,
    body: Bytes,
    boundary: String,
    limits: MultipartLimits,
) -> Result<DynamicMessage, TranscodeError> {
    let parts = read(body, boundary, limits)?;
    let mut form = Form {
        plan,
        message: DynamicMessage::new(descriptor.clone()),
        seen_singular: Vec::new(),
    };
    match Target::of(descriptor, body_field) {
        Target::Fields { within } => {
            for part in parts {
                if let Some(path) = form.resolve(within, &part.name)? {
                    form.set(&path, part)?;
                }
            }
        }
        Target::Field(path) => form.fill_field(path, parts)?,
        Target::WholeHttpBody => form.fill_whole(parts)?,
    }
    Ok(form.message)
}

/// Splits the body into its parts, within the limits.
fn read(
    body: Bytes,
    boundary: String,
    limits: MultipartLimits,
) -> Result<Vec<Part>, TranscodeError> {
    let per_part = u64::try_from(limits.max_part_bytes).unwrap_or(u64::MAX);
    let constraints = Constraints::new().size_limit(SizeLimit::new().per_field(per_part));
    let chunk = futures_util::stream::once(std::future::ready(Ok::<_, Infallible>(body)));
    let mut multipart = Multipart::with_constraints(chunk, boundary, constraints);
    let all = async {
        let mut parts = Vec::new();
        while let Some(field) = multipart.next_field().await.map_err(|e| error(e, limits))? {
            if parts.len() == limits.max_parts {
                return Err(TranscodeError::TooManyParts {
                    limit: limits.max_parts,
                });
            }
            let Some(name) = field.name().map(str::to_owned) else {
                return Err(TranscodeError::MalformedMultipart(format!(
                    "part {} has no name in its Content-Disposition",
                    parts.len() + 1
                )));
            };
            let file_name = field.file_name().map(str::to_owned);
            let content_type = field.content_type().map(ToString::to_string);
            let data = field.bytes().await.map_err(|e| error(e, limits))?;
            parts.push(Part {
                name,
                file_name,
                content_type,
                data,
            });
        }
        Ok(parts)
    };
    // The whole body is one chunk already in memory, so the parser never
    // waits for input: it finishes or fails in this one poll.
    all.now_or_never().unwrap_or_else(|| {
        Err(TranscodeError::MalformedMultipart(
            "the body ends before the form does".into(),
        ))
    })
}

/// The client's error for what the parser found.
fn error(error: multer::Error, limits: MultipartLimits) -> TranscodeError {
    let malformed = TranscodeError::MalformedMultipart;
    match error {
        multer::Error::FieldSizeExceeded { field_name, .. } => TranscodeError::PartTooLarge {
            part: field_name.unwrap_or_default(),
            limit: limits.max_part_bytes,
        },
        multer::Error::IncompleteStream => malformed(
            "the body does not match the boundary in Content-Type, or ends before the closing boundary"
                .into(),
        ),
        multer::Error::IncompleteFieldData { field_name } => malformed(format!(
            "part '{}' ends before the boundary that closes it",
            field_name.unwrap_or_default()
        )),
        multer::Error::IncompleteHeaders | multer::Error::ReadHeaderFailed(_) => {
            malformed("a part's headers are malformed".into())
        }
        other => malformed(other.to_string()),
    }
}

/// The message being filled from one form.
struct Form<'p> {
    plan: &'p Plan,
    message: DynamicMessage,
    seen_singular: Vec<FieldPath>,
}

// === impl Target ===

impl<'a> Target<'a> {
    fn of(descriptor: &MessageDescriptor, body_field: Option<&'a FieldPath>) -> Target<'a> {
        let Some(path) = body_field else {
            return if descriptor.full_name() == HTTP_BODY {
                Target::WholeHttpBody
            } else {
                Target::Fields { within: None }
            };
        };
        let leaf = path.leaf();
        match leaf.kind() {
            Kind::Message(m)
                if !leaf.is_list()
                    && !leaf.is_map()
                    && m.full_name() != HTTP_BODY
                    && !text::is_text_message(&m) =>
            {
                Target::Fields { within: Some(path) }
            }
            _ => Target::Field(path),
        }
    }
}

// === impl Form ===

impl Form<'_> {
    /// The field a part named `name` sets, `None` for an unknown name the
    /// binding lets through.
    fn resolve(
        &self,
        within: Option<&FieldPath>,
        name: &str,
    ) -> Result<Option<FieldPath>, TranscodeError> {
        let dotted = match within {
            None => name.to_string(),
            Some(body) => format!("{body}.{name}"),
        };
        match FieldPath::resolve(&self.message.descriptor(), &dotted) {
            Ok(path) => Ok(Some(path)),
            Err(e @ FieldPathError::NotTraversable { .. }) => Err(TranscodeError::InvalidField {
                field: name.to_string(),
                reason: e.to_string(),
            }),
            Err(_) => self.unknown(name).map(|()| None),
        }
    }

    /// A body that is one field: parts named like it set it; a file field
    /// also takes the form's one file part (or only part) under any name.
    fn fill_field(&mut self, path: &FieldPath, parts: Vec<Part>) -> Result<(), TranscodeError> {
        let leaf = path.leaf();
        let named = |part: &Part| part.name == leaf.name() || part.name == leaf.json_name();
        let file_field = is_file_field(path);
        let chosen = if file_field && !parts.iter().any(named) {
            let Some(only) = only_file(&parts) else {
                return Err(missing_file(path.to_string(), &parts, leaf.name()));
            };
            Some(only)
        } else {
            None
        };
        for (index, part) in parts.into_iter().enumerate() {
            if named(&part) || chosen == Some(index) {
                self.set(path, part)?;
            } else {
                self.unknown(&part.name)?;
            }
        }
        Ok(())
    }

    /// `body: "*"` on an HttpBody request: the one file part is the message.
    fn fill_whole(&mut self, parts: Vec<Part>) -> Result<(), TranscodeError> {
        let Some(chosen) = only_file(&parts) else {
            return Err(missing_file("(body)".into(), &parts, "file"));
        };
        for (index, part) in parts.into_iter().enumerate() {
            if index == chosen {
                fill_http_body(&mut self.message, part);
            } else {
                self.unknown(&part.name)?;
            }
        }
        Ok(())
    }

    /// Sets `path` from `part`: raw bytes, an HttpBody, or parsed text.
    fn set(&mut self, path: &FieldPath, part: Part) -> Result<(), TranscodeError> {
        self.check_unbound(path)?;
        let leaf = path.leaf();
        let value = match leaf.kind() {
            Kind::Message(m) if m.full_name() == HTTP_BODY => {
                let mut body = DynamicMessage::new(m);
                fill_http_body(&mut body, part);
                Value::Message(body)
            }
            Kind::Bytes => Value::Bytes(part.data),
            _ if part.file_name.is_some() => {
                return Err(TranscodeError::InvalidField {
                    field: path.to_string(),
                    reason: format!(
                        "part '{}' is a file; files go to bytes or google.api.HttpBody fields",
                        part.name
                    ),
                });
            }
            _ => {
                let text =
                    std::str::from_utf8(&part.data).map_err(|_| TranscodeError::InvalidField {
                        field: path.to_string(),
                        reason: format!("part '{}' is not UTF-8 text", part.name),
                    })?;
                return assign::text(
                    &mut self.message,
                    path,
                    text,
                    &mut self.seen_singular,
                    Source::Form,
                );
            }
        };
        assign::value(&mut self.message, path, value, &mut self.seen_singular)
    }

    /// The path variables are set after the body: a part may not set one.
    fn check_unbound(&self, path: &FieldPath) -> Result<(), TranscodeError> {
        match self
            .plan
            .variables
            .iter()
            .find(|v| path.is_within(v) || v.is_within(path))
        {
            Some(bound) => Err(TranscodeError::InvalidField {
                field: path.to_string(),
                reason: format!("already bound by the path variable {{{bound}}}"),
            }),
            None => Ok(()),
        }
    }

    /// A part naming no field: a 400 unless the binding ignores unknown fields.
    fn unknown(&self, name: &str) -> Result<(), TranscodeError> {
        if self.plan.json.deny_unknown_fields {
            return Err(TranscodeError::UnknownField {
                field: name.to_string(),
                context: IN_FORM,
            });
        }
        Ok(())
    }
}

/// Whether a field holds one file: singular bytes or google.api.HttpBody.
fn is_file_field(path: &FieldPath) -> bool {
    let leaf = path.leaf();
    !leaf.is_list()
        && match leaf.kind() {
            Kind::Bytes => true,
            Kind::Message(m) => m.full_name() == HTTP_BODY,
            _ => false,
        }
}

/// The index of the form's one file part, or of its only part.
fn only_file(parts: &[Part]) -> Option<usize> {
    let mut files = parts
        .iter()
        .enumerate()
        .filter(|(_, p)| p.file_name.is_some());
    match (files.next(), files.next()) {
        (Some((index, _)), None) => Some(index),
        (None, _) if parts.len() == 1 => Some(0),
        _ => None,
    }
}

fn missing_file(field: String, parts: &[Part], name: &str) -> TranscodeError {
    let files = parts.iter().filter(|p| p.file_name.is_some()).count();
    TranscodeError::InvalidField {
        field,
        reason: format!(
            "expected one file part (or a part named '{name}'), found {files} file parts among {} parts",
            parts.len()
        ),
    }
}

/// Sets an HttpBody's content type (the part's, else per RFC 7578 §4.4) and data.
fn fill_http_body(body: &mut DynamicMessage, part: Part) {
    let content_type = part.content_type.unwrap_or_else(|| {
        let default = match part.file_name {
            Some(_) => OCTET_STREAM,
            None => TEXT_PLAIN,
        };
        default.to_string()
    });
    body.set_field_by_name("content_type", Value::String(content_type));
    body.set_field_by_name("data", Value::Bytes(part.data));
}

#[cfg(test)]
mod tests;
