//! Where log lines go: standard error, through a bounded queue and one
//! writer thread. A request thread only formats its line and queues it; the
//! writer takes whatever has piled up and writes it in one system call, so
//! under load the access log costs a fraction of a write per request instead
//! of one each (the write was over half of the access log's cost).
//!
//! The queue holds at most `buffer_lines` lines. When the writer falls that
//! far behind (a stalled pipe, a slow collector) new lines are dropped, not
//! waited for: a request is never held up by its log line. Dropped lines
//! are counted (`protogate_log_lines_dropped_total`). `buffer_lines = 0`
//! writes each line from the thread that logs it, waiting for the write.

use std::io::{BufWriter, IsTerminal};
use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};

/// Lines the queue holds by default: about 2.5 MB of access log lines,
/// several hundred milliseconds of them at the load benchmarks' rates.
pub const DEFAULT_BUFFER_LINES: usize = 8192;

/// Bytes gathered before a write when lines arrive faster than they drain.
const WRITE_BUFFER_BYTES: usize = 64 * 1024;

static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Log lines dropped so far because the queue was full.
pub fn dropped_lines() -> u64 {
    DROPPED.get().map_or(0, |c| c.dropped_lines() as u64)
}

/// Installs the process's logger: `RUST_LOG` (default `info`), text or JSON
/// lines. The guard flushes the queue when dropped; keep it until exit.
pub fn init(json: bool, buffer_lines: usize) -> Option<WorkerGuard> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only for a person at a terminal: in a file, a pipe or a
    // log collector they are noise (NO_COLOR turns them off everywhere).
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    if buffer_lines == 0 {
        let builder = builder.with_writer(std::io::stderr);
        match json {
            true => builder.json().init(),
            false => builder.init(),
        }
        return None;
    }
    let (writer, guard) = NonBlockingBuilder::default()
        .buffered_lines_limit(buffer_lines)
        .lossy(true)
        .thread_name("protogate-log")
        .finish(BufWriter::with_capacity(
            WRITE_BUFFER_BYTES,
            std::io::stderr(),
        ));
    let _ = DROPPED.set(writer.error_counter());
    let builder = builder.with_writer(writer);
    match json {
        true => builder.json().init(),
        false => builder.init(),
    }
    Some(guard)
}
