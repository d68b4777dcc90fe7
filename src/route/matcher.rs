//! Compiled route matcher: a segment trie over path templates, keyed by verb and HTTP method.
//!
//! Why a trie: lookup cost depends on the path length and the number of
//! wildcard alternatives, not on the number of routes. Each trie node sits at
//! a fixed depth, so the backtracking search visits every node at most once.
//! Precedence is deterministic and independent of insertion order: at each
//! node the literal child is tried first, then the single-segment (`*`/`{x}`)
//! child, then `**`; the first template whose path, verb *and* method match
//! wins. Only when nothing matches the method do we pay for a second pass that
//! collects the `Allow` set for a 405.
//!
//! Captures are not recorded during the search: template segment `i` always
//! matched path segment `i` (only a trailing `**` spans more), so they are
//! sliced out of the path afterwards, once, for the winning template only.

use std::ops::ControlFlow;

use http::Method;
use percent_encoding::percent_decode_str;

use super::path::NormalizedPath;
use super::template::{PathTemplate, Segment};

/// Routes compiled into a segment trie; build with [`MatcherBuilder`].
#[derive(Debug, Clone)]
pub struct Matcher<T> {
    /// Node 0 is the root.
    nodes: Vec<Node>,
    routes: Vec<Route<T>>,
}

/// Accumulates routes, rejecting conflicts, then produces a [`Matcher`].
#[derive(Debug, Clone)]
pub struct MatcherBuilder<T> {
    matcher: Matcher<T>,
}

/// A successful lookup.
#[derive(Debug)]
pub struct Match<'a, T> {
    /// The value stored for the matched route.
    pub value: &'a T,
    /// The template that matched.
    pub template: &'a PathTemplate,
    /// `(index into template.variables, decoded value)` for every variable, in order.
    pub captures: Vec<(usize, String)>,
}

/// Why a lookup failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatchError {
    /// No template matches the path (404).
    #[error("no route matches the request path")]
    NotFound,
    /// Templates match the path, but none for this method (405).
    #[error("method not allowed; allowed: {}", join_methods(.allowed))]
    MethodNotAllowed {
        /// Methods accepted by any template matching the path, sorted and deduplicated.
        allowed: Vec<Method>,
    },
    /// A captured value is not valid UTF-8 after percent-decoding (400).
    #[error("path variable '{variable}' is badly encoded: {reason}")]
    BadEncoding {
        /// The variable's dotted field path.
        variable: String,
        /// What was wrong with the decoded bytes.
        reason: String,
    },
}

/// A route with the same method and shape already exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("route conflicts with existing template '{existing_template}' (same method and shape)")]
pub struct Conflict {
    /// The previously inserted template, in canonical form.
    pub existing_template: String,
}

#[derive(Debug, Clone)]
struct Route<T> {
    template: PathTemplate,
    value: T,
}

#[derive(Debug, Clone, Default)]
struct Node {
    /// Sorted by literal so lookup is a binary search without hashing.
    literals: Vec<(Box<str>, usize)>,
    single: Option<usize>,
    /// A leaf: `**` is always last, so it has endpoints but no children.
    multi: Option<usize>,
    endpoints: Vec<Endpoint>,
}

/// Routes ending at one node with one verb; verbs per node are few, so a Vec beats a map.
#[derive(Debug, Clone)]
struct Endpoint {
    verb: Option<Box<str>>,
    /// `(method, index into routes)`.
    methods: Vec<(Method, usize)>,
}

impl Node {
    fn endpoint(&self, verb: Option<&str>) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.verb.as_deref() == verb)
    }
}

impl Endpoint {
    fn route(&self, method: &Method) -> Option<usize> {
        self.methods
            .iter()
            .find_map(|(m, r)| (m == method).then_some(*r))
    }
}

/// The path's segments as seen by one matching attempt: the last one may have its verb cut off.
#[derive(Clone, Copy)]
struct Segs<'p> {
    path: &'p NormalizedPath,
    len: usize,
    last: &'p str,
}

impl<'p> Segs<'p> {
    fn get(&self, i: usize) -> &'p str {
        if i + 1 == self.len {
            self.last
        } else {
            self.path.segment(i).unwrap_or("")
        }
    }
}

impl<T> Default for MatcherBuilder<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> MatcherBuilder<T> {
    /// An empty builder.
    pub fn new() -> Self {
        Self {
            matcher: Matcher {
                nodes: vec![Node::default()],
                routes: Vec::new(),
            },
        }
    }

    /// Adds a route; fails if a template of the same shape is already registered for `method`.
    pub fn insert(
        &mut self,
        method: Method,
        template: PathTemplate,
        value: T,
    ) -> Result<(), Conflict> {
        let m = &mut self.matcher;
        let mut node = 0;
        for seg in &template.segments {
            node = m.child(node, seg);
        }
        let verb = template.verb.as_deref();
        let route_index = m.routes.len();
        let endpoints = &mut m.nodes[node].endpoints;
        let endpoint = match endpoints.iter().position(|e| e.verb.as_deref() == verb) {
            Some(i) => &mut endpoints[i],
            None => {
                endpoints.push(Endpoint {
                    verb: verb.map(Box::from),
                    methods: Vec::new(),
                });
                let last = endpoints.len() - 1;
                &mut endpoints[last]
            }
        };
        // Same node + same verb means same shape, so this is exactly the spec's conflict rule.
        if let Some(existing) = endpoint.route(&method) {
            return Err(Conflict {
                existing_template: m.routes[existing].template.to_string(),
            });
        }
        endpoint.methods.push((method, route_index));
        m.routes.push(Route { template, value });
        Ok(())
    }

    /// Freezes the routes into a [`Matcher`].
    pub fn build(self) -> Matcher<T> {
        self.matcher
    }
}

impl<T> Matcher<T> {
    /// Finds the route for `method` and `path`, decoding the template's variables.
    pub fn find(&self, method: &Method, path: &NormalizedPath) -> Result<Match<'_, T>, MatchError> {
        let attempts = Self::attempts(path);
        let mut path_matched = false;
        for (segs, verb) in attempts.into_iter().flatten() {
            let found = self.walk(0, &segs, 0, &mut |node| {
                match node.endpoint(verb).map(|e| e.route(method)) {
                    Some(Some(route)) => return ControlFlow::Break(route),
                    Some(None) => path_matched = true,
                    None => {}
                }
                ControlFlow::Continue(())
            });
            if let ControlFlow::Break(route) = found {
                return self.captures(route, &segs);
            }
        }
        if !path_matched {
            return Err(MatchError::NotFound);
        }
        // Slow path, 405 only: collect every method of every matching template.
        let mut allowed: Vec<Method> = Vec::new();
        for (segs, verb) in attempts.into_iter().flatten() {
            let _ = self.walk(0, &segs, 0, &mut |node| {
                if let Some(e) = node.endpoint(verb) {
                    allowed.extend(e.methods.iter().map(|(m, _)| m.clone()));
                }
                ControlFlow::<usize>::Continue(())
            });
        }
        allowed.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        allowed.dedup();
        Err(MatchError::MethodNotAllowed { allowed })
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether there are no routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The two interpretations of a path, in precedence order: verb split off, then verb-less.
    fn attempts(path: &NormalizedPath) -> [Option<(Segs<'_>, Option<&str>)>; 2] {
        let len = path.segment_count();
        let Some(last) = len.checked_sub(1).and_then(|i| path.segment(i)) else {
            // Root path: no last segment, so no verb.
            return [
                None,
                Some((
                    Segs {
                        path,
                        len,
                        last: "",
                    },
                    None,
                )),
            ];
        };
        // Template verbs cannot contain ':', so only the last ':' can start one.
        let with_verb = last
            .rsplit_once(':')
            .filter(|(_, verb)| !verb.is_empty())
            .map(|(head, verb)| {
                (
                    Segs {
                        path,
                        len,
                        last: head,
                    },
                    Some(verb),
                )
            });
        [with_verb, Some((Segs { path, len, last }, None))]
    }

    /// Depth-first search in precedence order, calling `visit` on every node where a template ends.
    fn walk<F>(&self, node: usize, segs: &Segs<'_>, i: usize, visit: &mut F) -> ControlFlow<usize>
    where
        F: FnMut(&Node) -> ControlFlow<usize>,
    {
        let Some(n) = self.nodes.get(node) else {
            return ControlFlow::Continue(());
        };
        if i == segs.len {
            visit(n)?;
        } else {
            let seg = segs.get(i);
            if let Ok(k) = n.literals.binary_search_by(|(lit, _)| (**lit).cmp(seg)) {
                self.walk(n.literals[k].1, segs, i + 1, visit)?;
            }
            // `*` is one segment, and a segment is never empty in the grammar;
            // only a trailing slash produces an empty one, and it must not bind `{x}`.
            if let Some(child) = n.single.filter(|_| !seg.is_empty()) {
                self.walk(child, segs, i + 1, visit)?;
            }
        }
        if let Some(leaf) = n.multi.and_then(|m| self.nodes.get(m)) {
            visit(leaf)?;
        }
        ControlFlow::Continue(())
    }

    fn captures<'a>(&'a self, route: usize, segs: &Segs<'_>) -> Result<Match<'a, T>, MatchError> {
        let Route { template, value } = &self.routes[route];
        let count = template.segments.len();
        let ends_in_multi = matches!(template.segments.last(), Some(Segment::Multi));
        let mut captures = Vec::with_capacity(template.variables.len());
        for (index, var) in template.variables.iter().enumerate() {
            let covers_multi = ends_in_multi && var.end == count;
            let end = if covers_multi { segs.len } else { var.end };
            // Per http.proto: single-segment variables are fully decoded;
            // multi-segment ones keep %2F so the slash stays distinguishable from separators.
            let keep_slash = covers_multi || var.end.saturating_sub(var.start) > 1;
            let decoded = decode_capture(segs, var.start, end, keep_slash).map_err(|reason| {
                MatchError::BadEncoding {
                    variable: var.field_path.join("."),
                    reason,
                }
            })?;
            captures.push((index, decoded));
        }
        Ok(Match {
            value,
            template,
            captures,
        })
    }
}

impl<T> Matcher<T> {
    /// Returns the child of `node` for `seg`, creating it if needed (builder only).
    fn child(&mut self, node: usize, seg: &Segment) -> usize {
        let next = self.nodes.len();
        let n = &mut self.nodes[node];
        let slot = match seg {
            Segment::Literal(lit) => {
                match n
                    .literals
                    .binary_search_by(|(l, _)| (**l).cmp(lit.as_str()))
                {
                    Ok(k) => return n.literals[k].1,
                    Err(k) => n.literals.insert(k, (lit.as_str().into(), next)),
                }
                None
            }
            Segment::Single => Some(&mut n.single),
            Segment::Multi => Some(&mut n.multi),
        };
        if let Some(slot) = slot {
            if let Some(existing) = *slot {
                return existing;
            }
            *slot = Some(next);
        }
        self.nodes.push(Node::default());
        next
    }
}

/// Joins path segments `[start, end)` with '/' and percent-decodes them, optionally keeping `%2F`.
fn decode_capture(
    segs: &Segs<'_>,
    start: usize,
    end: usize,
    keep_slash: bool,
) -> Result<String, String> {
    let mut buf: Vec<u8> = Vec::with_capacity((start..end).map(|i| segs.get(i).len() + 1).sum());
    for i in start..end {
        if i > start {
            buf.push(b'/');
        }
        let mut rest = segs.get(i);
        if keep_slash {
            // In a normalised path every '%' starts a valid escape, so a
            // window match is always a real `%2F` and never the tail of one.
            while let Some(at) = rest
                .as_bytes()
                .windows(3)
                .position(|w| w[0] == b'%' && w[1] == b'2' && (w[2] | 0x20) == b'f')
            {
                buf.extend(percent_decode_str(&rest[..at]));
                buf.extend_from_slice(&rest.as_bytes()[at..at + 3]);
                rest = &rest[at + 3..];
            }
        }
        buf.extend(percent_decode_str(rest));
    }
    String::from_utf8(buf).map_err(|e| {
        format!(
            "not valid UTF-8 after percent-decoding ({})",
            e.utf8_error()
        )
    })
}

fn join_methods(methods: &[Method]) -> String {
    let names: Vec<&str> = methods.iter().map(Method::as_str).collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
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
}
