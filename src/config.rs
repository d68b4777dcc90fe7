//! Reads routes.toml into a [`RoutesFile`]. Syntax and type mistakes come back
//! as [`ConfigError`]s with spans; the semantic checks happen in
//! [`crate::snapshot`], which reports every mistake at once.

pub mod auth;
pub mod diagnostic;
pub mod edge;
pub mod file;

use std::path::{Path, PathBuf};

pub use diagnostic::{ConfigError, Source};
pub use file::RoutesFile;

/// routes.toml, parsed, with the text and directory it came from.
#[derive(Debug)]
pub struct Loaded {
    /// The parsed file.
    pub file: RoutesFile,
    /// Its text, to render diagnostics.
    pub source: Source,
    /// Paths in the file are relative to this directory.
    pub base_dir: PathBuf,
}

/// Reads and parses routes.toml.
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
    match parse(&source.text) {
        Ok(file) => Ok(Loaded {
            file,
            source,
            base_dir,
        }),
        Err(error) => Err((source, vec![error])),
    }
}

/// Parses routes.toml text.
pub fn parse(text: &str) -> Result<RoutesFile, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let message = e.message().trim().to_string();
        let hint = if message.starts_with("unknown field") {
            "remove the key or fix its spelling; the README lists every key"
        } else if message.contains("duration") {
            "write a duration as a string with a unit: \"250ms\", \"5s\", \"1m 30s\""
        } else {
            "see the routes.toml reference in the README"
        };
        match e.span() {
            Some(span) => ConfigError::at(span, message),
            None => ConfigError::global(message),
        }
        .hint(hint)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_errors() {
        let err = parse("[proto]\nfiles = []\n[server]\nlisten = \"127.0.0.1:1\"\nlisen = 1\n")
            .expect_err("typo must not be accepted");
        assert!(err.message.contains("unknown field"), "{err:?}");
        assert!(err.span.is_some());
    }

    #[test]
    fn bad_duration_is_reported_with_its_place() {
        let err = parse("[proto]\n[upstreams.a]\nendpoints = []\ntimeout = \"fast\"\n")
            .expect_err("a duration must parse");
        assert!(err.message.contains("invalid duration"), "{err:?}");
    }
}
