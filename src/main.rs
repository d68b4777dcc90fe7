//! The `protogate` binary: the command line only; everything else is the library.

// glibc malloc contends across the runtime's worker threads on a gateway's
// many small short-lived allocations; mimalloc's thread-local heaps do not.
// Built without transparent huge pages (Cargo.toml, decision 0013), so
// memory under load stays near what is in use.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    protogate::cli::main()
}
