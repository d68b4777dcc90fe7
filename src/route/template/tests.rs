//! Tests of the template.

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
