//! Any query string on GET /v1/echo is applied or rejected as a client error.
#![no_main]

mod common;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use protogate::route::path::normalize;
use protogate::transcode::{self, request::HttpInput};

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else { return };
    let path = normalize("/v1/echo").expect("valid");
    let found = common::table().find(&http::Method::GET, &path).expect("route");
    let _ = transcode::request(
        common::plan(&found),
        HttpInput { captures: &found.captures, query: Some(query), content_type: None, body: Bytes::new(), max_json_depth: 64, multipart: Some(transcode::MultipartLimits { max_part_bytes: 1 << 20, max_parts: 64 }) },
    );
});
