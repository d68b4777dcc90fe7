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
mod tests {
    use super::*;

    fn parse(s: &str) -> PathTemplate {
        match s.parse() {
            Ok(t) => t,
            Err(e) => panic!("{s:?} should parse, got {e}"),
        }
    }

    fn err(s: &str) -> TemplateError {
        match s.parse::<PathTemplate>() {
            Ok(t) => panic!("{s:?} should be rejected, got {t:?}"),
            Err(e) => e,
        }
    }

    fn lit(s: &str) -> Segment {
        Segment::Literal(s.to_owned())
    }

    fn var(path: &[&str], start: usize, end: usize) -> Variable {
        Variable {
            field_path: path.iter().map(|s| (*s).to_owned()).collect(),
            start,
            end,
        }
    }

    #[test]
    fn variable_with_literal_prefix_covers_two_segments() {
        // http.proto: get: "/v1/{name=messages/*}"
        let t = parse("/v1/{name=messages/*}");
        assert_eq!(t.segments, [lit("v1"), lit("messages"), Segment::Single]);
        assert_eq!(t.variables, [var(&["name"], 1, 3)]);
        assert_eq!(t.verb, None);
        assert_eq!(t.to_string(), "/v1/{name=messages/*}");
        assert_eq!(t.shape(), "/v1/messages/*");
    }

    #[test]
    fn bare_variable_is_single_segment() {
        // http.proto: get: "/v1/messages/{message_id}" (also put/patch)
        let t = parse("/v1/messages/{message_id}");
        assert_eq!(t.segments, [lit("v1"), lit("messages"), Segment::Single]);
        assert_eq!(t.variables, [var(&["message_id"], 2, 3)]);
    }

    #[test]
    fn dotted_field_path_is_split() {
        // http.proto: get: "/v1/messages/{message_id}/{sub.subfield}"
        let t = parse("/v1/messages/{message_id}/{sub.subfield}");
        assert_eq!(
            t.variables,
            [var(&["message_id"], 2, 3), var(&["sub", "subfield"], 3, 4)]
        );
        assert_eq!(t.to_string(), "/v1/messages/{message_id}/{sub.subfield}");
    }

    #[test]
    fn two_variables_with_literals_between() {
        // http.proto additional_bindings: "/v1/users/{user_id}/messages/{message_id}"
        let t = parse("/v1/users/{user_id}/messages/{message_id}");
        assert_eq!(
            t.variables,
            [var(&["user_id"], 2, 3), var(&["message_id"], 4, 5)]
        );
        assert_eq!(t.shape(), "/v1/users/*/messages/*");
    }

    #[test]
    fn var_and_var_star_are_equivalent() {
        // http.proto: "`{var}` is equivalent to `{var=*}`"
        assert_eq!(parse("/{var}"), parse("/{var=*}"));
        assert_eq!(parse("/{var=*}").to_string(), "/{var}");
    }

    #[test]
    fn variable_over_foo_star_and_double_star() {
        // http.proto: `{var=foo/*}` and `{var=**}`
        let t = parse("/{var=foo/*}");
        assert_eq!(t.segments, [lit("foo"), Segment::Single]);
        assert_eq!(t.variables, [var(&["var"], 0, 2)]);
        let t = parse("/v1/{var=**}");
        assert_eq!(t.segments, [lit("v1"), Segment::Multi]);
        assert_eq!(t.variables, [var(&["var"], 1, 2)]);
        assert_eq!(t.to_string(), "/v1/{var=**}");
    }

    #[test]
    fn resource_name_variable_then_trailing_double_star() {
        let t = parse("/v1/{name=projects/*/locations/*}/**");
        assert_eq!(
            t.segments,
            [
                lit("v1"),
                lit("projects"),
                Segment::Single,
                lit("locations"),
                Segment::Single,
                Segment::Multi
            ]
        );
        assert_eq!(t.variables, [var(&["name"], 1, 5)]);
        assert_eq!(t.shape(), "/v1/projects/*/locations/*/**");
    }

    #[test]
    fn nested_resource_name_variable() {
        let t = parse("/v1/{name=shelves/*/books/*}");
        assert_eq!(t.variables, [var(&["name"], 1, 5)]);
        assert_eq!(t.to_string(), "/v1/{name=shelves/*/books/*}");
    }

    #[test]
    fn custom_verbs_are_split_off() {
        let t = parse("/v1/users/{user_id}:get");
        assert_eq!(t.verb.as_deref(), Some("get"));
        assert_eq!(t.variables, [var(&["user_id"], 2, 3)]);
        let t = parse("/v1/messages:batchGet");
        assert_eq!(t.segments, [lit("v1"), lit("messages")]);
        assert_eq!(t.verb.as_deref(), Some("batchGet"));
        let t = parse("/v1/{name=operations/**}:cancel");
        assert_eq!(t.segments.last(), Some(&Segment::Multi));
        assert_eq!(t.to_string(), "/v1/{name=operations/**}:cancel");
        assert_eq!(t.shape(), "/v1/operations/**:cancel");
    }

    #[test]
    fn bare_wildcards_are_segments_without_variables() {
        let t = parse("/v1/*/x/**");
        assert_eq!(
            t.segments,
            [lit("v1"), Segment::Single, lit("x"), Segment::Multi]
        );
        assert!(t.variables.is_empty());
    }

    #[test]
    fn root_template_has_no_segments() {
        let t = parse("/");
        assert!(t.segments.is_empty());
        assert_eq!(t.to_string(), "/");
        assert_eq!(t.shape(), "/");
    }

    #[test]
    fn literals_are_normalised_like_paths() {
        let t = parse("/v1/%7euser%2fx/{a=%41b}");
        assert_eq!(t.segments, [lit("v1"), lit("~user%2Fx"), lit("Ab")]);
        assert_eq!(t.to_string(), "/v1/~user%2Fx/{a=Ab}");
        assert_eq!(parse("/a:%62%3a").verb.as_deref(), Some("b%3A"));
    }

    #[test]
    fn literal_accepts_sub_delims_and_at() {
        let t = parse("/a!$&'()+,;@-._~");
        assert_eq!(t.segments, [lit("a!$&'()+,;@-._~")]);
    }

    #[test]
    fn empty_template_is_rejected() {
        assert_eq!(err(""), TemplateError::Empty);
    }

    #[test]
    fn missing_leading_slash_is_rejected() {
        assert_eq!(err("v1/a"), TemplateError::MissingLeadingSlash);
    }

    #[test]
    fn unclosed_brace_is_rejected() {
        assert_eq!(
            err("/v1/{name"),
            TemplateError::UnclosedVariable { offset: 4 }
        );
        assert_eq!(
            err("/v1/{name=a/*"),
            TemplateError::UnclosedVariable { offset: 4 }
        );
        assert_eq!(err("/v1/{"), TemplateError::UnclosedVariable { offset: 4 });
    }

    #[test]
    fn nested_variable_is_rejected() {
        assert_eq!(
            err("/v1/{a={b}}"),
            TemplateError::NestedVariable { offset: 7 }
        );
        assert_eq!(
            err("/v1/{a=x/{b}}"),
            TemplateError::NestedVariable { offset: 9 }
        );
        assert_eq!(err("/{{a}}"), TemplateError::NestedVariable { offset: 2 });
    }

    #[test]
    fn double_star_not_last_is_rejected() {
        assert_eq!(err("/v1/**/a"), TemplateError::MultiNotLast { offset: 4 });
        assert_eq!(
            err("/v1/{a=**}/b"),
            TemplateError::MultiNotLast { offset: 7 }
        );
        assert_eq!(err("/**/**"), TemplateError::MultiNotLast { offset: 1 });
        assert_eq!(
            err("/v1/**/a").to_string(),
            "'**' must be the last segment (offset 4)"
        );
    }

    #[test]
    fn bad_identifiers_are_rejected() {
        assert_eq!(err("/{1a}"), TemplateError::InvalidFieldPath { offset: 2 });
        assert_eq!(err("/{a.}"), TemplateError::InvalidFieldPath { offset: 4 });
        assert_eq!(err("/{}"), TemplateError::InvalidFieldPath { offset: 2 });
        assert_eq!(
            err("/{a-b}"),
            TemplateError::Unexpected {
                found: '-',
                offset: 3
            }
        );
    }

    #[test]
    fn duplicate_variable_is_rejected() {
        let e = err("/v1/{name}/x/{name=a/*}");
        assert_eq!(
            e,
            TemplateError::DuplicateVariable {
                name: "name".into(),
                offset: 14
            }
        );
        assert_eq!(
            e.to_string(),
            "variable 'name' appears twice (again at offset 14)"
        );
        assert!(matches!(
            err("/{a.b}/{a.b}"),
            TemplateError::DuplicateVariable { .. }
        ));
    }

    #[test]
    fn distinct_field_paths_sharing_a_prefix_are_allowed() {
        assert_eq!(parse("/{a}/{a.b}").variables.len(), 2);
    }

    #[test]
    fn empty_segments_are_rejected() {
        assert_eq!(err("/v1//a"), TemplateError::EmptySegment { offset: 4 });
        assert_eq!(err("/v1/"), TemplateError::EmptySegment { offset: 4 });
        assert_eq!(err("//"), TemplateError::EmptySegment { offset: 1 });
        assert_eq!(err("/{a=}"), TemplateError::EmptySegment { offset: 4 });
        assert_eq!(err("/:verb"), TemplateError::EmptySegment { offset: 1 });
    }

    #[test]
    fn empty_verb_is_rejected() {
        assert_eq!(err("/v1/a:"), TemplateError::EmptyVerb { offset: 6 });
    }

    #[test]
    fn verb_must_be_last_and_single() {
        assert_eq!(
            err("/v1/a:b:c"),
            TemplateError::Unexpected {
                found: ':',
                offset: 7
            }
        );
        assert_eq!(
            err("/v1/a:b/c"),
            TemplateError::Unexpected {
                found: '/',
                offset: 7
            }
        );
    }

    #[test]
    fn unexpected_characters_report_offset() {
        let e = err("/v1/messages}/{id}");
        assert_eq!(e.to_string(), "unexpected '}' at offset 12");
        assert_eq!(
            err("/a?b"),
            TemplateError::Unexpected {
                found: '?',
                offset: 2
            }
        );
        assert_eq!(
            err("/a=b"),
            TemplateError::Unexpected {
                found: '=',
                offset: 2
            }
        );
        assert_eq!(
            err("/*a"),
            TemplateError::Unexpected {
                found: 'a',
                offset: 2
            }
        );
        assert_eq!(
            err("/caf\u{e9}"),
            TemplateError::Unexpected {
                found: '\u{e9}',
                offset: 4
            }
        );
    }

    #[test]
    fn invalid_escape_is_rejected() {
        assert_eq!(err("/a%G1"), TemplateError::InvalidEscape { offset: 2 });
        assert_eq!(err("/a%4"), TemplateError::InvalidEscape { offset: 2 });
    }

    #[test]
    fn dot_segment_literals_are_rejected() {
        assert!(matches!(
            err("/a/../b"),
            TemplateError::DotSegment { offset: 3, .. }
        ));
        assert!(matches!(
            err("/%2E"),
            TemplateError::DotSegment { offset: 1, .. }
        ));
        assert_eq!(parse("/a/..b").segments, [lit("a"), lit("..b")]);
    }

    #[test]
    fn equal_shapes_erase_variable_names() {
        assert_eq!(
            parse("/v1/{a}/books/{b=**}:x").shape(),
            parse("/v1/*/books/**:x").shape()
        );
        assert_ne!(parse("/v1/{a}").shape(), parse("/v1/{a}:x").shape());
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        fn ident() -> impl Strategy<Value = String> {
            "[A-Za-z_][A-Za-z0-9_]{0,5}"
        }

        fn literal() -> impl Strategy<Value = String> {
            proptest::collection::vec(
                prop_oneof![
                    "[A-Za-z0-9._~!$&'()+,;@-]",
                    Just("%2f".to_owned()),
                    Just("%7E".to_owned()),
                    Just("%c3%a9".to_owned()),
                ],
                1..5,
            )
            .prop_map(|parts| parts.concat())
            .prop_filter("dot segments are rejected", |s| s != "." && s != "..")
        }

        fn plain_segment() -> impl Strategy<Value = String> {
            prop_oneof![literal(), Just("*".to_owned())]
        }

        /// Template source text: plain parts, variables (with or without `=`), optional `**` tail and verb.
        fn template_source() -> impl Strategy<Value = String> {
            (
                proptest::collection::vec(
                    prop_oneof![
                        plain_segment().prop_map(|s| (None, vec![s])),
                        (
                            proptest::collection::vec(ident(), 1..3),
                            proptest::collection::vec(plain_segment(), 0..3)
                        )
                            .prop_map(|(path, inner)| (Some(path.join(".")), inner)),
                    ],
                    0..5,
                ),
                prop_oneof![
                    Just(None),
                    Just(Some((None, vec![]))),
                    (ident(), proptest::collection::vec(plain_segment(), 0..2))
                        .prop_map(|(name, prefix)| Some((Some(name), prefix))),
                ],
                proptest::option::of(literal()),
            )
                .prop_map(|(parts, tail, verb)| {
                    let mut out = Vec::new();
                    for (i, (name, inner)) in parts.into_iter().enumerate() {
                        out.push(match name {
                            None => inner.concat(),
                            // Suffix the index so field paths are unique.
                            Some(name) if inner.is_empty() => format!("{{{name}{i}}}"),
                            Some(name) => format!("{{{name}{i}={}}}", inner.join("/")),
                        });
                    }
                    match tail {
                        None => {}
                        Some((None, _)) => out.push("**".to_owned()),
                        Some((Some(name), mut prefix)) => {
                            prefix.push("**".to_owned());
                            out.push(format!("{{{name}_tail={}}}", prefix.join("/")));
                        }
                    }
                    let mut s = format!("/{}", out.join("/"));
                    if let Some(verb) = verb.filter(|_| !out.is_empty()) {
                        s.push(':');
                        s.push_str(&verb);
                    }
                    s
                })
        }

        proptest! {
            #[test]
            fn display_round_trips(src in template_source()) {
                let t: PathTemplate = src.parse().map_err(|e| TestCaseError::fail(format!("{src}: {e}")))?;
                let shown = t.to_string();
                let again: PathTemplate = shown.parse().map_err(|e| TestCaseError::fail(format!("{shown}: {e}")))?;
                prop_assert_eq!(&again, &t);
                prop_assert_eq!(again.to_string(), shown);
            }

            #[test]
            fn parse_never_panics(src in "[/{}=*:.a-z%0-9_?]{0,24}") {
                let _ = src.parse::<PathTemplate>();
            }
        }
    }
}
