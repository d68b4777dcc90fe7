//! Upstream gRPC services: each a named [`Pool`] of long-lived HTTP/2
//! connections, called with a [`Deadline`]. A binding's [`Target`] says
//! which upstream and method it calls and with what budget.

mod connection;
pub mod deadline;
pub mod discovery;
pub mod error;
pub mod grpc;
pub mod pool;
pub mod status;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use http::uri::PathAndQuery;

pub use connection::UpstreamBody;
pub use deadline::Deadline;
pub use discovery::Discovery;
pub use error::{CallError, TransportError};
pub use grpc::{UnaryReply, UnaryRequest};
pub use pool::{Pool, PoolConfig};

/// The upstream piece of a method plan: where a binding's calls go.
#[derive(Debug, Clone)]
pub struct Target {
    /// Index of the upstream in the snapshot's upstream list.
    pub upstream: usize,
    /// Upstream name, for `check` and logs.
    pub upstream_name: Arc<str>,
    /// `/package.Service/Method`, built once.
    pub grpc_path: PathAndQuery,
    /// Deadline budget, and the cap on a client's grpc-timeout.
    pub timeout: Duration,
}

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

/// How one upstream is reached, compiled; dialled by [`Upstream::start`].
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// The pool's connection settings.
    pub pool: PoolConfig,
    /// Default deadline budget of its routes.
    pub timeout: Duration,
    /// Largest response message accepted.
    pub max_message_bytes: usize,
}

// === impl Upstream ===

impl Upstream {
    /// Dials the pool and waits for its first attempts (see [`Pool::start`]).
    pub async fn start(config: UpstreamConfig) -> Upstream {
        Upstream {
            name: config.pool.name.clone(),
            pool: Pool::start(config.pool).await,
            timeout: config.timeout,
            max_message_bytes: config.max_message_bytes,
        }
    }

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
