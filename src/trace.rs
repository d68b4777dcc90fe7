//! W3C Trace Context (`traceparent` / `tracestate`): each request is a span
//! of a trace — the client's, when it sent a valid `traceparent` and
//! `[server] trust_traceparent` is on, or a fresh one — and the upstream
//! call carries a `traceparent` whose parent is the gateway's span. With
//! `[tracing] otlp_endpoint`, each request's span is exported ([`Exporter`]).

mod otlp;

use std::fmt;

use http::{HeaderMap, HeaderValue};

use crate::headers::{TRACEPARENT, TRACESTATE};

pub use otlp::{Exporter, FinishedSpan, OtlpSettings};

/// The trace a request belongs to and the gateway's span in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trace {
    trace_id: [u8; 16],
    /// The gateway's span for this request.
    span_id: [u8; 8],
    /// The client's span, when the trace was continued.
    parent: Option<[u8; 8]>,
    /// trace-flags, as received (sampled bit) or 01 for a fresh trace.
    flags: u8,
}

/// A trace id, printed as 32 lower-case hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceId([u8; 16]);

// === impl Trace ===

impl Trace {
    /// The request's trace: continued from a valid client `traceparent`
    /// when `trust_client` is set, or started fresh.
    pub fn start(headers: &HeaderMap, trust_client: bool) -> Trace {
        let span_id = nonzero(rand::random);
        let continued = trust_client
            .then(|| headers.get(TRACEPARENT))
            .flatten()
            .and_then(|v| parse(v.as_bytes()));
        match continued {
            Some((trace_id, parent, flags)) => Trace {
                trace_id,
                span_id,
                parent: Some(parent),
                flags,
            },
            None => Trace {
                trace_id: nonzero(rand::random),
                span_id,
                parent: None,
                flags: 0x01,
            },
        }
    }

    /// The trace's id.
    pub fn trace_id(&self) -> TraceId {
        TraceId(self.trace_id)
    }

    /// The gateway's span id, as 16 hex digits.
    pub fn span_id(&self) -> String {
        hex(&self.span_id)
    }

    /// The client's span id, when the trace was continued.
    pub fn parent_span_id(&self) -> Option<String> {
        self.parent.as_ref().map(|p| hex(p))
    }

    /// Sets the upstream call's trace metadata: a `traceparent` naming the
    /// gateway's span as parent. A client's `tracestate` belongs to its
    /// trace, so it is kept only when that trace was continued.
    pub fn propagate(&self, metadata: &mut HeaderMap) {
        let header = format!(
            "00-{}-{}-{:02x}",
            hex(&self.trace_id),
            hex(&self.span_id),
            self.flags
        );
        if let Ok(value) = HeaderValue::from_str(&header) {
            metadata.insert(TRACEPARENT, value);
        }
        if self.parent.is_none() {
            metadata.remove(TRACESTATE);
        }
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`; a later version
/// may append fields after the flags (W3C Trace Context §3.2.4). All-zero
/// ids are invalid, and so is version ff.
fn parse(value: &[u8]) -> Option<([u8; 16], [u8; 8], u8)> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let mut fields = text.splitn(5, '-');
    let version = decode::<1>(fields.next()?)?;
    let trace_id = decode::<16>(fields.next()?)?;
    let parent = decode::<8>(fields.next()?)?;
    let flags = decode::<1>(fields.next()?)?;
    let rest_ok = match fields.next() {
        None => true,
        Some(_) => version[0] != 0,
    };
    let valid = version[0] != 0xff && rest_ok && trace_id != [0; 16] && parent != [0; 8];
    valid.then_some((trace_id, parent, flags[0]))
}

/// Exactly `N` bytes from `2N` lower-case hex digits.
fn decode<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || text.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let mut out = [0; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    out
}

/// A random id that is not all zeros (all zeros means "invalid").
fn nonzero<const N: usize>(random: impl Fn() -> [u8; N]) -> [u8; N] {
    loop {
        let id = random();
        if id != [0; N] {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(traceparent: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            TRACEPARENT,
            HeaderValue::from_str(traceparent).expect("a header value"),
        );
        headers
    }

    #[test]
    fn a_trusted_traceparent_is_continued_with_a_new_span() {
        let trace = Trace::start(&headers(CLIENT), true);
        assert_eq!(
            trace.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(trace.parent_span_id().as_deref(), Some("00f067aa0ba902b7"));
        assert_ne!(trace.span_id(), "00f067aa0ba902b7");
        let mut metadata = headers(CLIENT);
        metadata.insert(TRACESTATE, HeaderValue::from_static("k=v"));
        trace.propagate(&mut metadata);
        let sent = metadata[TRACEPARENT].to_str().expect("ascii");
        assert_eq!(
            sent,
            format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", trace.span_id())
        );
        assert_eq!(metadata[TRACESTATE], "k=v");
    }

    #[test]
    fn an_untrusted_or_invalid_traceparent_starts_a_fresh_trace() {
        for (value, trusted) in [
            (CLIENT, false),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                true,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                true,
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                true,
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                true,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
                true,
            ),
            ("00-4bf92f35-00f067aa0ba902b7-01", true),
        ] {
            let trace = Trace::start(&headers(value), trusted);
            assert_ne!(
                trace.trace_id().to_string(),
                "4bf92f3577b34da6a3ce929d0e0e4736",
                "{value}"
            );
            assert_eq!(trace.parent_span_id(), None, "{value}");
            let mut metadata = headers(value);
            metadata.insert(TRACESTATE, HeaderValue::from_static("k=v"));
            trace.propagate(&mut metadata);
            assert!(metadata.get(TRACESTATE).is_none(), "{value}");
        }
    }

    #[test]
    fn a_later_version_may_carry_more_fields() {
        let value = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra";
        let trace = Trace::start(&headers(value), true);
        assert_eq!(trace.parent_span_id().as_deref(), Some("00f067aa0ba902b7"));
    }
}
