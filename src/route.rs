//! The compiled routing table: `google.api.http` path templates (and
//! routes.toml overrides) in a segment-trie [`matcher::Matcher`], so finding
//! a binding never scans the route list. A match is only a handle into the
//! snapshot's plan table plus the decoded path variables: what to do with
//! the request is each stage's own piece of that plan.

pub mod matcher;
pub mod path;
pub mod template;

use http::Method;

use matcher::{MatchError, Matcher};
use path::{NormalizedPath, PathError};

/// The opaque handle of one binding: an index into the snapshot's plans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BindingId(usize);

/// The routing table.
#[derive(Debug)]
pub struct RouteTable {
    matcher: Matcher<BindingId>,
}

/// A found binding and its decoded path variables.
#[derive(Debug)]
pub struct RouteMatch {
    /// The binding.
    pub binding: BindingId,
    /// `(variable index, decoded value)` pairs.
    pub captures: Vec<(usize, String)>,
}

/// Why no binding was found.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// No binding has this path.
    #[error("no route for {method} {path}")]
    NotFound {
        /// Request method.
        method: Method,
        /// Normalised request path.
        path: String,
    },
    /// The path exists, with other methods.
    #[error("method {method} is not allowed for {path}")]
    MethodNotAllowed {
        /// Request method.
        method: Method,
        /// Normalised request path.
        path: String,
        /// Methods the path does accept.
        allowed: Vec<Method>,
    },
    /// The path cannot be normalised or decoded safely.
    #[error("invalid path: {0}")]
    InvalidPath(String),
}

// === impl BindingId ===

impl BindingId {
    /// The handle of the `index`-th binding compiled.
    pub fn new(index: usize) -> BindingId {
        BindingId(index)
    }

    /// Its index in the plan table.
    pub fn index(self) -> usize {
        self.0
    }
}

// === impl RouteTable ===

impl RouteTable {
    /// Wraps a built matcher.
    pub fn new(matcher: Matcher<BindingId>) -> Self {
        RouteTable { matcher }
    }

    /// Finds the binding for a method and normalised path. HEAD falls back
    /// to GET, answered without a body.
    pub fn find(&self, method: &Method, path: &NormalizedPath) -> Result<RouteMatch, RouteError> {
        let found = match self.matcher.find(method, path) {
            Err(MatchError::NotFound | MatchError::MethodNotAllowed { .. })
                if method == Method::HEAD =>
            {
                self.matcher.find(&Method::GET, path)
            }
            other => other,
        };
        match found {
            Ok(m) => Ok(RouteMatch {
                binding: *m.value,
                captures: m.captures,
            }),
            Err(MatchError::NotFound) => Err(RouteError::NotFound {
                method: method.clone(),
                path: path.as_str().to_string(),
            }),
            Err(MatchError::MethodNotAllowed { mut allowed }) => {
                if allowed.contains(&Method::GET) && !allowed.contains(&Method::HEAD) {
                    allowed.push(Method::HEAD);
                }
                Err(RouteError::MethodNotAllowed {
                    method: method.clone(),
                    path: path.as_str().to_string(),
                    allowed,
                })
            }
            Err(MatchError::BadEncoding { variable, reason }) => Err(RouteError::InvalidPath(
                format!("path variable '{variable}': {reason}"),
            )),
        }
    }

    /// Number of bindings.
    pub fn len(&self) -> usize {
        self.matcher.len()
    }

    /// Whether there are no bindings.
    pub fn is_empty(&self) -> bool {
        self.matcher.is_empty()
    }
}

impl From<PathError> for RouteError {
    fn from(error: PathError) -> Self {
        RouteError::InvalidPath(error.to_string())
    }
}
