//! The compiled routing table: `google.api.http` bindings (and routes.toml
//! overrides) turned into a segment-trie [`matcher::Matcher`], so finding a
//! route never scans the route list.

pub mod compile;
pub mod matcher;
pub mod path;
pub mod template;

use std::time::Duration;

use http::Method;
use http::uri::PathAndQuery;
use prost_reflect::{MethodDescriptor, SerializeOptions};

use crate::auth::AuthPolicy;
use crate::cache::CachePolicy;
use crate::error::ClientError;
use crate::transcode::FieldPath;
use matcher::{MatchError, Matcher};
use path::NormalizedPath;
use template::PathTemplate;

/// One HTTP binding of one gRPC method, with everything the request path
/// needs already resolved.
#[derive(Debug)]
pub struct Route {
    /// The gRPC method called.
    pub method: MethodDescriptor,
    /// The HTTP method bound.
    pub http_method: Method,
    /// The path template bound.
    pub template: PathTemplate,
    /// `/package.Service/Method`, built once.
    pub grpc_path: PathAndQuery,
    /// One resolved field per template variable, in template order.
    pub variables: Vec<FieldPath>,
    /// Where the HTTP body goes.
    pub body: BodyRule,
    /// The response field answered instead of the whole message.
    pub response_body: Option<FieldPath>,
    /// Index of the upstream in the snapshot.
    pub upstream: usize,
    /// Upstream name, for `check` and logs.
    pub upstream_name: String,
    /// Deadline budget, and the cap on a client's grpc-timeout.
    pub timeout: Duration,
    /// JSON mapping options for this route.
    pub json: JsonMapping,
    /// Who may call it.
    pub auth: AuthPolicy,
    /// Query parameters that carry credentials, not message fields.
    pub reserved_query: Vec<String>,
    /// How its answers may be cached.
    pub cache: CachePolicy,
}

/// Where a binding puts the HTTP request body.
#[derive(Debug, Clone)]
pub enum BodyRule {
    /// No body; every unbound field may come from the query.
    None,
    /// `body: "*"`: the body is the whole request message.
    Whole,
    /// `body: "field"`: the body is that field.
    Field(FieldPath),
}

/// Resolved JSON options of one route.
#[derive(Debug, Clone)]
pub struct JsonMapping {
    /// How responses are written.
    pub serialize: SerializeOptions,
    /// Answer 400 to unknown fields in a JSON body.
    pub deny_unknown_fields: bool,
    /// Answer 400 to unknown query parameters.
    pub deny_unknown_query: bool,
}

/// The routing table.
#[derive(Debug)]
pub struct RouteTable {
    matcher: Matcher<Route>,
    routes: Vec<RouteSummary>,
}

/// One line of `protogate check`'s route table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSummary {
    /// HTTP method.
    pub http_method: String,
    /// Path template.
    pub template: String,
    /// Fully-qualified gRPC method.
    pub grpc_method: String,
    /// Upstream name.
    pub upstream: String,
    /// Body rule as written (`*`, a field, or empty).
    pub body: String,
    /// Deadline budget.
    pub timeout: Duration,
    /// Auth policy, as `protogate check` shows it.
    pub auth: String,
}

/// A found route and its decoded path variables.
#[derive(Debug)]
pub struct RouteMatch<'a> {
    /// The route.
    pub route: &'a Route,
    /// `(variable index, decoded value)` pairs.
    pub captures: Vec<(usize, String)>,
}

// === impl RouteTable ===

impl RouteTable {
    /// Wraps a built matcher and its listing.
    pub fn new(matcher: Matcher<Route>, routes: Vec<RouteSummary>) -> Self {
        RouteTable { matcher, routes }
    }

    /// Finds the route for a method and normalised path. HEAD falls back to
    /// GET, answered without a body.
    pub fn find(
        &self,
        method: &Method,
        path: &NormalizedPath,
    ) -> Result<RouteMatch<'_>, ClientError> {
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
                route: m.value,
                captures: m.captures,
            }),
            Err(MatchError::NotFound) => Err(ClientError::NotFound {
                method: method.clone(),
                path: path.as_str().to_string(),
            }),
            Err(MatchError::MethodNotAllowed { mut allowed }) => {
                if allowed.contains(&Method::GET) && !allowed.contains(&Method::HEAD) {
                    allowed.push(Method::HEAD);
                }
                Err(ClientError::MethodNotAllowed {
                    method: method.clone(),
                    path: path.as_str().to_string(),
                    allowed,
                })
            }
            Err(MatchError::BadEncoding { variable, reason }) => Err(ClientError::InvalidPath(
                format!("path variable '{variable}': {reason}"),
            )),
        }
    }

    /// Every binding, for `protogate check`.
    pub fn summaries(&self) -> &[RouteSummary] {
        &self.routes
    }

    /// Number of bindings.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether there are no bindings.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}
