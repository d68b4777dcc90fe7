//! The `protogate` binary: the command line only; everything else is the library.

// glibc malloc contends across the runtime's worker threads on a gateway's
// many small short-lived allocations; mimalloc's thread-local heaps do not.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    keep_the_heap_on_small_pages();
    protogate::cli::main()
}

/// mimalloc advises its arena for transparent huge pages, and each sparsely
/// used 2 MiB of it is then resident whole: ~33 MiB under load instead of ~20,
/// for up to ~10% less CPU per request (decisions 0013 and 0016). Memory is
/// the default; an operator who sets MIMALLOC_ALLOW_THP (mimalloc's own
/// switch, read before `main`) chooses for himself, and `=1` buys the CPU back.
/// The flag is the process's: new mappings and faults get 4 KiB pages, and
/// the few pages touched before `main` stay as they are.
#[cfg(target_os = "linux")]
fn keep_the_heap_on_small_pages() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // A kernel without PR_SET_THP_DISABLE (before 3.15) keeps huge pages;
        // nothing else depends on it.
        let _ = rustix::thread::disable_transparent_huge_pages(true);
    }
}

#[cfg(not(target_os = "linux"))]
fn keep_the_heap_on_small_pages() {}
