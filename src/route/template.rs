//! Parser and canonical printer for `google.api.http` path templates.
//!
//! Grammar (google/api/http.proto):
//! ```text
//! Template = "/" Segments [ Verb ] ;
//! Segments = Segment { "/" Segment } ;
//! Segment  = "*" | "**" | LITERAL | Variable ;
//! Variable = "{" FieldPath [ "=" Segments ] "}" ;
//! FieldPath = IDENT { "." IDENT } ;
//! Verb     = ":" LITERAL ;
//! ```
//! Why the representation is flat: a variable's inner segments are stored in
//! place in [`PathTemplate::segments`] and the variable only records the index
//! range it covers, so the matcher walks one segment list and captures are
//! slices of the matched path. Literals and verbs are normalised with the same
//! rules as request paths (`super::path`), so matching is string equality and
//! `/v1/%7Eme` and `/v1/~me` are the same template.

use std::fmt;
use std::str::FromStr;

use super::path::{decode_hex_pair, is_unreserved, push_normalized_escape};

/// A parsed `google.api.http` path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    /// All segments, with each variable's segments flattened in place.
    pub segments: Vec<Segment>,
    /// Variables in order of appearance, each covering a range of `segments`.
    pub variables: Vec<Variable>,
    /// The custom verb after `:`, normalised like a literal.
    pub verb: Option<String>,
}

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Literal text in normalised form (unreserved escapes decoded, other escapes upper-case).
    Literal(String),
    /// `*`: exactly one non-empty path segment.
    Single,
    /// `**`: zero or more path segments; only ever the last segment.
    Multi,
}

/// A variable binding a request field path to a range of template segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// The field path, one entry per dotted component.
    pub field_path: Vec<String>,
    /// Index of the first segment covered.
    pub start: usize,
    /// One past the index of the last segment covered.
    pub end: usize,
}

/// Why a path template failed to parse; offsets are byte offsets into the template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template was the empty string.
    #[error("template is empty")]
    Empty,
    /// The template did not begin with `/`.
    #[error("template must start with '/'")]
    MissingLeadingSlash,
    /// A character that the grammar does not allow at this point.
    #[error("unexpected '{found}' at offset {offset}")]
    Unexpected {
        /// The offending character.
        found: char,
        /// Its offset.
        offset: usize,
    },
    /// The template ended where more input was required.
    #[error("unexpected end of template at offset {offset}")]
    UnexpectedEnd {
        /// The template length.
        offset: usize,
    },
    /// A segment with no characters (`//`, trailing `/`, `{x=}`, `/:verb`).
    #[error("empty segment at offset {offset}")]
    EmptySegment {
        /// Where the segment should have started.
        offset: usize,
    },
    /// A `:` with nothing after it.
    #[error("empty verb at offset {offset}")]
    EmptyVerb {
        /// Where the verb should have started.
        offset: usize,
    },
    /// A `{` without its `}`.
    #[error("unclosed '{{' at offset {offset}")]
    UnclosedVariable {
        /// Offset of the `{`.
        offset: usize,
    },
    /// A `{` inside a variable.
    #[error("nested variables are not allowed (offset {offset})")]
    NestedVariable {
        /// Offset of the inner `{`.
        offset: usize,
    },
    /// A segment after `**`.
    #[error("'**' must be the last segment (offset {offset})")]
    MultiNotLast {
        /// Offset of the `**`.
        offset: usize,
    },
    /// A field path component that is not `[A-Za-z_][A-Za-z0-9_]*`.
    #[error("invalid field path at offset {offset}: expected an identifier [A-Za-z_][A-Za-z0-9_]*")]
    InvalidFieldPath {
        /// Where the identifier should have started.
        offset: usize,
    },
    /// The same field path bound twice.
    #[error("variable '{name}' appears twice (again at offset {offset})")]
    DuplicateVariable {
        /// The dotted field path.
        name: String,
        /// Offset of the second occurrence's field path.
        offset: usize,
    },
    /// A `%` not followed by two hex digits.
    #[error("invalid percent-escape at offset {offset}")]
    InvalidEscape {
        /// Offset of the `%`.
        offset: usize,
    },
    /// A literal segment `.` or `..`, which can never survive path normalisation.
    #[error(
        "literal segment '{literal}' at offset {offset} is a dot segment and could never match"
    )]
    DotSegment {
        /// The literal after decoding.
        literal: String,
        /// Offset of the segment.
        offset: usize,
    },
}

impl PathTemplate {
    /// The canonical form with variables erased (e.g. `/v1/*/books/**:verb`); equal shapes conflict.
    pub fn shape(&self) -> String {
        let mut out = String::new();
        if self.segments.is_empty() {
            out.push('/');
        }
        for seg in &self.segments {
            out.push('/');
            out.push_str(seg.as_str());
        }
        if let Some(verb) = &self.verb {
            out.push(':');
            out.push_str(verb);
        }
        out
    }
}

impl Segment {
    fn as_str(&self) -> &str {
        match self {
            Segment::Literal(lit) => lit,
            Segment::Single => "*",
            Segment::Multi => "**",
        }
    }
}

impl FromStr for PathTemplate {
    type Err = TemplateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Parser {
            src: s,
            pos: 0,
            segments: Vec::new(),
            variables: Vec::new(),
            multi_at: None,
        }
        .parse()
    }
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.segments.is_empty() {
            f.write_str("/")?;
        }
        let mut vars = self.variables.iter().peekable();
        let mut i = 0;
        while let Some(seg) = self.segments.get(i) {
            f.write_str("/")?;
            let Some(var) = vars.next_if(|v| v.start == i) else {
                f.write_str(seg.as_str())?;
                i += 1;
                continue;
            };
            f.write_str("{")?;
            f.write_str(&var.field_path.join("."))?;
            // `get` rather than indexing: the fields are public, so a
            // hand-built template may hold a bad range, and Display must not panic.
            let inner = self.segments.get(var.start..var.end).unwrap_or(&[]);
            if !matches!(inner, [Segment::Single]) {
                f.write_str("=")?;
                for (k, s) in inner.iter().enumerate() {
                    if k > 0 {
                        f.write_str("/")?;
                    }
                    f.write_str(s.as_str())?;
                }
            }
            f.write_str("}")?;
            i = var.end.max(i + 1);
        }
        if let Some(verb) = &self.verb {
            write!(f, ":{verb}")?;
        }
        Ok(())
    }
}

/// Recursive-descent parser state; `pos` only ever advances over ASCII, so it is always a char boundary.
struct Parser<'a> {
    src: &'a str,
    pos: usize,
    segments: Vec<Segment>,
    variables: Vec<Variable>,
    /// Offset of a `**` already seen; any later segment is an error.
    multi_at: Option<usize>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.src.as_bytes().get(self.pos).copied()
    }

    fn unexpected(&self) -> TemplateError {
        match self
            .src
            .get(self.pos..)
            .and_then(|rest| rest.chars().next())
        {
            Some(found) => TemplateError::Unexpected {
                found,
                offset: self.pos,
            },
            None => TemplateError::UnexpectedEnd { offset: self.pos },
        }
    }

    fn parse(mut self) -> Result<PathTemplate, TemplateError> {
        match self.peek() {
            None => return Err(TemplateError::Empty),
            Some(b'/') => self.pos = 1,
            Some(_) => return Err(TemplateError::MissingLeadingSlash),
        }
        // The grammar requires at least one segment, but "/" is accepted as
        // the root template (as Envoy and grpc-gateway do) so the root path
        // can be routed; "/:verb" stays invalid.
        if self.src.len() > 1 {
            self.parse_segments(false)?;
        }
        let verb = if self.peek() == Some(b':') {
            self.pos += 1;
            let start = self.pos;
            let verb = self.parse_literal()?;
            if verb.is_empty() {
                return Err(match self.peek() {
                    None => TemplateError::EmptyVerb { offset: start },
                    Some(_) => self.unexpected(),
                });
            }
            Some(verb)
        } else {
            None
        };
        if self.peek().is_some() {
            return Err(self.unexpected());
        }
        Ok(PathTemplate {
            segments: self.segments,
            variables: self.variables,
            verb,
        })
    }

    fn parse_segments(&mut self, in_variable: bool) -> Result<(), TemplateError> {
        loop {
            self.parse_segment(in_variable)?;
            if self.peek() != Some(b'/') {
                return Ok(());
            }
            self.pos += 1;
        }
    }

    fn parse_segment(&mut self, in_variable: bool) -> Result<(), TemplateError> {
        let offset = self.pos;
        if let Some(at) = self.multi_at {
            return Err(TemplateError::MultiNotLast { offset: at });
        }
        match self.peek() {
            None | Some(b'/' | b':') => Err(TemplateError::EmptySegment { offset }),
            Some(b'}') if in_variable => Err(TemplateError::EmptySegment { offset }),
            Some(b'{') if in_variable => Err(TemplateError::NestedVariable { offset }),
            Some(b'{') => self.parse_variable(),
            Some(b'*') => {
                if self.src.as_bytes().get(offset + 1) == Some(&b'*') {
                    self.pos += 2;
                    self.multi_at = Some(offset);
                    self.segments.push(Segment::Multi);
                } else {
                    self.pos += 1;
                    self.segments.push(Segment::Single);
                }
                Ok(())
            }
            Some(_) => {
                let literal = self.parse_literal()?;
                if literal.is_empty() {
                    return Err(self.unexpected());
                }
                if literal == "." || literal == ".." {
                    return Err(TemplateError::DotSegment { literal, offset });
                }
                self.segments.push(Segment::Literal(literal));
                Ok(())
            }
        }
    }

    fn parse_variable(&mut self) -> Result<(), TemplateError> {
        let open = self.pos;
        self.pos += 1;
        let path_offset = self.pos;
        let field_path = self.parse_field_path(open)?;
        if self.variables.iter().any(|v| v.field_path == field_path) {
            return Err(TemplateError::DuplicateVariable {
                name: field_path.join("."),
                offset: path_offset,
            });
        }
        let start = self.segments.len();
        if self.peek() == Some(b'=') {
            self.pos += 1;
            self.parse_segments(true)?;
        } else {
            self.segments.push(Segment::Single);
        }
        match self.peek() {
            Some(b'}') => self.pos += 1,
            None => return Err(TemplateError::UnclosedVariable { offset: open }),
            Some(_) => return Err(self.unexpected()),
        }
        self.variables.push(Variable {
            field_path,
            start,
            end: self.segments.len(),
        });
        Ok(())
    }

    fn parse_field_path(&mut self, open: usize) -> Result<Vec<String>, TemplateError> {
        let mut path = Vec::new();
        loop {
            let start = self.pos;
            match self.peek() {
                None => return Err(TemplateError::UnclosedVariable { offset: open }),
                Some(b'{') => return Err(TemplateError::NestedVariable { offset: start }),
                Some(c) if c.is_ascii_alphabetic() || c == b'_' => self.pos += 1,
                Some(_) => return Err(TemplateError::InvalidFieldPath { offset: start }),
            }
            while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == b'_') {
                self.pos += 1;
            }
            path.push(self.src[start..self.pos].to_owned());
            if self.peek() != Some(b'.') {
                return Ok(path);
            }
            self.pos += 1;
        }
    }

    /// Consumes a (possibly empty) run of literal characters, returning its normalised form.
    fn parse_literal(&mut self) -> Result<String, TemplateError> {
        let mut out = String::new();
        while let Some(b) = self.peek() {
            if b == b'%' {
                let offset = self.pos;
                let byte = self
                    .src
                    .as_bytes()
                    .get(offset + 1..offset + 3)
                    .and_then(decode_hex_pair)
                    .ok_or(TemplateError::InvalidEscape { offset })?;
                push_normalized_escape(&mut out, byte);
                self.pos += 3;
            } else if is_literal_byte(b) {
                out.push(char::from(b));
                self.pos += 1;
            } else {
                break;
            }
        }
        Ok(out)
    }
}

/// Characters allowed raw in a LITERAL: pchar minus the template metacharacters `* = :` (and `%`, handled as escapes).
fn is_literal_byte(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'+' | b',' | b';' | b'@'
        )
}

#[cfg(test)]
mod tests;
