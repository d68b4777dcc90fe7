//! Method plans: for each exposed binding, the compiled piece each request
//! stage owns. The route table finds a [`BindingId`]; the pipeline looks up
//! its [`MethodPlan`] and hands each stage only its own piece, so no stage
//! sees another's policy.

use std::collections::HashMap;
use std::time::Duration;

use http::Method;

use crate::route::BindingId;
use crate::route::template::PathTemplate;
use crate::{auth, cache, idempotency, ratelimit, stream, transcode, upstream};

/// One exposed HTTP binding of one gRPC method, compiled.
#[derive(Debug)]
pub struct MethodPlan {
    /// The HTTP method bound.
    pub http_method: Method,
    /// The path template bound: the route's name in logs and listings.
    pub template: PathTemplate,
    /// Who may call it.
    pub auth: auth::Policy,
    /// How the request and the answer are transcoded.
    pub transcode: transcode::Plan,
    /// How its answers may be cached.
    pub cache: cache::Policy,
    /// Where the call goes and with what budget (a streaming method's
    /// budget is its `stream_timeout`).
    pub upstream: upstream::Target,
    /// How a streaming method streams; `None` for a unary one.
    pub stream: Option<stream::Policy>,
    /// Its rate limits (none: empty).
    pub rate_limit: ratelimit::Policy,
    /// Whether the OpenAPI document lists this binding (`openapi = false`
    /// hides it; it is served all the same).
    pub documented: bool,
    /// `Idempotency-Key` handling of a POST or PATCH binding that opted in.
    pub idempotency: Option<idempotency::Policy>,
}

/// Every binding's plan, indexed by [`BindingId`].
#[derive(Debug, Default)]
pub struct Plans {
    plans: Vec<MethodPlan>,
    /// `/package.Service/Method` → its first binding, for calls that name
    /// the gRPC method itself (gRPC-Web).
    by_grpc_path: HashMap<String, BindingId>,
}

/// One line of `protogate check`'s route table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
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

// === impl Plans ===

impl Plans {
    /// Adds a plan and returns the handle the route table stores for it.
    pub fn push(&mut self, plan: MethodPlan) -> BindingId {
        let binding = BindingId::new(self.plans.len());
        self.by_grpc_path
            .entry(plan.upstream.grpc_path.path().to_string())
            .or_insert(binding);
        self.plans.push(plan);
        binding
    }

    /// Drops the plan added last (its binding could not be routed).
    pub fn pop(&mut self) {
        if let Some(plan) = self.plans.pop() {
            let index = self.plans.len();
            let path = plan.upstream.grpc_path.path();
            if self.by_grpc_path.get(path).map(|b| b.index()) == Some(index) {
                self.by_grpc_path.remove(path);
            }
        }
    }

    /// The first binding of the gRPC method at `path`
    /// (`/package.Service/Method`), if the method is exposed at all.
    pub fn by_grpc_path(&self, path: &str) -> Option<BindingId> {
        self.by_grpc_path.get(path).copied()
    }

    /// The plan of a binding the route table found.
    pub fn get(&self, binding: BindingId) -> &MethodPlan {
        // Handles come only from the table compiled with these plans.
        &self.plans[binding.index()]
    }

    /// Every plan, in compile order.
    pub fn iter(&self) -> impl Iterator<Item = &MethodPlan> {
        self.plans.iter()
    }

    /// Number of bindings.
    pub fn len(&self) -> usize {
        self.plans.len()
    }

    /// Whether nothing is bound.
    pub fn is_empty(&self) -> bool {
        self.plans.is_empty()
    }

    /// Every binding, for `protogate check`.
    pub fn summaries(&self) -> Vec<Summary> {
        self.plans.iter().map(MethodPlan::summary).collect()
    }
}

// === impl MethodPlan ===

impl MethodPlan {
    /// Its line in `protogate check`'s table.
    pub fn summary(&self) -> Summary {
        Summary {
            http_method: self.http_method.to_string(),
            template: self.template.to_string(),
            grpc_method: self.transcode.method.full_name().to_string(),
            upstream: self.upstream.upstream_name.to_string(),
            body: self.transcode.body.as_written(),
            timeout: self.upstream.timeout,
            auth: self.auth.summary(),
        }
    }
}
