//! How a key's state is written as one Redis value: an in-flight marker
//! (`P`, the request's fingerprint, the claim's random token) or a
//! completed answer (`D`, the fingerprint, status, headers, body).
//! Length-prefixed binary; a value that does not decode counts as absent.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::{Fingerprint, StoredAnswer};

const IN_FLIGHT: u8 = b'P';
const DONE: u8 = b'D';

/// A key's state as read back.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Decoded {
    InFlight(Fingerprint),
    Done(Fingerprint, StoredAnswer),
}

pub(super) fn in_flight(fingerprint: Fingerprint, token: [u8; 16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(49);
    out.push(IN_FLIGHT);
    out.extend_from_slice(&fingerprint.0);
    out.extend_from_slice(&token);
    out
}

pub(super) fn done(fingerprint: Fingerprint, answer: &StoredAnswer) -> Vec<u8> {
    let mut out = BytesMut::with_capacity(40 + answer.weight() + 6 * answer.headers.len());
    out.put_u8(DONE);
    out.put_slice(&fingerprint.0);
    out.put_u16(answer.status.as_u16());
    out.put_u16(answer.headers.len() as u16);
    for (name, value) in &answer.headers {
        out.put_u16(name.as_str().len() as u16);
        out.put_slice(name.as_str().as_bytes());
        out.put_u32(value.len() as u32);
        out.put_slice(value.as_bytes());
    }
    out.put_slice(&answer.body);
    out.to_vec()
}

pub(super) fn decode(value: &[u8]) -> Option<Decoded> {
    let mut buf = Bytes::copy_from_slice(value);
    let kind = take_u8(&mut buf)?;
    let fingerprint = Fingerprint(take(&mut buf, 32)?.as_ref().try_into().ok()?);
    match kind {
        IN_FLIGHT => Some(Decoded::InFlight(fingerprint)),
        DONE => {
            let status = StatusCode::from_u16(take_u16(&mut buf)?).ok()?;
            let count = take_u16(&mut buf)?;
            let mut headers = HeaderMap::with_capacity(count as usize);
            for _ in 0..count {
                let name_len = take_u16(&mut buf)? as usize;
                let name = HeaderName::from_bytes(&take(&mut buf, name_len)?).ok()?;
                let value_len = take_u32(&mut buf)? as usize;
                let value = HeaderValue::from_maybe_shared(take(&mut buf, value_len)?).ok()?;
                headers.append(name, value);
            }
            Some(Decoded::Done(
                fingerprint,
                StoredAnswer {
                    status,
                    headers,
                    body: buf,
                },
            ))
        }
        _ => None,
    }
}

fn take(buf: &mut Bytes, n: usize) -> Option<Bytes> {
    (buf.remaining() >= n).then(|| buf.split_to(n))
}

fn take_u8(buf: &mut Bytes) -> Option<u8> {
    (buf.remaining() >= 1).then(|| buf.get_u8())
}

fn take_u16(buf: &mut Bytes) -> Option<u16> {
    (buf.remaining() >= 2).then(|| buf.get_u16())
}

fn take_u32(buf: &mut Bytes) -> Option<u32> {
    (buf.remaining() >= 4).then(|| buf.get_u32())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_round_trips() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        let answer = StoredAnswer {
            status: StatusCode::CREATED,
            headers,
            body: Bytes::from_static(b"{\"id\":\"1\"}"),
        };
        let print = Fingerprint([3; 32]);
        assert_eq!(
            decode(&done(print, &answer)),
            Some(Decoded::Done(print, answer))
        );
        assert_eq!(
            decode(&in_flight(print, [1; 16])),
            Some(Decoded::InFlight(print))
        );
    }

    #[test]
    fn garbage_does_not_decode() {
        let answer = StoredAnswer {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        };
        let encoded = done(Fingerprint([0; 32]), &answer);
        for cut in 0..encoded.len() - 1 {
            let _ = decode(&encoded[..cut]);
        }
        assert_eq!(decode(b""), None);
        assert_eq!(decode(b"X"), None);
        assert_eq!(decode(&[b'D'; 40]), None);
    }
}
