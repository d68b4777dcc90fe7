//! The edge layers every request passes before the pipeline, outermost
//! first: CORS (preflights are answered here, never forwarded), the request
//! id and a panic turned into that request's 500, JSON bodies for errors
//! raised by the layers below, the coding-dependent `ETag` and
//! `Vary` for bodiless answers (HEAD, 304), response compression per
//! Accept-Encoding, request decompression (so the body limit counts
//! decompressed bytes), then the pipeline, which owns routing.
//!
//! These layers follow the current snapshot: the pipeline's router rebuilds
//! them from the new [`EdgePolicy`] after a reload, so `[cors]` and
//! `[compression]` changes need no restart.

use std::convert::Infallible;

use axum::extract::Request;
use axum::response::Response;
use http::header::{CONTENT_ENCODING, ETAG};
use http::{HeaderMap, HeaderValue};
use tower::util::{BoxCloneSyncService, Either};
use tower::{Layer as _, Service, ServiceBuilder, ServiceExt as _};

use crate::headers::X_REQUEST_ID;

mod bodyless;
mod compression;
pub mod cors;
mod decompression;
mod panics;

use bodyless::BodylessLayer;
pub use cors::Cors;
use decompression::Decompress;
use panics::ContainPanicsLayer;

/// The edge layers' settings, compiled from `[cors]` and `[compression]`.
#[derive(Debug, Clone, Default)]
pub struct EdgePolicy {
    /// CORS, when `[cors]` is present.
    pub cors: Option<Cors>,
    /// Response compression, unless `[compression] enabled = false`.
    pub compression: Option<Compression>,
    /// gRPC-Web calls are served (`[grpc_web] enabled`): CORS then also
    /// allows and exposes the headers gRPC-Web clients use.
    pub grpc_web: bool,
}

/// Response compression settings.
#[derive(Debug, Clone)]
pub struct Compression {
    /// Smallest body worth compressing.
    pub min_bytes: u16,
}

/// The edge layers around the pipeline, as one service: boxed once, so a
/// request pays one allocation for the stack rather than one per layer (as
/// an axum `Router::layer` stack would).
pub type EdgeService = BoxCloneSyncService<Request, Response, Infallible>;

/// Wraps `pipeline` in the edge layers, per `policy`, outermost first:
/// CORS, panics, last touches, bodyless representations, compression,
/// request decompression.
pub fn layers<S>(pipeline: S, policy: &EdgePolicy) -> EdgeService
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    let decompressing = Decompress::new(pipeline);
    let compressing = match &policy.compression {
        Some(compression) => {
            let layer = compression::layer(compression);
            Either::Left(
                ServiceBuilder::new()
                    .layer(BodylessLayer::new(layer.clone()))
                    .layer(compression::CompressLayer(layer))
                    .service(decompressing),
            )
        }
        None => Either::Right(decompressing),
    };
    let contained = ContainPanicsLayer.layer(compressing.map_response(finish));
    match &policy.cors {
        Some(cors) => BoxCloneSyncService::new(cors::CorsService::new(
            cors.layer(policy.grpc_web),
            contained,
        )),
        None => BoxCloneSyncService::new(contained),
    }
}

/// Longest accepted client-supplied `x-request-id`.
const MAX_REQUEST_ID_LEN: usize = 128;

/// The client's request id if it is sane, else a fresh random one.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(id) = headers.get(X_REQUEST_ID)
        && !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id.as_bytes().iter().all(|b| b.is_ascii_graphic())
    {
        return id.clone();
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bits: u128 = rand::random();
    let mut text = [0u8; 32];
    for (i, digit) in text.iter_mut().enumerate() {
        *digit = HEX[((bits >> (124 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&text).unwrap_or(HeaderValue::from_static("0"))
}

/// Last touches on every answer leaving the gateway.
fn finish(response: Response) -> Response {
    let mut response = crate::error::edge_layer_error(response);
    response.headers_mut().remove(crate::cache::REPRESENTATION);
    tag_content_coding(&mut response);
    response
}

/// A strong ETag names one representation: once compressed, the bytes
/// differ, so the tag gets the coding as a suffix (`"abc-gzip"`), which
/// If-None-Match still matches against the identity tag.
fn tag_content_coding(response: &mut Response) {
    let headers = response.headers_mut();
    let Some(coding) = headers.get(CONTENT_ENCODING).cloned() else {
        return;
    };
    if let Ok(coding) = coding.to_str() {
        suffix_etag(headers, coding);
    }
}

/// `"abc"` → `"abc-gzip"`; weak tags are left alone.
pub(super) fn suffix_etag(headers: &mut HeaderMap, coding: &str) {
    let Some(tag) = headers.get(ETAG).and_then(|t| t.to_str().ok()) else {
        return;
    };
    if tag.starts_with("W/") || !tag.ends_with('"') {
        return;
    }
    let tagged = format!("{}-{coding}\"", &tag[..tag.len() - 1]);
    if let Ok(value) = HeaderValue::from_str(&tagged) {
        headers.insert(ETAG, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_request_ids_are_replaced() {
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_static("has space"));
        assert_ne!(request_id(&h), "has space");
        h.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
    }
}
