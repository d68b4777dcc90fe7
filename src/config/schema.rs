//! Reads routes.toml reporting every schema mistake at once. serde stops at
//! the first error, so the file is parsed once into spanned TOML values and
//! then deserialised again after each error: the error is recorded, in our
//! words and with its place, and the entry at fault is taken out (an
//! unknown key, a bad value) so the next attempt gets past it. A required
//! key that is missing (or was taken out) gets a stand-in value, so its
//! table survives and the semantic checks still see it. What comes back is
//! the file as far as it could be read, and every mistake in file order.

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

use super::diagnostic::{ConfigError, suggest};
use super::file::RoutesFile;

/// Most mistakes collected from one file; past it, reading stops.
const MAX_ERRORS: usize = 100;

/// Most deserialisation attempts: each one either records a mistake or
/// tries another stand-in value, so this bounds the work on any file.
const MAX_ATTEMPTS: usize = 8 * MAX_ERRORS;

/// routes.toml as far as it could be read.
pub(super) struct Read {
    /// The file, with stand-ins for required keys that were missing or wrong.
    pub(super) file: RoutesFile,
    /// Every schema mistake, in file order.
    pub(super) errors: Vec<ConfigError>,
    /// Where the tables holding stand-ins start: a semantic error there
    /// (e.g. "no endpoints" for a stand-in `endpoints = []`) is a
    /// consequence of a mistake already reported.
    pub(super) stand_in_tables: Vec<usize>,
}

/// Reads routes.toml: the file and its schema mistakes, or, when not even
/// a partial file can be read (a syntax error, a mistake at the top level
/// that cannot be stepped over), every mistake found.
pub(super) fn read(text: &str) -> Result<Read, Vec<ConfigError>> {
    let (mut root, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        return Err(syntax.iter().map(syntax_error).collect());
    }
    let mut repair = Repair::new(text);
    for _ in 0..MAX_ATTEMPTS {
        let error = match RoutesFile::deserialize(toml::de::Deserializer::from(root.clone())) {
            Ok(file) => {
                let stand_in_tables = repair.stand_in_tables.clone();
                return Ok(Read {
                    file,
                    errors: repair.finish(),
                    stand_in_tables,
                });
            }
            Err(error) => error,
        };
        let root_span = root.span();
        if repair.errors.len() >= MAX_ERRORS || !repair.fix(root.get_mut(), root_span, &error) {
            return Err(repair.finish());
        }
    }
    Err(repair.finish())
}

fn syntax_error(error: &toml::de::Error) -> ConfigError {
    let message = error.message().trim().to_string();
    match error.span() {
        Some(span) => ConfigError::at(span, message),
        None => ConfigError::global(message),
    }
    .hint("this is not valid TOML; see https://toml.io for the syntax")
}

/// One step from a table or array to what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// The mistakes so far and what was changed to get past them.
struct Repair {
    errors: Vec<ConfigError>,
    /// Keys taken out because their value was wrong, by (start of the
    /// table's span, key): their "missing" error is a consequence, not news.
    removed: Vec<(usize, String)>,
    /// Stand-ins for required keys: the candidate each one is on. Stand-in
    /// `k` is spanned at `stand_in_base + k`, past the end of the file, so
    /// an error about it is known by its span, and [`is_stand_in`] can drop
    /// the semantic errors it causes.
    stand_ins: Vec<usize>,
    stand_in_base: usize,
    /// Where each table holding a stand-in starts.
    stand_in_tables: Vec<usize>,
}

/// Whether a span points at a stand-in rather than at text of the file.
pub(super) fn is_stand_in(span: &Range<usize>, text: &str) -> bool {
    span.start > text.len()
}

/// Values tried, in turn, for a required key that is missing: one of them
/// has the type the key wants.
fn stand_in(candidate: usize) -> Option<DeValue<'static>> {
    Some(match candidate {
        0 => DeValue::String("".into()),
        1 => DeValue::Array(DeArray::new()),
        2 => DeValue::Table(DeTable::default()),
        3 => DeValue::Boolean(false),
        _ => return None,
    })
}

impl Repair {
    fn new(text: &str) -> Repair {
        Repair {
            errors: Vec::new(),
            removed: Vec::new(),
            stand_ins: Vec::new(),
            stand_in_base: text.len() + 1,
            stand_in_tables: Vec::new(),
        }
    }

    /// Records `error` and changes the document so the next attempt gets
    /// past it; false when that is not possible.
    fn fix(
        &mut self,
        root: &mut DeTable<'_>,
        root_span: Range<usize>,
        error: &toml::de::Error,
    ) -> bool {
        let message = error.message().trim();
        let Some(span) = error.span() else {
            self.errors.push(ConfigError::global(message.to_string()));
            return false;
        };
        let place = locate(root, &span);
        let path: Vec<Step> = place.iter().map(|(step, _)| step.clone()).collect();
        // The span of the value at depth `n` of the path (the top level at 0).
        let span_at = |n: usize| match n {
            0 => root_span.clone(),
            n => place[n - 1].1.clone(),
        };

        if let Some(index) = span.start.checked_sub(self.stand_in_base) {
            // A stand-in has the wrong type: try the next candidate, or give
            // up on the table that needs it (its mistake is reported).
            let Some(candidate) = self.stand_ins.get_mut(index) else {
                return false;
            };
            *candidate += 1;
            let Some((Step::Key(key), table)) = path.split_last() else {
                return false;
            };
            let at = self.stand_in_base + index;
            return match stand_in(*candidate) {
                Some(value) => insert(root, table, key, value, at..at),
                None => remove(root, table),
            };
        }

        if let Some(key) = backticked(message, "missing field `") {
            let table_span = span_at(place.len());
            self.stand_in_tables.push(table_span.start);
            if !self.removed.contains(&(table_span.start, key.to_string())) {
                self.errors.push(missing_key(&path, key, table_span));
            }
            let at = self.stand_in_base + self.stand_ins.len();
            self.stand_ins.push(0);
            return stand_in(0).is_some_and(|value| insert(root, &path, key, value, at..at));
        }

        self.errors.push(describe(message, span, &path));
        if let Some(Step::Key(key)) = path.last() {
            let table_start = span_at(path.len() - 1).start;
            self.removed.push((table_start, key.clone()));
            // A key with a default (e.g. `endpoints`) is not stood in for:
            // its table's "nothing set" error is this mistake's consequence.
            self.stand_in_tables.push(table_start);
        }
        remove(root, &path)
    }

    /// The mistakes, in file order.
    fn finish(mut self) -> Vec<ConfigError> {
        self.errors
            .sort_by_key(|e| e.span.as_ref().map_or(0, |s| s.start));
        self.errors
    }
}

/// The path to the innermost entry whose key or value holds `span`, each
/// step with the span of the value it leads to; empty for the top level.
fn locate(table: &DeTable<'_>, span: &Range<usize>) -> Vec<(Step, Range<usize>)> {
    for (key, value) in table.iter() {
        let inside = |outer: Range<usize>| outer.start <= span.start && span.end <= outer.end;
        if inside(key.span()) {
            return vec![(Step::Key(key.get_ref().to_string()), value.span())];
        }
        let deeper = locate_in(value.get_ref(), span);
        if !deeper.is_empty() || inside(value.span()) {
            let mut path = vec![(Step::Key(key.get_ref().to_string()), value.span())];
            path.extend(deeper);
            return path;
        }
    }
    Vec::new()
}

fn locate_in(value: &DeValue<'_>, span: &Range<usize>) -> Vec<(Step, Range<usize>)> {
    match value {
        DeValue::Table(table) => locate(table, span),
        DeValue::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                let outer = item.span();
                let deeper = locate_in(item.get_ref(), span);
                if !deeper.is_empty() || (outer.start <= span.start && span.end <= outer.end) {
                    let mut path = vec![(Step::Index(index), outer)];
                    path.extend(deeper);
                    return path;
                }
            }
            Vec::new()
        }
        _ => Vec::new(),
    }
}

/// The value at `path` (the top level for an empty path).
fn value_at<'a, 'i>(root: &'a mut DeTable<'i>, path: &[Step]) -> Option<&'a mut DeValue<'i>> {
    let (first, rest) = path.split_first()?;
    let Step::Key(key) = first else { return None };
    let mut value = root.get_mut(key.as_str())?.get_mut();
    for step in rest {
        value = match (step, value) {
            (Step::Key(key), DeValue::Table(table)) => table.get_mut(key.as_str())?.get_mut(),
            (Step::Index(index), DeValue::Array(items)) => items.get_mut(*index)?.get_mut(),
            _ => return None,
        };
    }
    Some(value)
}

/// The table at `path`.
fn table_at<'a, 'i>(root: &'a mut DeTable<'i>, path: &[Step]) -> Option<&'a mut DeTable<'i>> {
    if path.is_empty() {
        return Some(root);
    }
    match value_at(root, path)? {
        DeValue::Table(table) => Some(table),
        _ => None,
    }
}

/// Sets `key` in the table at `path` to `value`, spanned at `at`; false if
/// there is no such table.
fn insert(
    root: &mut DeTable<'_>,
    path: &[Step],
    key: &str,
    value: DeValue<'static>,
    at: Range<usize>,
) -> bool {
    let Some(table) = table_at(root, path) else {
        return false;
    };
    table.insert(
        Spanned::new(at.clone(), key.to_string().into()),
        Spanned::new(at, value),
    );
    true
}

/// Takes out the entry at `path`: a key of a table or an item of an array.
fn remove(root: &mut DeTable<'_>, path: &[Step]) -> bool {
    let Some((last, parent)) = path.split_last() else {
        return false;
    };
    match last {
        Step::Key(key) => table_at(root, parent).is_some_and(|t| t.remove(key.as_str()).is_some()),
        Step::Index(index) => match value_at(root, parent) {
            Some(DeValue::Array(items)) if *index < items.len() => {
                // DeArray hands out a slice; rebuild it without the item.
                let mut kept = DeArray::new();
                for (i, item) in items.iter().enumerate() {
                    if i != *index {
                        kept.push(item.clone());
                    }
                }
                *items = kept;
                true
            }
            _ => false,
        },
    }
}

/// The text between `prefix` and the next backtick, if `message` starts so.
fn backticked<'m>(message: &'m str, prefix: &str) -> Option<&'m str> {
    message.strip_prefix(prefix)?.split('`').next()
}

/// How a section is written in routes.toml: `[upstreams.bookstore]`,
/// `[[routes]]`, `[routes.methods.GetShelf]`.
fn section_name(path: &[Step]) -> String {
    let keys: Vec<&str> = path
        .iter()
        .filter_map(|s| match s {
            Step::Key(k) => Some(k.as_str()),
            Step::Index(_) => None,
        })
        .collect();
    match path.last() {
        None => "the top level".to_string(),
        Some(Step::Index(_)) => format!("[[{}]]", keys.join(".")),
        Some(Step::Key(_)) => format!("[{}]", keys.join(".")),
    }
}

/// The name of the key a value belongs to (the array's key for an item).
fn key_name(path: &[Step]) -> &str {
    path.iter()
        .rev()
        .find_map(|s| match s {
            Step::Key(k) => Some(k.as_str()),
            Step::Index(_) => None,
        })
        .unwrap_or("value")
}

fn missing_key(table: &[Step], key: &str, span: Range<usize>) -> ConfigError {
    if table.is_empty() {
        return ConfigError::at(span, format!("the [{key}] section is missing"))
            .hint("see the routes.toml reference in the README");
    }
    ConfigError::at(
        span,
        format!(
            "{} is missing the required key '{key}'",
            section_name(table)
        ),
    )
    .hint("see the routes.toml reference in the README")
}

const DURATION_HINT: &str =
    "write a duration as a string with a unit: \"250ms\", \"5s\", \"1m 30s\"";

/// A deserialisation error in our words, with a hint.
fn describe(message: &str, span: Range<usize>, path: &[Step]) -> ConfigError {
    if let Some(key) = backticked(message, "unknown field `") {
        let known: Vec<String> = message
            .split('`')
            .skip(3)
            .step_by(2)
            .map(str::to_string)
            .collect();
        let table = &path[..path.len().saturating_sub(1)];
        return match table.is_empty() {
            true => ConfigError::at(span, format!("unknown section '{key}'"))
                .hint(suggest(key, &known, "sections")),
            false => ConfigError::at(
                span,
                format!("unknown key '{key}' in {}", section_name(table)),
            )
            .hint(suggest(key, &known, "keys")),
        };
    }
    let key = key_name(path);
    if message.starts_with("invalid duration") {
        return ConfigError::at(span, format!("{key}: {message}")).hint(DURATION_HINT);
    }
    if message.contains("untagged enum AuthSetting") {
        return ConfigError::at(
            span,
            format!(
                "{key} must be a name (\"none\", \"api_key\" or a provider) or a list of names"
            ),
        )
        .hint("e.g. auth = \"none\", auth = \"corp\" or auth = [\"corp\", \"api_key\"]");
    }
    if let Some(rest) = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))
        && let Some((found, expected)) = rest.split_once(", expected ")
    {
        let expected = plain(expected);
        let error = ConfigError::at(span, format!("{key}: expected {expected}, found {found}"));
        return match expected.contains("duration") {
            true => error.hint(DURATION_HINT),
            false => error.hint("see the routes.toml reference in the README"),
        };
    }
    ConfigError::at(span, format!("{key}: {message}"))
        .hint("see the routes.toml reference in the README")
}

/// serde's names for what it expected, in words.
fn plain(expected: &str) -> &str {
    match expected {
        "usize" | "u64" | "u32" | "u16" | "u8" => "a whole number, 0 or more",
        "i64" | "i32" => "a whole number",
        "path string" => "a path (a string)",
        "a boolean" | "bool" => "true or false",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        match read(text) {
            Ok(Read { errors, .. }) | Err(errors) => {
                errors.into_iter().map(|e| e.message).collect()
            }
        }
    }

    #[test]
    fn every_schema_mistake_is_reported_in_one_pass() {
        let found = errors(
            "[proto]\nfils = []\n[server]\nlisen = 1\n[upstreams.a]\nendpoints = []\ntimeout = \"fast\"\nconnections = \"two\"\n",
        );
        assert_eq!(
            found,
            [
                "unknown key 'fils' in [proto]",
                "unknown key 'lisen' in [server]",
                "timeout: invalid duration \"fast\": expected a number before \"fast\"",
                "connections: expected a whole number, 0 or more, found string \"two\"",
            ]
        );
    }

    #[test]
    fn a_required_key_with_a_bad_value_is_one_mistake_and_its_table_survives() {
        let Read { file, errors, .. } =
            read("[proto]\n[upstreams.a]\nendpoints = \"http://x:1\"\n")
                .expect("readable around the mistake");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0]
                .message
                .starts_with("endpoints: expected a sequence"),
            "{errors:?}"
        );
        assert_eq!(file.upstreams.len(), 1);
    }

    #[test]
    fn a_missing_required_key_is_reported_at_its_table() {
        let Read { file, errors, .. } =
            read("[proto]\n[[routes]]\nservice = \"a.B\"\n").expect("readable");
        assert_eq!(
            errors
                .iter()
                .map(|e| e.message.as_str())
                .collect::<Vec<_>>(),
            ["[[routes]] is missing the required key 'upstream'"]
        );
        assert_eq!(file.routes.len(), 1);
    }

    #[test]
    fn a_syntax_error_stops_reading() {
        assert!(read("[proto\n").is_err());
    }
}
