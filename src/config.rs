//! Reads routes.toml into a [`RoutesFile`]. Syntax and type mistakes come back
//! as [`ConfigError`]s with spans, all of them in one pass
//! ([`schema`]); the semantic checks happen in [`crate::snapshot`], and
//! [`Loaded::with_schema_errors`] puts both together, so one run reports
//! every mistake.

pub mod auth;
pub mod diagnostic;
pub mod edge;
pub mod file;
pub mod idempotency;
pub mod openapi;
pub mod rate_limit;
mod route_section;
mod schema;
pub mod upstream;

use std::path::{Path, PathBuf};

pub use diagnostic::{ConfigError, Source};
pub use file::RoutesFile;

/// routes.toml, parsed, with the text and directory it came from.
#[derive(Debug)]
pub struct Loaded {
    /// The parsed file: everything that could be read around its mistakes.
    pub file: RoutesFile,
    /// Its text, to render diagnostics.
    pub source: Source,
    /// Paths in the file are relative to this directory.
    pub base_dir: PathBuf,
    /// Mistakes found while reading (unknown keys, values of the wrong
    /// type); the semantic checks run anyway, so one run reports them all.
    pub schema_errors: Vec<ConfigError>,
    /// Where tables holding stand-ins for missing or wrong values start.
    stand_in_tables: Vec<usize>,
}

/// Reads and parses routes.toml. An error only when nothing can be read
/// (no file, a TOML syntax error); other mistakes ride along in
/// [`Loaded::schema_errors`] for [`Loaded::with_schema_errors`].
pub fn load(path: &Path) -> Result<Loaded, (Source, Vec<ConfigError>)> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            let source = Source::new(path, String::new());
            let error = ConfigError::global(format!("cannot read the file: {e}"))
                .hint("pass the path of routes.toml with --config");
            return Err((source, vec![error]));
        }
    };
    let source = Source::new(path, text);
    let base_dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    match schema::read(&source.text) {
        Ok(read) => Ok(Loaded {
            file: read.file,
            source,
            base_dir,
            schema_errors: read.errors,
            stand_in_tables: read.stand_in_tables,
        }),
        Err(errors) => Err((source, errors)),
    }
}

/// Parses routes.toml text that must have no schema mistakes.
pub fn parse(text: &str) -> Result<RoutesFile, Vec<ConfigError>> {
    match schema::read(text) {
        Ok(read) if read.errors.is_empty() => Ok(read.file),
        Ok(schema::Read { errors, .. }) | Err(errors) => Err(errors),
    }
}

impl Loaded {
    /// A compile result with the schema mistakes added, all in file order.
    /// A semantic error at the place of a schema mistake, at a table holding
    /// a stand-in for a missing or wrong value, or about the stand-in
    /// itself, is a consequence and dropped.
    pub fn with_schema_errors<T>(
        &self,
        compiled: Result<T, Vec<ConfigError>>,
    ) -> Result<T, Vec<ConfigError>> {
        if self.schema_errors.is_empty() {
            return compiled;
        }
        let start = |e: &ConfigError| e.span.as_ref().map(|s| s.start);
        let mut errors = self.schema_errors.clone();
        for error in compiled.err().unwrap_or_default() {
            let stand_in = error
                .span
                .as_ref()
                .is_some_and(|s| schema::is_stand_in(s, &self.source.text));
            let same_place = start(&error).is_some_and(|at| {
                self.stand_in_tables.contains(&at)
                    || self.schema_errors.iter().any(|e| start(e) == Some(at))
            });
            if !stand_in && !same_place {
                errors.push(error);
            }
        }
        errors.sort_by_key(|e| start(e).unwrap_or(0));
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_errors() {
        let errors = parse("[proto]\nfiles = []\n[server]\nlisten = \"127.0.0.1:1\"\nlisen = 1\n")
            .expect_err("typo must not be accepted");
        assert_eq!(
            errors[0].message, "unknown key 'lisen' in [server]",
            "{errors:?}"
        );
        assert_eq!(errors[0].hint.as_deref(), Some("did you mean 'listen'?"));
        assert!(errors[0].span.is_some());
    }

    #[test]
    fn bad_duration_is_reported_with_its_place_in_our_words() {
        let errors = parse("[proto]\n[upstreams.a]\nendpoints = []\ntimeout = \"fast\"\n")
            .expect_err("a duration must parse");
        assert_eq!(
            errors[0].message,
            "timeout: invalid duration \"fast\": expected a number before \"fast\""
        );
    }
}
