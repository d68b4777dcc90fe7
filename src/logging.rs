//! Where log lines go: standard error, through a bounded queue and one
//! writer thread. A request thread only formats its line and queues it; the
//! writer lets lines gather for a few milliseconds between writes, so under
//! load one system call carries many lines and the request threads never
//! wake the writer (it is not waiting on the queue while lines flow). The
//! write was over half of the access log's cost when each request made its
//! own (decision 0012).
//!
//! The queue holds at most `buffer_lines` lines. When the writer falls that
//! far behind (a stalled pipe, a slow collector) new lines are dropped, not
//! waited for: a request is never held up by its log line. Dropped lines
//! are counted (`protogate_log_lines_dropped_total`). `buffer_lines = 0`
//! writes each line from the thread that logs it, waiting for the write.

use std::io::{self, BufWriter, IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{DefaultFields, Format};
use tracing_subscriber::fmt::{MakeWriter, SubscriberBuilder};

mod fields;

/// Lines the queue holds by default: about 2.5 MB of access log lines,
/// several hundred milliseconds of them at the load benchmarks' rates.
pub const DEFAULT_BUFFER_LINES: usize = 8192;

/// Bytes gathered before a write when lines arrive faster than they drain.
const WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// How long lines gather after a write while they keep coming: the most a
/// line waits to be written under load.
const GATHER: Duration = Duration::from_millis(5);

static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Log lines dropped so far because the queue was full.
pub fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Installs the process's logger: `RUST_LOG` (default `info`), text or JSON
/// lines. The guard writes what is still queued when dropped; keep it until
/// exit.
pub fn init(json: bool, buffer_lines: usize) -> Option<Flush> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only for a person at a terminal: in a file, a pipe or a
    // log collector they are noise (NO_COLOR turns them off everywhere).
    let ansi = io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    if buffer_lines == 0 {
        install(builder.with_writer(io::stderr), json, ansi);
        return None;
    }
    let (queue, flush) = start(buffer_lines)?;
    install(builder.with_writer(queue), json, ansi);
    Some(flush)
}

type Builder<W> = SubscriberBuilder<DefaultFields, Format, EnvFilter, W>;

/// Sets the global subscriber: JSON lines, or text lines whose fields are
/// written by [`fields::PlainFields`] when there are no colours to write.
fn install<W>(builder: Builder<W>, json: bool, ansi: bool)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    match (json, ansi) {
        (true, _) => builder.json().init(),
        (false, true) => builder.init(),
        (false, false) => builder.fmt_fields(fields::PlainFields).init(),
    }
}

/// What goes through the queue.
enum Message {
    Line(Vec<u8>),
    /// Write what is queued and stop (the process is exiting).
    Stop,
}

/// The logging threads' end of the queue.
struct Queue(SyncSender<Message>);

impl Write for &Queue {
    /// Queues one formatted line (the formatter writes each event whole).
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        match self.0.try_send(Message::Line(line.to_vec())) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
            // The writer has stopped (the process is exiting): write it here.
            Err(TrySendError::Disconnected(_)) => io::stderr().write_all(line)?,
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Queue {
    type Writer = &'a Queue;

    fn make_writer(&'a self) -> &'a Queue {
        self
    }
}

/// Stops the writer once everything queued before it is written.
pub struct Flush {
    stop: SyncSender<Message>,
    writer: Option<JoinHandle<()>>,
}

impl Drop for Flush {
    fn drop(&mut self) {
        // Waits for room: the writer is draining, so there will be some.
        if self.stop.send(Message::Stop).is_ok()
            && let Some(writer) = self.writer.take()
        {
            let _ = writer.join();
        }
    }
}

fn start(buffer_lines: usize) -> Option<(Queue, Flush)> {
    let (sender, lines) = mpsc::sync_channel(buffer_lines);
    let writer = std::thread::Builder::new()
        .name("protogate-log".into())
        .spawn(move || drain(&lines, io::stderr()))
        .ok()?;
    let flush = Flush {
        stop: sender.clone(),
        writer: Some(writer),
    };
    Some((Queue(sender), flush))
}

/// The writer thread: blocks while the queue is idle; while lines flow,
/// writes what has gathered, then sleeps [`GATHER`] so more gather.
fn drain(lines: &Receiver<Message>, out: impl Write) {
    let mut out = BufWriter::with_capacity(WRITE_BUFFER_BYTES, out);
    while let Ok(first) = lines.recv() {
        let mut next = Ok(first);
        loop {
            match next {
                Ok(Message::Line(line)) => {
                    // A failing stderr cannot be reported anywhere; go on.
                    let _ = out.write_all(&line);
                }
                Ok(Message::Stop) | Err(TryRecvError::Disconnected) => {
                    let _ = out.flush();
                    return;
                }
                Err(TryRecvError::Empty) => {
                    let _ = out.flush();
                    std::thread::sleep(GATHER);
                    match lines.try_recv() {
                        Err(TryRecvError::Empty) => break,
                        other => next = other,
                    }
                    continue;
                }
            }
            next = lines.try_recv();
        }
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer that records each write it is given.
    #[derive(Clone, Default)]
    pub(super) struct Writes(pub(super) Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Writes {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("lock").push(buf.to_vec());
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn queued_lines_leave_in_one_write_and_all_before_the_stop() {
        let (sender, lines) = mpsc::sync_channel(64);
        let queue = Queue(sender.clone());
        for i in 0..50 {
            (&queue)
                .write_all(format!("line {i}\n").as_bytes())
                .expect("queued");
        }
        sender.send(Message::Stop).expect("stop");
        let writes = Writes::default();
        drain(&lines, writes.clone());
        let writes = writes.0.lock().expect("lock");
        assert_eq!(writes.len(), 1, "one write for lines that were waiting");
        let text = String::from_utf8_lossy(&writes[0]);
        assert_eq!(text.lines().count(), 50);
        assert!(text.starts_with("line 0\n") && text.ends_with("line 49\n"));
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let (sender, _lines) = mpsc::sync_channel(2);
        let queue = Queue(sender);
        let before = dropped_lines();
        for _ in 0..5 {
            (&queue).write_all(b"line\n").expect("never an error");
        }
        assert!(dropped_lines() >= before + 3);
    }
}
