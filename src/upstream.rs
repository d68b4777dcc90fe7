//! Upstream gRPC services: each a named [`Pool`] of long-lived HTTP/2
//! connections, called with a [`Deadline`].

pub mod deadline;
pub mod grpc;
pub mod pool;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub use deadline::Deadline;
pub use grpc::{CallError, UnaryReply, UnaryRequest};
pub use pool::{Pool, PoolConfig};

/// One upstream service.
#[derive(Debug)]
pub struct Upstream {
    /// Name from routes.toml.
    pub name: String,
    /// Its connections.
    pub pool: Pool,
    /// Default deadline budget of its routes.
    pub timeout: Duration,
    /// Largest response message accepted.
    pub max_message_bytes: usize,
}

/// Every upstream, by name.
pub type Upstreams = HashMap<String, Arc<Upstream>>;

// === impl Upstream ===

impl Upstream {
    /// Makes one unary call within `deadline`.
    pub async fn call(
        &self,
        request: UnaryRequest,
        deadline: Deadline,
    ) -> Result<UnaryReply, CallError> {
        grpc::unary(
            &self.pool,
            &self.name,
            request,
            deadline,
            self.max_message_bytes,
        )
        .await
    }
}
