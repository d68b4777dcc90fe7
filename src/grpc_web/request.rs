//! A gRPC-Web request body → the gRPC frames sent upstream. The body is
//! read whole first (under the gateway's body limit), so a message the
//! upstream would get is always complete and checked: a malformed body
//! never reaches the upstream.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;

use super::{Encoding, GrpcWebError};

/// Length of a frame's prefix: one flag byte, four length bytes.
const PREFIX_LEN: usize = 5;
/// Flag bit of a compressed message.
const COMPRESSED: u8 = 0x01;
/// Flag bit of a trailers frame (answers only).
const TRAILERS: u8 = 0x80;

/// The request's messages, still framed as gRPC sends them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frames {
    /// Every frame, as received (binary) or decoded (text).
    pub framed: Bytes,
    /// How many messages they hold.
    pub count: usize,
}

/// Checks a request body and returns its frames: each an uncompressed
/// message frame, none cut short.
pub fn frames(body: Bytes, encoding: Encoding) -> Result<Frames, GrpcWebError> {
    let framed = match encoding {
        Encoding::Binary => body,
        Encoding::Text => decode_text(&body)?,
    };
    let count = count_frames(&framed)?;
    Ok(Frames { framed, count })
}

/// A `-text` body: base64, possibly several padded chunks one after the
/// other (a client may encode each message on its own). Each run of
/// 4-character quanta up to one that ends in padding is decoded apart.
fn decode_text(body: &[u8]) -> Result<Bytes, GrpcWebError> {
    if !body.len().is_multiple_of(4) {
        return Err(GrpcWebError::InvalidBase64(format!(
            "its length {} is not a multiple of 4",
            body.len()
        )));
    }
    let mut decoded = Vec::with_capacity(body.len() / 4 * 3);
    let mut start = 0;
    for end in (4..=body.len()).step_by(4) {
        if body[end - 1] == b'=' || end == body.len() {
            STANDARD
                .decode_vec(&body[start..end], &mut decoded)
                .map_err(|e| GrpcWebError::InvalidBase64(e.to_string()))?;
            start = end;
        }
    }
    Ok(Bytes::from(decoded))
}

/// Counts the message frames in `framed`, refusing anything else.
fn count_frames(framed: &[u8]) -> Result<usize, GrpcWebError> {
    let mut rest = framed;
    let mut count = 0;
    while !rest.is_empty() {
        if rest.len() < PREFIX_LEN {
            return Err(malformed(format!(
                "{} bytes after the last frame, too few for a frame prefix",
                rest.len()
            )));
        }
        let flag = rest[0];
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        if flag & TRAILERS != 0 {
            return Err(malformed("a request cannot carry a trailers frame".into()));
        }
        if flag & COMPRESSED != 0 {
            return Err(GrpcWebError::Compressed);
        }
        if flag != 0 {
            return Err(malformed(format!("invalid frame flag {flag:#04x}")));
        }
        let available = rest.len() - PREFIX_LEN;
        if available < len {
            return Err(malformed(format!(
                "frame {} announces {len} bytes, {available} follow",
                count + 1
            )));
        }
        rest = &rest[PREFIX_LEN + len..];
        count += 1;
    }
    Ok(count)
}

fn malformed(reason: String) -> GrpcWebError {
    GrpcWebError::MalformedFrame(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(message: &[u8]) -> Vec<u8> {
        let mut framed = vec![0];
        framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
        framed.extend_from_slice(message);
        framed
    }

    #[test]
    fn binary_frames_pass_through_as_received() {
        let mut body = frame(b"one");
        body.extend(frame(b""));
        let found = frames(Bytes::from(body.clone()), Encoding::Binary).expect("valid");
        assert_eq!(found.count, 2);
        assert_eq!(found.framed, body);
    }

    #[test]
    fn text_bodies_may_hold_several_padded_chunks() {
        let (a, b) = (frame(b"hello"), frame(b"hi"));
        let text = format!("{}{}", STANDARD.encode(&a), STANDARD.encode(&b));
        assert!(text.contains("=A"), "padding inside: {text}");
        let found = frames(Bytes::from(text), Encoding::Text).expect("valid");
        assert_eq!(found.count, 2);
        assert_eq!(found.framed, [a, b].concat());
    }

    #[test]
    fn bad_base64_is_refused() {
        for body in ["abc", "ab!=", "=AAA", "AA==AA=A"] {
            let refused = frames(Bytes::from(body), Encoding::Text);
            assert!(
                matches!(refused, Err(GrpcWebError::InvalidBase64(_))),
                "{body}: {refused:?}"
            );
        }
    }

    #[test]
    fn malformed_frames_are_refused() {
        let cases: [(&[u8], &str); 4] = [
            (&[0, 0, 0], "too few"),
            (&[0, 0, 0, 0, 9, 1, 2], "announces 9 bytes, 2 follow"),
            (&[0x80, 0, 0, 0, 0], "trailers frame"),
            (&[0x02, 0, 0, 0, 0], "invalid frame flag 0x02"),
        ];
        for (body, says) in cases {
            match frames(Bytes::copy_from_slice(body), Encoding::Binary) {
                Err(GrpcWebError::MalformedFrame(reason)) => {
                    assert!(reason.contains(says), "{reason}")
                }
                other => panic!("{body:?}: {other:?}"),
            }
        }
        let compressed = frames(Bytes::from_static(&[1, 0, 0, 0, 0]), Encoding::Binary);
        assert_eq!(compressed, Err(GrpcWebError::Compressed));
    }

    #[test]
    fn an_empty_body_holds_no_message() {
        let found = frames(Bytes::new(), Encoding::Text).expect("valid");
        assert_eq!(found.count, 0);
    }
}
