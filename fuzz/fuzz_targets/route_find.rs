//! Normalising and routing any path never panics.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use protogate::route::path::normalize;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(path) = normalize(text) {
        for method in [http::Method::GET, http::Method::POST, http::Method::PUT] {
            let _ = common::table().find(&method, &path);
        }
    }
});
