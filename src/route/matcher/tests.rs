//! Tests of the matcher.

use super::super::path::normalize;
use super::*;

fn t(s: &str) -> PathTemplate {
    match s.parse() {
        Ok(t) => t,
        Err(e) => panic!("{s:?} should parse, got {e}"),
    }
}

fn matcher(routes: &[(Method, &str)]) -> Matcher<&'static str> {
    let mut b = MatcherBuilder::new();
    for (method, src) in routes {
        // Leak so values can borrow the template text for easy assertions.
        let value: &'static str = Box::leak(src.to_string().into_boxed_str());
        if let Err(e) = b.insert(method.clone(), t(src), value) {
            panic!("inserting {src}: {e}");
        }
    }
    b.build()
}

/// Template source of the hit, and captures keyed by dotted field path.
type Found = (&'static str, Vec<(String, String)>);

/// Returns (template source, captures by dotted field path).
fn find(m: &Matcher<&'static str>, method: Method, raw: &str) -> Result<Found, MatchError> {
    let path = match normalize(raw) {
        Ok(p) => p,
        Err(e) => panic!("{raw:?} should normalise, got {e}"),
    };
    let hit = m.find(&method, &path)?;
    let caps = hit
        .captures
        .iter()
        .map(|(i, v)| (hit.template.variables[*i].field_path.join("."), v.clone()))
        .collect();
    Ok((*hit.value, caps))
}

fn caps(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn http_proto_name_messages_star() {
    let m = matcher(&[(Method::GET, "/v1/{name=messages/*}")]);
    assert_eq!(
        find(&m, Method::GET, "/v1/messages/123456"),
        Ok((
            "/v1/{name=messages/*}",
            caps(&[("name", "messages/123456")])
        ))
    );
    assert_eq!(
        find(&m, Method::GET, "/v1/other/123456"),
        Err(MatchError::NotFound)
    );
}

#[test]
fn http_proto_message_id_and_sub_subfield() {
    let m = matcher(&[
        (Method::GET, "/v1/messages/{message_id}"),
        (Method::GET, "/v1/messages/{message_id}/{sub.subfield}"),
        (Method::PATCH, "/v1/messages/{message_id}"),
    ]);
    assert_eq!(
        find(&m, Method::GET, "/v1/messages/123456"),
        Ok((
            "/v1/messages/{message_id}",
            caps(&[("message_id", "123456")])
        ))
    );
    assert_eq!(
        find(&m, Method::GET, "/v1/messages/123456/foo"),
        Ok((
            "/v1/messages/{message_id}/{sub.subfield}",
            caps(&[("message_id", "123456"), ("sub.subfield", "foo")])
        ))
    );
    assert_eq!(
        find(&m, Method::PATCH, "/v1/messages/123456").map(|(v, _)| v),
        Ok("/v1/messages/{message_id}")
    );
}

#[test]
fn http_proto_additional_binding_with_user_id() {
    let m = matcher(&[
        (Method::GET, "/v1/messages/{message_id}"),
        (Method::GET, "/v1/users/{user_id}/messages/{message_id}"),
    ]);
    assert_eq!(
        find(&m, Method::GET, "/v1/users/me/messages/123456"),
        Ok((
            "/v1/users/{user_id}/messages/{message_id}",
            caps(&[("user_id", "me"), ("message_id", "123456")])
        ))
    );
}

#[test]
fn resource_name_with_trailing_double_star() {
    let m = matcher(&[(Method::GET, "/v1/{name=projects/*/locations/*}/**")]);
    assert_eq!(
        find(&m, Method::GET, "/v1/projects/p/locations/l/x/y"),
        Ok((
            "/v1/{name=projects/*/locations/*}/**",
            caps(&[("name", "projects/p/locations/l")])
        ))
    );
    assert_eq!(
        find(&m, Method::GET, "/v1/projects/p/locations/l").map(|(_, c)| c),
        Ok(caps(&[("name", "projects/p/locations/l")]))
    );
}

#[test]
fn shelves_books_name() {
    let m = matcher(&[(Method::GET, "/v1/{name=shelves/*/books/*}")]);
    assert_eq!(
        find(&m, Method::GET, "/v1/shelves/s1/books/b%202").map(|(_, c)| c),
        Ok(caps(&[("name", "shelves/s1/books/b 2")]))
    );
    assert_eq!(
        find(&m, Method::GET, "/v1/shelves/s1/books"),
        Err(MatchError::NotFound)
    );
}

#[test]
fn double_star_variable_captures_rest_including_zero_segments() {
    let m = matcher(&[(Method::GET, "/v1/{name=**}")]);
    assert_eq!(
        find(&m, Method::GET, "/v1/a/b/c").map(|(_, c)| c),
        Ok(caps(&[("name", "a/b/c")]))
    );
    assert_eq!(
        find(&m, Method::GET, "/v1").map(|(_, c)| c),
        Ok(caps(&[("name", "")]))
    );
    assert_eq!(
        find(&m, Method::GET, "/v1/a/").map(|(_, c)| c),
        Ok(caps(&[("name", "a/")]))
    );
}

#[test]
fn custom_verb_templates_match_with_verb() {
    let m = matcher(&[
        (Method::GET, "/v1/users/{user_id}:get"),
        (Method::POST, "/v1/messages:batchGet"),
        (Method::POST, "/v1/{name=operations/**}:cancel"),
    ]);
    assert_eq!(
        find(&m, Method::GET, "/v1/users/u-42:get"),
        Ok(("/v1/users/{user_id}:get", caps(&[("user_id", "u-42")])))
    );
    assert_eq!(
        find(&m, Method::POST, "/v1/messages:batchGet"),
        Ok(("/v1/messages:batchGet", vec![]))
    );
    assert_eq!(
        find(&m, Method::POST, "/v1/operations/a/b:cancel").map(|(_, c)| c),
        Ok(caps(&[("name", "operations/a/b")]))
    );
    assert_eq!(
        find(&m, Method::GET, "/v1/users/u-42"),
        Err(MatchError::NotFound)
    );
    assert_eq!(
        find(&m, Method::POST, "/v1/messages:other"),
        Err(MatchError::NotFound)
    );
}

#[test]
fn verb_template_wins_over_verbless_when_both_exist() {
    let m = matcher(&[
        (Method::GET, "/v1/users/{id}"),
        (Method::GET, "/v1/users/{id}:get"),
    ]);
    assert_eq!(
        find(&m, Method::GET, "/v1/users/u-42:get"),
        Ok(("/v1/users/{id}:get", caps(&[("id", "u-42")])))
    );
}

#[test]
fn unknown_verb_falls_back_to_verbless_capture() {
    let m = matcher(&[(Method::GET, "/v1/users/{id}")]);
    assert_eq!(
        find(&m, Method::GET, "/v1/users/u-42:get"),
        Ok(("/v1/users/{id}", caps(&[("id", "u-42:get")])))
    );
}

#[test]
fn verb_is_split_at_last_colon() {
    let m = matcher(&[(Method::GET, "/v1/{x}:b")]);
    assert_eq!(
        find(&m, Method::GET, "/v1/a:c:b").map(|(_, c)| c),
        Ok(caps(&[("x", "a:c")]))
    );
}

#[test]
fn encoded_colon_is_not_a_verb_separator() {
    let m = matcher(&[(Method::GET, "/v1/{x}:get"), (Method::GET, "/v1/{x}")]);
    assert_eq!(
        find(&m, Method::GET, "/v1/a%3Aget"),
        Ok(("/v1/{x}", caps(&[("x", "a:get")])))
    );
}

#[test]
fn literal_beats_variable() {
    for routes in [
        [
            (Method::GET, "/v1/users/me"),
            (Method::GET, "/v1/users/{id}"),
        ],
        [
            (Method::GET, "/v1/users/{id}"),
            (Method::GET, "/v1/users/me"),
        ],
    ] {
        let m = matcher(&routes);
        assert_eq!(
            find(&m, Method::GET, "/v1/users/me").map(|(v, _)| v),
            Ok("/v1/users/me")
        );
        assert_eq!(
            find(&m, Method::GET, "/v1/users/bob").map(|(v, _)| v),
            Ok("/v1/users/{id}")
        );
    }
}

#[test]
fn single_beats_double_star() {
    let m = matcher(&[(Method::GET, "/v1/{rest=**}"), (Method::GET, "/v1/{id}")]);
    assert_eq!(
        find(&m, Method::GET, "/v1/a").map(|(v, _)| v),
        Ok("/v1/{id}")
    );
    assert_eq!(
        find(&m, Method::GET, "/v1/a/b").map(|(v, _)| v),
        Ok("/v1/{rest=**}")
    );
}

#[test]
fn exact_end_beats_double_star_matching_nothing() {
    let m = matcher(&[(Method::GET, "/v1/a/**"), (Method::GET, "/v1/a")]);
    assert_eq!(find(&m, Method::GET, "/v1/a").map(|(v, _)| v), Ok("/v1/a"));
    assert_eq!(
        find(&m, Method::GET, "/v1/a/b").map(|(v, _)| v),
        Ok("/v1/a/**")
    );
}

#[test]
fn backtracks_when_literal_branch_dead_ends() {
    let m = matcher(&[(Method::GET, "/v1/a/b"), (Method::GET, "/v1/{x}/c")]);
    assert_eq!(
        find(&m, Method::GET, "/v1/a/c"),
        Ok(("/v1/{x}/c", caps(&[("x", "a")])))
    );
}

#[test]
fn backtracks_past_literal_that_lacks_the_method() {
    let m = matcher(&[(Method::GET, "/v1/a"), (Method::POST, "/v1/{x}")]);
    assert_eq!(
        find(&m, Method::POST, "/v1/a"),
        Ok(("/v1/{x}", caps(&[("x", "a")])))
    );
}

#[test]
fn method_not_allowed_lists_union_of_matching_templates_sorted() {
    let m = matcher(&[
        (Method::POST, "/v1/a"),
        (Method::DELETE, "/v1/a"),
        (Method::GET, "/v1/{x}"),
        (Method::PATCH, "/v1/{x}"),
        (Method::GET, "/v1/a/b"),
        (Method::PUT, "/v2/{x}"),
    ]);
    let err = find(&m, Method::PUT, "/v1/a");
    assert_eq!(
        err,
        Err(MatchError::MethodNotAllowed {
            allowed: vec![Method::DELETE, Method::GET, Method::PATCH, Method::POST]
        })
    );
    assert_eq!(
        err.err().map(|e| e.to_string()).as_deref(),
        Some("method not allowed; allowed: DELETE, GET, PATCH, POST")
    );
}

#[test]
fn method_not_allowed_unions_verb_and_verbless_interpretations() {
    let m = matcher(&[
        (Method::POST, "/v1/{x}:cancel"),
        (Method::GET, "/v1/{x}"),
        (Method::DELETE, "/v1/{x}"),
    ]);
    assert_eq!(
        find(&m, Method::PUT, "/v1/op:cancel"),
        Err(MatchError::MethodNotAllowed {
            allowed: vec![Method::DELETE, Method::GET, Method::POST]
        })
    );
}

#[test]
fn allowed_methods_are_deduplicated() {
    let m = matcher(&[(Method::GET, "/v1/a"), (Method::GET, "/v1/{x}")]);
    assert_eq!(
        find(&m, Method::POST, "/v1/a"),
        Err(MatchError::MethodNotAllowed {
            allowed: vec![Method::GET]
        })
    );
}

#[test]
fn custom_method_tokens_are_routed() {
    let list = Method::from_bytes(b"LIST").expect("valid token");
    let m = matcher(&[(list.clone(), "/v1/things")]);
    assert_eq!(
        find(&m, list.clone(), "/v1/things").map(|(v, _)| v),
        Ok("/v1/things")
    );
    assert_eq!(
        find(&m, Method::GET, "/v1/things"),
        Err(MatchError::MethodNotAllowed {
            allowed: vec![list]
        })
    );
}

#[test]
fn unmatched_path_is_not_found() {
    let m = matcher(&[(Method::GET, "/v1/a/{x}")]);
    assert_eq!(find(&m, Method::GET, "/v1/a"), Err(MatchError::NotFound));
    assert_eq!(
        find(&m, Method::GET, "/v1/a/b/c"),
        Err(MatchError::NotFound)
    );
    assert_eq!(find(&m, Method::GET, "/"), Err(MatchError::NotFound));
    let empty: Matcher<()> = MatcherBuilder::new().build();
    assert!(empty.is_empty());
    let root = normalize("/").expect("valid");
    assert!(matches!(
        empty.find(&Method::GET, &root),
        Err(MatchError::NotFound)
    ));
}

#[test]
fn root_template_matches_root_path_only() {
    let m = matcher(&[(Method::GET, "/")]);
    assert_eq!(find(&m, Method::GET, "/").map(|(v, _)| v), Ok("/"));
    assert_eq!(find(&m, Method::GET, "//").map(|(v, _)| v), Ok("/"));
    assert_eq!(find(&m, Method::GET, "/a"), Err(MatchError::NotFound));
}

#[test]
fn trailing_slash_does_not_match_slashless_template_or_bind_single() {
    let m = matcher(&[(Method::GET, "/v1/users"), (Method::GET, "/v1/users/{id}")]);
    assert_eq!(
        find(&m, Method::GET, "/v1/users/"),
        Err(MatchError::NotFound)
    );
}

#[test]
fn single_segment_variable_decodes_encoded_slash() {
    let m = matcher(&[(Method::GET, "/v1/{x}")]);
    assert_eq!(
        find(&m, Method::GET, "/v1/a%2fb%20c%C3%A9").map(|(_, c)| c),
        Ok(caps(&[("x", "a/b c\u{e9}")]))
    );
}

#[test]
fn single_literal_variable_is_fully_decoded() {
    let m = matcher(&[(Method::GET, "/v1/{x=a%2Fb}")]);
    assert_eq!(
        find(&m, Method::GET, "/v1/a%2fb").map(|(_, c)| c),
        Ok(caps(&[("x", "a/b")]))
    );
}

#[test]
fn multi_segment_variable_keeps_encoded_slash() {
    let m = matcher(&[(Method::GET, "/v1/{x=a/*}"), (Method::GET, "/v2/{x=**}")]);
    assert_eq!(
        find(&m, Method::GET, "/v1/a/b%2Fc%20d").map(|(_, c)| c),
        Ok(caps(&[("x", "a/b%2Fc d")]))
    );
    // Lower-case input is upper-cased by normalisation, then kept.
    assert_eq!(
        find(&m, Method::GET, "/v2/p%2fq/%25%32%46").map(|(_, c)| c),
        Ok(caps(&[("x", "p%2Fq/%2F")]))
    );
}

#[test]
fn double_star_of_one_segment_still_keeps_encoded_slash() {
    let m = matcher(&[(Method::GET, "/v1/{x=**}")]);
    assert_eq!(
        find(&m, Method::GET, "/v1/a%2Fb").map(|(_, c)| c),
        Ok(caps(&[("x", "a%2Fb")]))
    );
}

#[test]
fn invalid_utf8_capture_is_bad_encoding() {
    let m = matcher(&[(Method::GET, "/v1/{a.b}")]);
    let err = find(&m, Method::GET, "/v1/%FF");
    assert!(
        matches!(&err, Err(MatchError::BadEncoding { variable, .. }) if variable == "a.b"),
        "{err:?}"
    );
}

#[test]
fn literals_match_after_normalisation() {
    let m = matcher(&[(Method::GET, "/v1/%7Euser/x%2fy")]);
    assert_eq!(
        find(&m, Method::GET, "/v1/~user/x%2Fy").map(|(v, _)| v),
        Ok("/v1/%7Euser/x%2fy")
    );
    assert_eq!(
        find(&m, Method::GET, "/v1/%7euser/x%2fy").map(|(v, _)| v),
        Ok("/v1/%7Euser/x%2fy")
    );
    assert_eq!(
        find(&m, Method::GET, "/v1/~user/x/y"),
        Err(MatchError::NotFound)
    );
}

#[test]
fn equal_shapes_conflict_for_the_same_method() {
    let mut b = MatcherBuilder::new();
    assert_eq!(b.insert(Method::GET, t("/v1/{a}/x"), 1), Ok(()));
    assert_eq!(
        b.insert(Method::GET, t("/v1/{b=*}/x"), 2),
        Err(Conflict {
            existing_template: "/v1/{a}/x".into()
        })
    );
    assert!(b.insert(Method::GET, t("/v1/*/x"), 3).is_err());
    assert_eq!(b.insert(Method::POST, t("/v1/{b}/x"), 4), Ok(()));
    assert_eq!(b.insert(Method::GET, t("/v1/{b}/x:do"), 5), Ok(()));
    assert_eq!(b.insert(Method::GET, t("/v1/{b=**}"), 6), Ok(()));
    assert!(b.insert(Method::GET, t("/v1/**"), 7).is_err());
    // Different grouping of the same segments is still the same shape.
    assert!(b.insert(Method::POST, t("/v1/{a=*/x}"), 8).is_err());
    let m = b.build();
    assert_eq!(m.len(), 4);
    let p = normalize("/v1/q/x").expect("valid");
    assert_eq!(m.find(&Method::GET, &p).map(|h| *h.value), Ok(1));
}

#[test]
fn conflict_message_names_existing_template() {
    let mut b = MatcherBuilder::new();
    assert_eq!(b.insert(Method::GET, t("/v1/{a=*}"), ()), Ok(()));
    let e = b
        .insert(Method::GET, t("/v1/{b}"), ())
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        e.as_deref(),
        Some("route conflicts with existing template '/v1/{a}' (same method and shape)")
    );
}

#[test]
fn captures_index_template_variables_in_order() {
    let m = matcher(&[(Method::GET, "/{a}/{b=x/*}/{c=**}")]);
    let p = normalize("/1/x/2/3/4").expect("valid");
    let hit = m.find(&Method::GET, &p).expect("matches");
    assert_eq!(
        hit.captures,
        [
            (0, "1".to_owned()),
            (1, "x/2".to_owned()),
            (2, "3/4".to_owned())
        ]
    );
}

mod prop {
    use super::super::super::path::normalize;
    use super::super::*;
    use proptest::prelude::*;

    /// A path segment as (raw text, value when fully decoded, value when decoded keeping %2F).
    #[derive(Debug, Clone)]
    struct Piece {
        raw: String,
        single: String,
        multi: String,
    }

    fn piece() -> impl Strategy<Value = Piece> {
        let atom = prop_oneof![
            6 => "[A-Za-z0-9._~!$&'()+,;@-]".prop_map(|c| (c.clone(), c.clone(), c)),
            1 => Just(("%2f", "/", "%2F")).prop_map(own),
            1 => Just(("%2F", "/", "%2F")).prop_map(own),
            1 => Just(("%7e", "~", "~")).prop_map(own),
            1 => Just(("%20", " ", " ")).prop_map(own),
            1 => Just(("%c3%A9", "\u{e9}", "\u{e9}")).prop_map(own),
            1 => Just(("%25", "%", "%")).prop_map(own),
            1 => Just(("%3A", ":", ":")).prop_map(own),
        ];
        proptest::collection::vec(atom, 1..5)
            .prop_map(|atoms| {
                let mut p = Piece {
                    raw: String::new(),
                    single: String::new(),
                    multi: String::new(),
                };
                for (raw, single, multi) in atoms {
                    p.raw.push_str(&raw);
                    p.single.push_str(&single);
                    p.multi.push_str(&multi);
                }
                p
            })
            .prop_filter("dot segments vanish in normalisation", |p| {
                p.raw != "." && p.raw != ".."
            })
    }

    fn own((a, b, c): (&str, &str, &str)) -> (String, String, String) {
        (a.to_owned(), b.to_owned(), c.to_owned())
    }

    /// A template segment: literal (`true`) or `*` (`false`), with the path text that fills it.
    fn seg() -> impl Strategy<Value = (bool, Piece)> {
        (any::<bool>(), piece())
    }

    #[derive(Debug, Clone)]
    struct Case {
        template: String,
        path: String,
        expected: Vec<String>,
    }

    fn case() -> impl Strategy<Value = Case> {
        (
            proptest::collection::vec(
                (
                    any::<bool>(),
                    any::<bool>(),
                    proptest::collection::vec(seg(), 1..3),
                ),
                0..4,
            ),
            proptest::option::of((
                any::<bool>(),
                proptest::collection::vec(seg(), 0..2),
                proptest::collection::vec(piece(), 0..3),
            )),
            proptest::option::of("[A-Za-z0-9_~-]{1,5}"),
        )
            .prop_filter_map("needs a segment", |(parts, tail, verb)| {
                let mut tpl: Vec<String> = Vec::new();
                let mut path: Vec<String> = Vec::new();
                let mut expected = Vec::new();
                let text = |(is_lit, p): &(bool, Piece)| {
                    if *is_lit {
                        p.raw.clone()
                    } else {
                        "*".to_owned()
                    }
                };
                for (i, (is_var, short, segs)) in parts.iter().enumerate() {
                    path.extend(segs.iter().map(|(_, p)| p.raw.clone()));
                    if !is_var {
                        tpl.extend(segs.iter().map(text));
                        continue;
                    }
                    let inner: Vec<String> = segs.iter().map(text).collect();
                    tpl.push(if *short && inner == ["*"] {
                        format!("{{v{i}}}")
                    } else {
                        format!("{{v{i}={}}}", inner.join("/"))
                    });
                    expected.push(match segs.as_slice() {
                        [(_, p)] => p.single.clone(),
                        _ => join(segs.iter().map(|(_, p)| p.multi.as_str())),
                    });
                }
                if let Some((is_var, prefix, fill)) = &tail {
                    path.extend(prefix.iter().map(|(_, p)| p.raw.clone()));
                    path.extend(fill.iter().map(|p| p.raw.clone()));
                    let mut inner: Vec<String> = prefix.iter().map(text).collect();
                    inner.push("**".to_owned());
                    if *is_var {
                        tpl.push(format!("{{tail={}}}", inner.join("/")));
                        let vals = prefix.iter().map(|(_, p)| p.multi.as_str());
                        expected.push(join(vals.chain(fill.iter().map(|p| p.multi.as_str()))));
                    } else {
                        tpl.extend(inner);
                    }
                }
                if tpl.is_empty() {
                    return None;
                }
                let suffix = verb.map(|v| format!(":{v}")).unwrap_or_default();
                Some(Case {
                    template: format!("/{}{suffix}", tpl.join("/")),
                    path: format!("/{}{suffix}", path.join("/")),
                    expected,
                })
            })
    }

    fn join<'a>(parts: impl Iterator<Item = &'a str>) -> String {
        parts.collect::<Vec<_>>().join("/")
    }

    fn fixed_matcher() -> Matcher<usize> {
        let mut b = MatcherBuilder::new();
        let routes = [
            "/",
            "/v1/{name=messages/*}",
            "/v1/messages/{id}/sub",
            "/v1/messages/{id}:get",
            "/v1/{a}/{b=**}",
            "/v1/{a}/x/{b}",
            "/**",
            "/v1/{x=a/*/b/**}:do",
        ];
        for (i, src) in routes.iter().enumerate() {
            let tpl: PathTemplate = src.parse().expect("valid template");
            b.insert(Method::GET, tpl.clone(), i).expect("no conflict");
            b.insert(Method::POST, tpl, i).expect("no conflict");
        }
        b.build()
    }

    proptest! {
        #[test]
        fn rendered_path_matches_its_template(c in case()) {
            let tpl: PathTemplate = c.template.parse()
                .map_err(|e| TestCaseError::fail(format!("{}: {e}", c.template)))?;
            let mut b = MatcherBuilder::new();
            prop_assert!(b.insert(Method::GET, tpl.clone(), ()).is_ok());
            let m = b.build();
            let path = normalize(&c.path)
                .map_err(|e| TestCaseError::fail(format!("{}: {e}", c.path)))?;
            let hit = m.find(&Method::GET, &path)
                .map_err(|e| TestCaseError::fail(format!("{} !~ {}: {e}", c.path, c.template)))?;
            prop_assert_eq!(hit.template, &tpl);
            let got: Vec<String> = hit.captures.iter().map(|(_, v)| v.clone()).collect();
            prop_assert_eq!(got, c.expected);
        }

        #[test]
        fn find_never_panics(
            raw in prop_oneof![any::<String>(), "[/a-z%:.2F{}*\\\\x]{0,30}"],
            post in any::<bool>(),
        ) {
            let m = fixed_matcher();
            if let Ok(path) = normalize(&raw) {
                let method = if post { Method::POST } else { Method::PUT };
                let _ = m.find(&method, &path);
                let _ = m.find(&Method::GET, &path);
            }
        }
    }
}
