//! The framing of each server-stream format: what opens and closes the
//! body, how one message is written, and how an error after the first
//! message is told to a client that already has a 200.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use super::Format;

/// `grpc-status` as an HTTP trailer of a JSON-array stream that failed.
pub const TRAILER_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// `grpc-message` (percent-encoded, as in gRPC) beside it.
pub const TRAILER_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// Characters percent-encoded in `grpc-message` (gRPC over HTTP/2).
const GRPC_MESSAGE: &AsciiSet = &CONTROLS.add(b'%');

/// How a stream's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One of the JSON formats.
    Json(Format),
    /// `google.api.HttpBody` messages: their bytes, back to back, under the
    /// first message's content type. An error can only cut the body short.
    Raw,
}

/// Writes one stream's body pieces.
#[derive(Debug)]
pub struct Encoder {
    framing: Framing,
    /// Whether a JSON array already has an element (a comma goes first).
    has_element: bool,
}

/// An event's `id` and `event` lines (Server-Sent Events only).
#[derive(Debug, Default)]
pub struct EventFields {
    /// Written as `id:`.
    pub id: Option<String>,
    /// Written as `event:`.
    pub event: Option<String>,
}

/// How a failed stream ends its body.
#[derive(Debug)]
pub struct ErrorEnd {
    /// The last bytes, if the format can carry the error in the body.
    pub data: Option<Bytes>,
    /// Trailers carrying the status (JSON array).
    pub trailers: Option<HeaderMap>,
}

// === impl Encoder ===

impl Encoder {
    /// An encoder for `framing`.
    pub fn new(framing: Framing) -> Encoder {
        Encoder {
            framing,
            has_element: false,
        }
    }

    /// What the body starts with: a JSON array's `[`, or an event stream's
    /// `retry:` hint.
    pub fn open(&self, retry: Option<Duration>) -> Option<Bytes> {
        match self.framing {
            Framing::Json(Format::JsonArray) => Some(Bytes::from_static(b"[")),
            Framing::Json(Format::Sse) => {
                retry.map(|r| Bytes::from(format!("retry: {}\n\n", r.as_millis())))
            }
            _ => None,
        }
    }

    /// One message, already rendered (JSON text, or an HttpBody's bytes).
    pub fn message(&mut self, rendered: &[u8], fields: &EventFields) -> Bytes {
        match self.framing {
            Framing::Raw => Bytes::copy_from_slice(rendered),
            Framing::Json(Format::Ndjson) => {
                let mut out = BytesMut::with_capacity(rendered.len() + 1);
                out.put_slice(rendered);
                out.put_u8(b'\n');
                out.freeze()
            }
            Framing::Json(Format::JsonArray) => {
                let mut out = BytesMut::with_capacity(rendered.len() + 1);
                if std::mem::replace(&mut self.has_element, true) {
                    out.put_u8(b',');
                }
                out.put_slice(rendered);
                out.freeze()
            }
            Framing::Json(Format::Sse) => {
                let mut out = BytesMut::with_capacity(rendered.len() + 16);
                if let Some(id) = &fields.id {
                    field_line(&mut out, "id", id);
                }
                if let Some(event) = &fields.event {
                    field_line(&mut out, "event", event);
                }
                data_lines(&mut out, rendered);
                out.put_u8(b'\n');
                out.freeze()
            }
        }
    }

    /// A comment that keeps an idle event stream (and the proxies on its
    /// way) from timing out; other formats have no such line.
    pub fn keepalive(&self) -> Option<Bytes> {
        (self.framing == Framing::Json(Format::Sse))
            .then(|| Bytes::from_static(b": keep-alive\n\n"))
    }

    /// What the body ends with after the last message.
    pub fn close(&self) -> Option<Bytes> {
        (self.framing == Framing::Json(Format::JsonArray)).then(|| Bytes::from_static(b"]"))
    }

    /// How the body ends when the stream fails after it began: a final
    /// `{"error": status}` line, an `error` event, or the array closed and
    /// the status in trailers. A raw body has no way to say it, and is cut.
    pub fn error(&self, status: &serde_json::Value) -> ErrorEnd {
        let json = serde_json::to_vec(status).unwrap_or_default();
        match self.framing {
            Framing::Raw => ErrorEnd {
                data: None,
                trailers: None,
            },
            Framing::Json(Format::Ndjson) => {
                let mut out = Vec::with_capacity(json.len() + 11);
                out.extend_from_slice(b"{\"error\":");
                out.extend_from_slice(&json);
                out.extend_from_slice(b"}\n");
                ErrorEnd {
                    data: Some(out.into()),
                    trailers: None,
                }
            }
            Framing::Json(Format::Sse) => {
                let mut out = BytesMut::with_capacity(json.len() + 16);
                out.put_slice(b"event: error\n");
                data_lines(&mut out, &json);
                out.put_u8(b'\n');
                ErrorEnd {
                    data: Some(out.freeze()),
                    trailers: None,
                }
            }
            Framing::Json(Format::JsonArray) => ErrorEnd {
                data: Some(Bytes::from_static(b"]")),
                trailers: Some(status_trailers(status)),
            },
        }
    }
}

/// `grpc-status` and `grpc-message` trailers for a status JSON.
fn status_trailers(status: &serde_json::Value) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    let code = status
        .get("code")
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(2);
    trailers.insert(TRAILER_STATUS, HeaderValue::from(code));
    let message = status
        .get("message")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("");
    let encoded = utf8_percent_encode(message, GRPC_MESSAGE).to_string();
    if let Ok(value) = HeaderValue::from_str(&encoded) {
        trailers.insert(TRAILER_MESSAGE, value);
    }
    trailers
}

/// `name: value\n`, with any line break in the value dropped: an event
/// field is one line (HTML Living Standard, server-sent events).
fn field_line(out: &mut BytesMut, name: &str, value: &str) {
    out.put_slice(name.as_bytes());
    out.put_slice(b": ");
    for byte in value.bytes().filter(|b| *b != b'\n' && *b != b'\r') {
        out.put_u8(byte);
    }
    out.put_u8(b'\n');
}

/// One `data:` line per line of `text` (compact JSON has none, but a
/// message's rendering is not trusted to stay so).
fn data_lines(out: &mut BytesMut, text: &[u8]) {
    for line in text.split(|b| *b == b'\n') {
        out.put_slice(b"data: ");
        out.put_slice(line.strip_suffix(b"\r").unwrap_or(line));
        out.put_u8(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndjson_is_one_line_per_message_and_a_final_error_object() {
        let mut encoder = Encoder::new(Framing::Json(Format::Ndjson));
        assert_eq!(encoder.open(None), None);
        assert_eq!(
            &encoder.message(b"{\"a\":1}", &EventFields::default())[..],
            b"{\"a\":1}\n"
        );
        let end = encoder.error(&serde_json::json!({"code": 14, "message": "down"}));
        assert_eq!(
            end.data.as_deref(),
            Some(&b"{\"error\":{\"code\":14,\"message\":\"down\"}}\n"[..])
        );
    }

    #[test]
    fn sse_events_carry_id_event_and_data() {
        let mut encoder = Encoder::new(Framing::Json(Format::Sse));
        assert_eq!(
            encoder.open(Some(Duration::from_secs(3))).as_deref(),
            Some(&b"retry: 3000\n\n"[..])
        );
        let fields = EventFields {
            id: Some("7\nx".into()),
            event: Some("added".into()),
        };
        assert_eq!(
            &encoder.message(b"{\"a\":1}", &fields)[..],
            b"id: 7x\nevent: added\ndata: {\"a\":1}\n\n"
        );
        let end = encoder.error(&serde_json::json!({"code": 4}));
        assert_eq!(
            end.data.as_deref(),
            Some(&b"event: error\ndata: {\"code\":4}\n\n"[..])
        );
    }

    #[test]
    fn a_json_array_is_valid_when_complete_and_fails_into_trailers() {
        let mut encoder = Encoder::new(Framing::Json(Format::JsonArray));
        let mut body = encoder.open(None).expect("opens").to_vec();
        for message in [&b"1"[..], b"2", b"3"] {
            body.extend_from_slice(&encoder.message(message, &EventFields::default()));
        }
        body.extend_from_slice(&encoder.close().expect("closes"));
        let parsed: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
        assert_eq!(parsed, serde_json::json!([1, 2, 3]));
        let end = encoder.error(&serde_json::json!({"code": 13, "message": "100% broken"}));
        let trailers = end.trailers.expect("trailers");
        assert_eq!(trailers[TRAILER_STATUS], "13");
        assert_eq!(trailers[TRAILER_MESSAGE], "100%25 broken");
    }
}
