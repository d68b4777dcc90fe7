//! The edge layers every request passes before the pipeline, in order:
//! request decompression (so the body limit is measured on decompressed
//! bytes), then the gateway's own handler.

use std::sync::Arc;

use axum::Router;
use tower_http::decompression::RequestDecompressionLayer;

use crate::pipeline::{self, Gateway};

/// The public router: every path goes to the pipeline, which owns routing.
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .fallback(pipeline::handle)
        .with_state(gateway)
        .layer(RequestDecompressionLayer::new())
        .layer(axum::middleware::map_response(edge_errors))
}

async fn edge_errors(response: axum::response::Response) -> axum::response::Response {
    crate::error::edge_layer_error(response)
}
