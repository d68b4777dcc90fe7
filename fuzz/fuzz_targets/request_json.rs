//! Any JSON body posted to /v1/echo (`body: "*"`) or put to
//! /v1/echo/{string_value}/nested (`body: "nested"`) is transcoded or
//! rejected as a client error; a body bound to `nested` never sets a field
//! outside it.
#![no_main]

mod common;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use protogate::route::path::normalize;
use protogate::transcode::{self, request::HttpInput};

/// Everything's `string_value` (bound by the path) and `nested` (the body).
const STRING_VALUE: u64 = 14;
const NESTED: u64 = 17;

fuzz_target!(|data: &[u8]| {
    let json = http::HeaderValue::from_static("application/json");
    for (method, path) in [
        (http::Method::POST, "/v1/echo"),
        (http::Method::PUT, "/v1/echo/s/nested"),
    ] {
        let path = normalize(path).expect("valid");
        let found = common::table().find(&method, &path).expect("route");
        let framed = transcode::request(
            common::plan(&found),
            HttpInput {
                captures: &found.captures,
                query: None,
                content_type: Some(&json),
                body: Bytes::copy_from_slice(data),
                max_json_depth: 64,
                multipart: Some(transcode::MultipartLimits { max_part_bytes: 1 << 20, max_parts: 64 }),
            },
        );
        if method == http::Method::PUT
            && let Ok(framed) = framed
        {
            for number in top_level_fields(&framed[5..]) {
                assert!(
                    number == STRING_VALUE || number == NESTED,
                    "a body bound to `nested` set field {number}"
                );
            }
        }
    }
});

/// The field numbers of an encoded message's top-level fields.
fn top_level_fields(mut message: &[u8]) -> Vec<u64> {
    let mut numbers = Vec::new();
    while let Some(tag) = varint(&mut message) {
        numbers.push(tag >> 3);
        let skip = match tag & 7 {
            0 => varint(&mut message).map(|_| 0),
            1 => Some(8),
            2 => varint(&mut message),
            5 => Some(4),
            _ => None,
        };
        let Some(skip) = skip.and_then(|n| usize::try_from(n).ok()) else {
            break;
        };
        message = message.get(skip..).unwrap_or_default();
    }
    numbers
}

fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}
