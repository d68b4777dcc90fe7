//! Generates the typed Bookstore service used by `protogate demo` and the
//! tests, and the streaming test service.
//!
//! The gateway itself needs no generated code (it works from reflected
//! descriptors); only the in-process example upstream does. protox compiles the
//! protos in pure Rust, so building needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(
        [
            "bookstore/v1/bookstore.proto",
            "google/rpc/status.proto",
            "google/rpc/error_details.proto",
            // Only the tests' streaming upstream uses this one.
            "testing/v1/streaming.proto",
        ],
        ["proto"],
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
