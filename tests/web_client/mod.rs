//! gRPC-Web on the wire, as a client frames and reads it (PROTOCOL-WEB.md),
//! written here apart from the gateway's own code so the tests do not
//! check the gateway against itself.
#![allow(dead_code, unreachable_pub)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// `routes.toml` lines that turn gRPC-Web on.
pub const ENABLED: &str = "\n[grpc_web]\nenabled = true\n";

/// One message frame: flag 0, big-endian length, bytes.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut framed = vec![0];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    framed
}

/// A gRPC-Web answer's body, read back.
#[derive(Debug, Default)]
pub struct WebBody {
    /// The messages, unframed.
    pub messages: Vec<Vec<u8>>,
    /// The trailers frame's lines, in order, if there was one.
    pub trailers: Option<Vec<(String, String)>>,
}

impl WebBody {
    /// A trailer's value.
    pub fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers
            .as_ref()?
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Decodes a `-text` body: base64, padded chunk after padded chunk.
pub fn decode_text(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut start = 0;
    for end in (4..=body.len()).step_by(4) {
        if body[end - 1] == b'=' || end == body.len() {
            out.extend(STANDARD.decode(&body[start..end]).expect("base64 chunk"));
            start = end;
        }
    }
    out
}

/// Reads frames: data frames (flag 0) then one trailers frame (0x80), last.
pub fn parse(mut body: &[u8]) -> WebBody {
    let mut parsed = WebBody::default();
    while !body.is_empty() {
        assert!(body.len() >= 5, "truncated frame prefix: {body:?}");
        let flag = body[0];
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let payload = body[5..5 + len].to_vec();
        body = &body[5 + len..];
        assert!(parsed.trailers.is_none(), "a frame after the trailers");
        match flag {
            0 => parsed.messages.push(payload),
            0x80 => {
                let text = String::from_utf8(payload).expect("trailers are text");
                let lines = text
                    .split("\r\n")
                    .filter(|l| !l.is_empty())
                    .map(|line| {
                        let (name, value) = line.split_once(": ").expect("name: value");
                        assert_eq!(name, name.to_ascii_lowercase(), "lower-case names");
                        (name.to_string(), value.to_string())
                    })
                    .collect();
                parsed.trailers = Some(lines);
            }
            other => panic!("unexpected frame flag {other:#x}"),
        }
    }
    parsed
}
