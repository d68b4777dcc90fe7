//! A dotted field path (`book.author.name`) resolved once, at load time, to
//! a chain of field descriptors, and set or read on dynamic messages.

use std::fmt;

use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, Value};

/// A resolved chain of fields from a message to a (possibly nested) field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    fields: Vec<FieldDescriptor>,
    dotted: String,
}

/// Why a dotted path does not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldPathError {
    /// A segment names no field.
    #[error("message '{message}' has no field '{field}'")]
    NoSuchField {
        /// Message searched.
        message: String,
        /// The missing name.
        field: String,
    },
    /// A segment before the last is not a singular message.
    #[error("field '{field}' is not a singular message, so '{rest}' cannot be reached through it")]
    NotTraversable {
        /// The field that blocks.
        field: String,
        /// What came after it.
        rest: String,
    },
    /// The path is empty or has an empty segment.
    #[error("empty field path segment in '{0}'")]
    Empty(String),
}

// === impl FieldPath ===

impl FieldPath {
    /// Resolves `dotted` from `message`, accepting proto names and JSON names.
    pub fn resolve(message: &MessageDescriptor, dotted: &str) -> Result<FieldPath, FieldPathError> {
        let mut fields = Vec::new();
        let mut current = message.clone();
        let mut segments = dotted.split('.').peekable();
        while let Some(segment) = segments.next() {
            if segment.is_empty() {
                return Err(FieldPathError::Empty(dotted.to_string()));
            }
            let field = current
                .get_field_by_name(segment)
                .or_else(|| current.get_field_by_json_name(segment))
                .ok_or_else(|| FieldPathError::NoSuchField {
                    message: current.full_name().to_string(),
                    field: segment.to_string(),
                })?;
            if segments.peek().is_some() {
                match field.kind() {
                    Kind::Message(next) if !field.is_list() && !field.is_map() => current = next,
                    _ => {
                        return Err(FieldPathError::NotTraversable {
                            field: field.name().to_string(),
                            rest: segments.collect::<Vec<_>>().join("."),
                        });
                    }
                }
            }
            fields.push(field);
        }
        let dotted = fields
            .iter()
            .map(|f| f.name())
            .collect::<Vec<_>>()
            .join(".");
        Ok(FieldPath { fields, dotted })
    }

    /// The last field of the path.
    pub fn leaf(&self) -> &FieldDescriptor {
        // resolve() never builds an empty path.
        &self.fields[self.fields.len() - 1]
    }

    /// The fields of the path, outermost first.
    pub fn fields(&self) -> &[FieldDescriptor] {
        &self.fields
    }

    /// Whether `self` equals `other` or lies inside it (`book.id` is within `book`).
    pub fn is_within(&self, other: &FieldPath) -> bool {
        self.fields.len() >= other.fields.len()
            && self.fields[..other.fields.len()] == other.fields[..]
    }

    /// Sets the leaf to `value`, creating intermediate messages.
    pub fn set(&self, message: &mut DynamicMessage, value: Value) {
        let mut current = message;
        for field in &self.fields[..self.fields.len() - 1] {
            current = match current.get_field_mut(field) {
                Value::Message(next) => next,
                // resolve() only lets singular messages be intermediate.
                _ => return,
            };
        }
        current.set_field(self.leaf(), value);
    }

    /// The leaf's mutable value, creating intermediate messages.
    pub fn get_mut<'a>(&self, message: &'a mut DynamicMessage) -> Option<&'a mut Value> {
        let mut current = message;
        for field in &self.fields[..self.fields.len() - 1] {
            current = match current.get_field_mut(field) {
                Value::Message(next) => next,
                _ => return None,
            };
        }
        Some(current.get_field_mut(self.leaf()))
    }

    /// The leaf's value, if every message on the way is present.
    pub fn get<'a>(&self, message: &'a DynamicMessage) -> Option<std::borrow::Cow<'a, Value>> {
        let mut current = message;
        for field in &self.fields[..self.fields.len() - 1] {
            if !current.has_field(field) {
                return None;
            }
            current = match current.get_field(field) {
                std::borrow::Cow::Borrowed(Value::Message(next)) => next,
                _ => return None,
            };
        }
        Some(current.get_field(self.leaf()))
    }

    /// Whether the leaf has been set (for singular fields with presence or a non-default value).
    pub fn is_set(&self, message: &DynamicMessage) -> bool {
        let mut current = message;
        for field in &self.fields[..self.fields.len() - 1] {
            if !current.has_field(field) {
                return false;
            }
            current = match current.get_field(field) {
                std::borrow::Cow::Borrowed(Value::Message(next)) => next,
                _ => return false,
            };
        }
        current.has_field(self.leaf())
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.dotted)
    }
}
