//! One configuration mistake, with where it is and a hint, rendered the way a
//! compiler renders errors: `file:line:col`, the line, a caret, the hint.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One mistake in routes.toml (or in a file it names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Byte range in routes.toml, when the mistake has a place there.
    pub span: Option<Range<usize>>,
    /// What is wrong, in one line.
    pub message: String,
    /// How to fix it, in one line.
    pub hint: Option<String>,
}

/// The text of routes.toml, kept to turn spans into lines and columns.
#[derive(Debug, Clone)]
pub struct Source {
    /// Where the file was read from.
    pub path: PathBuf,
    /// Its contents.
    pub text: String,
}

/// Diagnostics rendered against their source file.
pub struct Rendered<'a> {
    source: &'a Source,
    errors: &'a [ConfigError],
}

// === impl ConfigError ===

impl ConfigError {
    /// A mistake at `span`.
    pub fn at(span: Range<usize>, message: impl Into<String>) -> Self {
        ConfigError {
            span: Some(span),
            message: message.into(),
            hint: None,
        }
    }

    /// A mistake with no place in routes.toml (e.g. an unreadable file).
    pub fn global(message: impl Into<String>) -> Self {
        ConfigError {
            span: None,
            message: message.into(),
            hint: None,
        }
    }

    /// Adds a one-line hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

// === impl Source ===

impl Source {
    /// Wraps text read from `path`.
    pub fn new(path: impl AsRef<Path>, text: String) -> Self {
        Source {
            path: path.as_ref().to_path_buf(),
            text,
        }
    }

    /// 1-based line and column of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        (line, before[line_start..].chars().count() + 1)
    }

    /// Renders diagnostics for printing.
    pub fn render<'a>(&'a self, errors: &'a [ConfigError]) -> Rendered<'a> {
        Rendered {
            source: self,
            errors,
        }
    }
}

impl fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.source.path.display();
        for error in self.errors {
            match &error.span {
                Some(span) => {
                    let (line, col) = self.source.line_col(span.start);
                    writeln!(f, "error: {path}:{line}:{col}: {}", error.message)?;
                    let text = self.source.text.lines().nth(line - 1).unwrap_or("");
                    let width = self.source.text[span.clone()]
                        .lines()
                        .next()
                        .map_or(1, |l| l.chars().count().max(1));
                    writeln!(f, "{line:>5} | {text}")?;
                    writeln!(f, "      | {}{}", " ".repeat(col - 1), "^".repeat(width))?;
                }
                None => writeln!(f, "error: {path}: {}", error.message)?,
            }
            if let Some(hint) = &error.hint {
                writeln!(f, "      = hint: {hint}")?;
            }
        }
        match self.errors.len() {
            0 => Ok(()),
            1 => writeln!(f, "1 error in {path}"),
            n => writeln!(f, "{n} errors in {path}"),
        }
    }
}

/// "did you mean X?" by edit distance (a swap of two letters counts as
/// one edit), else the list of what exists.
pub fn suggest(wrong: &str, known: &[String], what: &str) -> String {
    let best = known
        .iter()
        .map(|k| {
            (
                strsim::damerau_levenshtein(&wrong.to_ascii_lowercase(), &k.to_ascii_lowercase()),
                k,
            )
        })
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, k)) if d <= wrong.len().max(3) / 3 + 1 => format!("did you mean '{k}'?"),
        _ if known.is_empty() => format!("no {what} are defined"),
        _ => format!("known {what}: {}", known.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_line_column_and_caret() {
        let source = Source::new("routes.toml", "a = 1\nupstream = \"nope\"\n".into());
        let errors =
            [ConfigError::at(17..23, "unknown upstream 'nope'").hint("define [upstreams.nope]")];
        let text = source.render(&errors).to_string();
        assert!(
            text.contains("routes.toml:2:12: unknown upstream 'nope'"),
            "{text}"
        );
        assert!(text.contains("^^^^^^"), "{text}");
        assert!(text.contains("hint: define [upstreams.nope]"), "{text}");
    }

    #[test]
    fn close_names_are_suggested_and_far_ones_listed() {
        let known = ["connections".to_string(), "timeout".to_string()];
        assert_eq!(
            suggest("conections", &known, "keys"),
            "did you mean 'connections'?"
        );
        assert_eq!(
            suggest("tiemout", &known, "keys"),
            "did you mean 'timeout'?"
        );
        assert_eq!(
            suggest("colour", &known, "keys"),
            "known keys: connections, timeout"
        );
        assert_eq!(suggest("x", &[], "providers"), "no providers are defined");
    }
}
