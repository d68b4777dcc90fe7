//! Any headers and trailers an upstream answers with are read as a gRPC
//! status or refused with an error, never a panic; a status that was read
//! renders as JSON, details and all.
//!
//! Input: lines; each line's first byte picks the header (grpc-status,
//! grpc-message, grpc-status-details-bin, or another), the rest is its value.
#![no_main]

use std::sync::OnceLock;

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use prost_reflect::DescriptorPool;

const NAMES: [&str; 4] = [
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    "x-upstream-bin",
];

fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        protogate::descriptors::load(&protogate::descriptors::DescriptorSource::Protos {
            files: vec!["testing/v1/everything.proto".into()],
            include: vec![concat!(env!("CARGO_MANIFEST_DIR"), "/../proto").into()],
        })
        .expect("repo protos compile")
    })
}

fuzz_target!(|data: &[u8]| {
    let mut metadata = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let Some((&pick, value)) = line.split_first() else { continue };
        let name = HeaderName::from_static(NAMES[usize::from(pick) % NAMES.len()]);
        if let Ok(value) = HeaderValue::from_bytes(value) {
            metadata.append(name, value);
        }
    }
    if let Ok(status) = protogate::upstream::status::read(&metadata) {
        let _ = protogate::transcode::upstream_status(&status, pool());
    }
});
