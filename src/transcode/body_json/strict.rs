//! The strict first pass over a JSON body: one value, no key twice in an
//! object (also under a field's JSON and proto names, or two spellings of
//! one map key), and no field a path variable binds. It allocates nothing
//! for objects of up to [`FEW`] keys.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::hash::Hash;

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use super::json_error;
use crate::transcode::{FieldPath, TranscodeError, field_mask, stable_json};

/// Objects with up to this many keys are checked for duplicates with a
/// linear scan of a small vector; larger ones switch to a hash set, so a
/// huge object cannot make the check quadratic.
const FEW: usize = 16;

/// Which paths may be tracked for "bound by the path" (one bit each).
const MAX_WATCHED: usize = 128;

pub(super) fn check(
    descriptor: &MessageDescriptor,
    field: Option<&FieldPath>,
    variables: &[FieldPath],
    body: &[u8],
) -> Result<(), TranscodeError> {
    let context = Context {
        variables,
        finding: RefCell::new(None),
        location: RefCell::new(Vec::new()),
    };
    let (expect, depth, watch) = match field {
        None => (Expect::Message(descriptor.clone()), 0, watch_all(variables)),
        Some(path) => {
            // Only variables inside the body field can meet the body.
            let inside = variables
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_within(path) && *v != path)
                .fold(0, |mask, (i, _)| mask | bit(i));
            (Expect::field(path.leaf()), path.fields().len(), inside)
        }
    };
    let seed = Seed {
        context: &context,
        expect,
        depth,
        watch,
        bound: None,
    };
    let mut json = serde_json::Deserializer::from_slice(body);
    let result = seed.deserialize(&mut json).and_then(|()| json.end());
    if let Some(finding) = context.finding.take() {
        let mut location = context.location.take();
        // Paths are relative to the request message: `book.title` for the
        // key `title` of a `body = "book"` body.
        if let Some(path) = field {
            location.push(dotted(&path.to_string()));
        }
        return Err(finding.into_error(variables, location));
    }
    result.map_err(|e| json_error(&e))
}

fn bit(index: usize) -> u128 {
    if index < MAX_WATCHED { 1 << index } else { 0 }
}

fn watch_all(variables: &[FieldPath]) -> u128 {
    (0..variables.len()).fold(0, |mask, i| mask | bit(i))
}

/// What the first pass found; the serde error that stops it is a carrier.
#[derive(Debug)]
enum Finding {
    /// A key given twice in one object (of a map field's entries, or not).
    Duplicate { key: String, in_map: bool },
    /// The body sets the field of path variable `.0`.
    BoundByPath(usize),
    /// A FieldMask string that is not a comma-separated list of paths.
    MalformedMask(String),
}

impl Finding {
    fn into_error(self, variables: &[FieldPath], mut location: Vec<String>) -> TranscodeError {
        // Segments were pushed innermost first, while unwinding.
        location.reverse();
        let joined = location.concat();
        let at = joined.strip_prefix('.').unwrap_or(&joined).to_string();
        match self {
            Finding::Duplicate { key, in_map } => TranscodeError::DuplicateKey {
                field: match (at.is_empty(), in_map) {
                    (_, true) => format!("{at}[{key:?}]"),
                    (true, false) => key.clone(),
                    (false, false) => format!("{at}.{key}"),
                },
                key,
                at: if at.is_empty() {
                    "the top level".into()
                } else {
                    format!("'{at}'")
                },
            },
            Finding::BoundByPath(index) => {
                let variable = variables
                    .get(index)
                    .map_or_else(String::new, ToString::to_string);
                TranscodeError::InvalidField {
                    field: variable.clone(),
                    reason: format!(
                        "set by both the request body and the path variable {{{variable}}}; send it in one place"
                    ),
                }
            }
            Finding::MalformedMask(reason) => TranscodeError::InvalidField { field: at, reason },
        }
    }
}

struct Context<'v> {
    variables: &'v [FieldPath],
    finding: RefCell<Option<Finding>>,
    /// Where the finding is, built while the pass unwinds.
    location: RefCell<Vec<String>>,
}

impl Context<'_> {
    fn found<E: de::Error>(&self, finding: Finding) -> E {
        *self.finding.borrow_mut() = Some(finding);
        E::custom("rejected by the strict body check")
    }

    /// Adds `segment` to the finding's location, if this error carries one.
    fn within<E>(&self, segment: impl FnOnce() -> String, error: E) -> E {
        if self.finding.borrow().is_some() {
            self.location.borrow_mut().push(segment());
        }
        error
    }
}

/// What a JSON value is read as.
#[derive(Clone)]
enum Expect {
    /// An object of a message's fields.
    Message(MessageDescriptor),
    /// An object of a map field's entries (the entry type).
    Map(MessageDescriptor),
    /// An array of values of one kind.
    List(Kind),
    /// A google.protobuf.FieldMask string.
    FieldMask,
    /// Anything (a scalar, a Struct, an Any, an unknown field): only exact
    /// duplicate keys are looked for.
    Any,
}

impl Expect {
    fn field(field: &FieldDescriptor) -> Expect {
        if field.is_map() {
            match field.kind() {
                Kind::Message(entry) => Expect::Map(entry),
                _ => Expect::Any,
            }
        } else if field.is_list() {
            Expect::List(field.kind())
        } else {
            Expect::single(field.kind())
        }
    }

    fn single(kind: Kind) -> Expect {
        match kind {
            Kind::Message(m) if m.full_name() == field_mask::FIELD_MASK => Expect::FieldMask,
            Kind::Message(m) if !stable_json::has_own_json_form(m.full_name()) => {
                Expect::Message(m)
            }
            _ => Expect::Any,
        }
    }
}

/// One JSON value of the first pass.
struct Seed<'c, 'v> {
    context: &'c Context<'v>,
    expect: Expect,
    /// Fields from the request message to this value.
    depth: usize,
    /// Path variables whose fields lie strictly inside this value.
    watch: u128,
    /// The path variable bound to exactly this value, if any.
    bound: Option<usize>,
}

impl<'c, 'v> Seed<'c, 'v> {
    fn child(&self, expect: Expect) -> Seed<'c, 'v> {
        Seed {
            context: self.context,
            expect,
            depth: self.depth + 1,
            watch: 0,
            bound: None,
        }
    }

    /// A non-null value sets its field: refused if the path binds it.
    fn sets<E: de::Error>(&self) -> Result<(), E> {
        match self.bound {
            Some(index) => Err(self.context.found(Finding::BoundByPath(index))),
            None => Ok(()),
        }
    }

    /// The seed for the value of `field` inside this message value.
    fn field(&self, field: &FieldDescriptor) -> Seed<'c, 'v> {
        let mut seed = self.child(Expect::field(field));
        if self.watch == 0 {
            return seed;
        }
        for (index, variable) in self.context.variables.iter().enumerate() {
            if self.watch & bit(index) == 0 || variable.fields().get(self.depth) != Some(field) {
                continue;
            }
            if variable.fields().len() == self.depth + 1 {
                seed.bound = Some(index);
            } else {
                seed.watch |= bit(index);
            }
        }
        seed
    }

    fn message<'de, A: MapAccess<'de>>(
        &self,
        descriptor: &MessageDescriptor,
        mut map: A,
    ) -> Result<(), A::Error> {
        let mut seen = Seen::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            // prost-reflect looks a key up the same way: JSON name first.
            let field = descriptor
                .get_field_by_json_name(&key)
                .or_else(|| descriptor.get_field_by_name(&key));
            let id = match &field {
                Some(field) => SeenKey::Field(field.number()),
                None => SeenKey::Name(key.clone()),
            };
            if !seen.insert(id) {
                return Err(self.context.found(Finding::Duplicate {
                    key: key.into_owned(),
                    in_map: false,
                }));
            }
            let value = match &field {
                Some(field) => self.field(field),
                None => self.child(Expect::Any),
            };
            map.next_value_seed(value)
                .map_err(|e| self.context.within(|| dotted(&key), e))?;
        }
        Ok(())
    }

    fn map<'de, A: MapAccess<'de>>(
        &self,
        entry: &MessageDescriptor,
        mut map: A,
    ) -> Result<(), A::Error> {
        let integer_keys = !matches!(
            entry.map_entry_key_field().kind(),
            Kind::String | Kind::Bool
        );
        let value = Expect::field(&entry.map_entry_value_field());
        let mut seen = Seen::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            // "1", "01" and "+1" are one integer key.
            let id = match key.parse::<i128>() {
                Ok(number) if integer_keys => SeenKey::Integer(number),
                _ => SeenKey::Name(key.clone()),
            };
            if !seen.insert(id) {
                return Err(self.context.found(Finding::Duplicate {
                    key: key.into_owned(),
                    in_map: true,
                }));
            }
            map.next_value_seed(self.child(value.clone()))
                .map_err(|e| self.context.within(|| format!("[{key:?}]"), e))?;
        }
        Ok(())
    }

    fn any_object<'de, A: MapAccess<'de>>(&self, mut map: A) -> Result<(), A::Error> {
        let mut seen = Seen::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if !seen.insert(SeenKey::Name(key.clone())) {
                return Err(self.context.found(Finding::Duplicate {
                    key: key.into_owned(),
                    in_map: false,
                }));
            }
            map.next_value_seed(self.child(Expect::Any))
                .map_err(|e| self.context.within(|| dotted(&key), e))?;
        }
        Ok(())
    }

    fn field_mask<E: de::Error>(&self, text: &str) -> Result<(), E> {
        match field_mask::check_syntax(text) {
            Ok(()) => Ok(()),
            Err(reason) => Err(self.context.found(Finding::MalformedMask(reason))),
        }
    }
}

/// A location segment for an object key; the leading dot of the outermost
/// one is dropped when the location is put together.
fn dotted(key: &str) -> String {
    format!(".{key}")
}

impl<'de> DeserializeSeed<'de> for Seed<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    // null sets nothing (proto3 JSON: the field keeps its default).
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.sets()
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.sets()
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.sets()
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.sets()
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<(), E> {
        self.sets()?;
        if matches!(self.expect, Expect::FieldMask) {
            self.field_mask(text)?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.sets()?;
        let item = match &self.expect {
            Expect::List(kind) => Expect::single(kind.clone()),
            _ => Expect::Any,
        };
        let mut index = 0usize;
        while seq
            .next_element_seed(self.child(item.clone()))
            .map_err(|e| self.context.within(|| format!("[{index}]"), e))?
            .is_some()
        {
            index += 1;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.sets()?;
        match &self.expect {
            Expect::Message(descriptor) => self.message(descriptor, map),
            Expect::Map(entry) => self.map(entry, map),
            _ => self.any_object(map),
        }
    }
}

/// An object key, borrowed from the body when it has no escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E: de::Error>(self, key: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(key))
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(key.to_string()))
    }
}

/// One key's identity within one object.
#[derive(PartialEq, Eq, Hash)]
enum SeenKey<'de> {
    /// A message field, whichever name it was given under.
    Field(u32),
    /// An integer map key, whatever its spelling.
    Integer(i128),
    /// Any other key, as written.
    Name(Cow<'de, str>),
}

/// The keys of one object so far.
enum Seen<T> {
    Few(Vec<T>),
    Many(HashSet<T>),
}

impl<T> Default for Seen<T> {
    fn default() -> Self {
        Seen::Few(Vec::new())
    }
}

impl<T: Eq + Hash> Seen<T> {
    /// Adds `key`; false if it was there already.
    fn insert(&mut self, key: T) -> bool {
        match self {
            Seen::Few(keys) if keys.contains(&key) => false,
            Seen::Few(keys) if keys.len() < FEW => {
                keys.push(key);
                true
            }
            Seen::Few(keys) => {
                let mut set: HashSet<T> = keys.drain(..).collect();
                set.insert(key);
                *self = Seen::Many(set);
                true
            }
            Seen::Many(set) => set.insert(key),
        }
    }
}
