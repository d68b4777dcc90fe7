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
mod tests;
