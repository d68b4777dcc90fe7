//! The request's bounds, checked before any work: path and query length,
//! header count and size, and the body read, bounded in size (after
//! decompression) and in time.

use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, header};
use http_body_util::{BodyExt, Limited};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::upstream::{CallPermit, Deadline, Upstream};

/// The request limits, compiled from `[limits]`.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body, measured after decompression.
    pub max_body_bytes: usize,
    /// Deepest JSON nesting accepted in a body.
    pub max_json_depth: usize,
    /// Longest request path.
    pub max_path_bytes: usize,
    /// Longest query string.
    pub max_query_bytes: usize,
    /// Most request headers.
    pub max_headers: usize,
    /// Largest request head (HTTP/1) or header list (HTTP/2), in bytes.
    pub max_header_bytes: usize,
    /// Requests in the gateway at once.
    pub max_concurrent_requests: usize,
    /// Permits for `max_concurrent_requests`.
    pub in_flight: Arc<Semaphore>,
    /// Largest part of a `multipart/form-data` body (at most `max_body_bytes`).
    pub max_multipart_part_bytes: usize,
    /// Most parts in a `multipart/form-data` body.
    pub max_multipart_parts: usize,
}

/// A request over a limit, or whose body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    /// The path or query string is longer than the configured limit.
    #[error("{what} is {len} bytes, over the limit of {limit}")]
    UriTooLong {
        /// "path" or "query string".
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// Too many request headers, or too many bytes of them.
    #[error("request {what} is {size}, over the limit of {limit}")]
    HeadersTooLarge {
        /// "header count" or "header bytes".
        what: &'static str,
        /// What the request has.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The decompressed body is larger than the configured limit.
    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The body could not be read (a framing error, a bad compression stream).
    #[error("could not read the request body: {0}")]
    UnreadableBody(String),
    /// The deadline ran out while the body was still arriving.
    #[error("the request body did not arrive within the deadline")]
    BodyTimeout,
    /// A `Transfer-Encoding` other than exactly one `chunked`.
    #[error(
        "invalid header 'transfer-encoding': {0:?} is not accepted; only a single `chunked` is"
    )]
    AmbiguousFraming(String),
    /// A concurrency bound is reached: the request is shed before any work.
    #[error("{what} is at its limit of {limit} requests in flight; try again shortly")]
    Overloaded {
        /// "the gateway" or "upstream 'NAME'".
        what: String,
        /// The bound.
        limit: usize,
    },
}

/// hyper frames a body by `Transfer-Encoding` when its last coding is
/// `chunked` and ignores the rest (`gzip, chunked` is read as plain
/// chunked); a proxy in front may read such a request differently, which is
/// how smuggling starts (RFC 9112 §6.1). Anything but exactly one `chunked`
/// is refused, and the connection is closed after the answer.
fn plain_chunked(headers: &HeaderMap) -> Result<(), LimitError> {
    let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter();
    match (codings.next(), codings.next()) {
        (None, _) => Ok(()),
        (Some(only), None) if only.as_bytes().eq_ignore_ascii_case(b"chunked") => Ok(()),
        (Some(first), _) => Err(LimitError::AmbiguousFraming(
            String::from_utf8_lossy(first.as_bytes()).into_owned(),
        )),
    }
}

// === impl Limits ===

impl Limits {
    /// A place among the requests in the gateway, or `Overloaded` at the
    /// bound: shed before any work, so shedding stays cheap.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, LimitError> {
        self.in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| LimitError::Overloaded {
                what: "the gateway".to_string(),
                limit: self.max_concurrent_requests,
            })
    }

    /// A call slot on `upstream`, or `Overloaded` at its bound.
    pub fn admit_call(upstream: &Upstream) -> Result<CallPermit, LimitError> {
        upstream.admit().ok_or_else(|| LimitError::Overloaded {
            what: format!("upstream '{}'", upstream.name),
            limit: upstream.max_concurrent_calls(),
        })
    }

    /// Checks the request head: path and query length, header count and size.
    pub fn check_head(&self, parts: &Parts) -> Result<(), LimitError> {
        let path_len = parts.uri.path().len();
        if path_len > self.max_path_bytes {
            return Err(LimitError::UriTooLong {
                what: "path",
                len: path_len,
                limit: self.max_path_bytes,
            });
        }
        let query_len = parts.uri.query().map_or(0, str::len);
        if query_len > self.max_query_bytes {
            return Err(LimitError::UriTooLong {
                what: "query string",
                len: query_len,
                limit: self.max_query_bytes,
            });
        }
        if parts.headers.len() > self.max_headers {
            return Err(LimitError::HeadersTooLarge {
                what: "header count",
                size: parts.headers.len(),
                limit: self.max_headers,
            });
        }
        // Names, values and the ": " and CRLF around them, as on the wire.
        let header_bytes: usize = parts
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum();
        if header_bytes > self.max_header_bytes {
            return Err(LimitError::HeadersTooLarge {
                what: "header bytes",
                size: header_bytes,
                limit: self.max_header_bytes,
            });
        }
        plain_chunked(&parts.headers)
    }

    /// Reads the whole body, bounded in size (after decompression) and by
    /// the request's deadline.
    pub async fn read_body<B>(
        &self,
        body: B,
        headers: &HeaderMap,
        deadline: Deadline,
    ) -> Result<Bytes, LimitError>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if body.is_end_stream() {
            return Ok(Bytes::new());
        }
        let limit = self.max_body_bytes;
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit as u64)
            && !headers.contains_key(header::CONTENT_ENCODING)
        {
            return Err(LimitError::BodyTooLarge { limit });
        }
        let read = Limited::new(body, limit).collect();
        match tokio::time::timeout_at(deadline.instant(), read).await {
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                Err(LimitError::BodyTooLarge { limit })
            }
            Ok(Err(e)) => Err(LimitError::UnreadableBody(e.to_string())),
            Err(_) => Err(LimitError::BodyTimeout),
        }
    }
}
