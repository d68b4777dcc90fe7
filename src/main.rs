//! The `protogate` binary: the command line only; everything else is the library.

// glibc malloc contends across the runtime's worker threads on a gateway's
// many small short-lived allocations; mimalloc's thread-local heaps do not.
// Its heap on transparent huge pages costs memory and saves CPU; decision
// 0013 has the figures and the switch.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    protogate::cli::main()
}
