//! The answer's body: each upstream message as a data frame, then the
//! trailers as the last frame (flag 0x80) holding HTTP/1-style header
//! lines with lower-case names. In `-text` mode every chunk written is
//! base64 on its own (padded), as the protocol allows, so a chunk can go
//! out the moment its message arrives.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use tonic::Code;

use super::Encoding;
use crate::headers::{GRPC_MESSAGE, GRPC_STATUS, GRPC_STATUS_DETAILS};

/// Flag byte of a trailers frame.
const TRAILERS_FLAG: u8 = 0x80;

/// What gRPC-Web's percent-encoding leaves alone: visible ASCII but `%`
/// (PROTOCOL-HTTP2.md, Status-Message).
const MESSAGE_ESCAPES: &AsciiSet = &CONTROLS.add(b'%');

/// The trailers of an answer, in the order they are written.
#[derive(Debug, Clone, Default)]
pub struct Trailers(pub HeaderMap);

impl Trailers {
    /// A status the gateway writes itself: its code and message
    /// (percent-encoded as gRPC requires).
    pub fn status(code: Code, message: &str) -> Trailers {
        let mut trailers = HeaderMap::new();
        trailers.insert(GRPC_STATUS, HeaderValue::from(code as i32));
        let encoded = utf8_percent_encode(message, MESSAGE_ESCAPES).to_string();
        if let Ok(value) = HeaderValue::from_str(&encoded)
            && !encoded.is_empty()
        {
            trailers.insert(GRPC_MESSAGE, value);
        }
        Trailers(trailers)
    }

    /// An upstream's final status, as it sent it: `grpc-status`,
    /// `grpc-message` and `grpc-status-details-bin` passed through
    /// untouched, then the allowlisted metadata.
    pub fn upstream(metadata: &HeaderMap, allowlist: &[http::HeaderName]) -> Trailers {
        let mut trailers = HeaderMap::new();
        for name in [GRPC_STATUS, GRPC_MESSAGE, GRPC_STATUS_DETAILS] {
            if let Some(value) = metadata.get(&name) {
                trailers.insert(name, value.clone());
            }
        }
        if !trailers.contains_key(GRPC_STATUS) {
            trailers.insert(GRPC_STATUS, HeaderValue::from_static("0"));
        }
        for name in allowlist {
            for value in metadata.get_all(name) {
                trailers.append(name.clone(), value.clone());
            }
        }
        Trailers(trailers)
    }
}

/// One message as a data frame, in the answer's encoding.
pub fn message_chunk(encoding: Encoding, message: &[u8]) -> Bytes {
    encoded(encoding, framed(0, message))
}

/// The trailers frame, in the answer's encoding.
pub fn trailer_chunk(encoding: Encoding, trailers: &Trailers) -> Bytes {
    let mut block = Vec::new();
    for (name, value) in &trailers.0 {
        block.extend_from_slice(name.as_str().as_bytes());
        block.extend_from_slice(b": ");
        block.extend_from_slice(value.as_bytes());
        block.extend_from_slice(b"\r\n");
    }
    encoded(encoding, framed(TRAILERS_FLAG, &block))
}

fn framed(flag: u8, payload: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(5 + payload.len());
    frame.put_u8(flag);
    frame.put_u32(u32::try_from(payload.len()).unwrap_or(u32::MAX));
    frame.put_slice(payload);
    frame.freeze()
}

fn encoded(encoding: Encoding, frame: Bytes) -> Bytes {
    match encoding {
        Encoding::Binary => frame,
        Encoding::Text => Bytes::from(STANDARD.encode(&frame)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailers_are_a_flagged_frame_of_header_lines() {
        let chunk = trailer_chunk(
            Encoding::Binary,
            &Trailers::status(Code::NotFound, "no shelf 50%"),
        );
        let block = b"grpc-status: 5\r\ngrpc-message: no shelf 50%25\r\n";
        assert_eq!(chunk[0], 0x80);
        assert_eq!(&chunk[1..5], &(block.len() as u32).to_be_bytes());
        assert_eq!(&chunk[5..], block);
    }

    #[test]
    fn text_chunks_are_base64_each() {
        let chunk = message_chunk(Encoding::Text, b"hi");
        assert_eq!(&chunk[..], b"AAAAAAJoaQ==");
    }

    #[test]
    fn upstream_status_passes_through_with_allowlisted_metadata() {
        let mut metadata = HeaderMap::new();
        metadata.insert(GRPC_STATUS, HeaderValue::from_static("3"));
        metadata.insert(GRPC_STATUS_DETAILS, HeaderValue::from_static("CAM"));
        metadata.insert("x-secret", HeaderValue::from_static("s"));
        metadata.insert("x-shown", HeaderValue::from_static("v"));
        let allow = [http::HeaderName::from_static("x-shown")];
        let Trailers(trailers) = Trailers::upstream(&metadata, &allow);
        assert_eq!(trailers["grpc-status"], "3");
        assert_eq!(trailers["grpc-status-details-bin"], "CAM");
        assert_eq!(trailers["x-shown"], "v");
        assert!(!trailers.contains_key("x-secret"));
    }
}
