//! Any JSON body posted to /v1/echo is transcoded or rejected as a client error.
#![no_main]

mod common;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use protogate::route::path::normalize;
use protogate::transcode::{self, request::HttpInput};

fuzz_target!(|data: &[u8]| {
    let path = normalize("/v1/echo").expect("valid");
    let found = common::table().find(&http::Method::POST, &path).expect("route");
    let json = http::HeaderValue::from_static("application/json");
    let _ = transcode::request(
        common::plan(&found),
        HttpInput {
            captures: &found.captures,
            query: None,
            content_type: Some(&json),
            body: Bytes::copy_from_slice(data),
            max_json_depth: 64,
        },
    );
});
