//! Any multipart/form-data body posted to /v1/echo (`body: "*"`), put to
//! /v1/echo/{string_value}/nested (`body: "nested"`) or posted to /v1/raw
//! (a google.api.HttpBody request) is transcoded or rejected as a client
//! error, never panics, and never answers as if the gateway were at fault.
#![no_main]

mod common;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use protogate::route::path::normalize;
use protogate::transcode::{self, TranscodeError, request::HttpInput};

const LIMITS: transcode::MultipartLimits =
    transcode::MultipartLimits { max_part_bytes: 256, max_parts: 16 };

fuzz_target!(|data: &[u8]| {
    // The seed corpus writes forms with this boundary.
    let form = http::HeaderValue::from_static("multipart/form-data; boundary=fuzz");
    for (method, path) in [
        (http::Method::POST, "/v1/echo"),
        (http::Method::PUT, "/v1/echo/s/nested"),
        (http::Method::POST, "/v1/raw"),
    ] {
        let path = normalize(path).expect("valid");
        let found = common::table().find(&method, &path).expect("route");
        let result = transcode::request(
            common::plan(&found),
            HttpInput {
                captures: &found.captures,
                query: None,
                content_type: Some(&form),
                body: Bytes::copy_from_slice(data),
                max_json_depth: 64,
                multipart: Some(LIMITS),
            },
        );
        assert!(
            !matches!(
                result,
                Err(TranscodeError::Render(_) | TranscodeError::UndecodableResponse { .. })
            ),
            "{result:?}"
        );
    }
});
