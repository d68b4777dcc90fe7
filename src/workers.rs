//! The threads that serve connections: one single-threaded tokio runtime
//! per thread, each serving whole client connections and holding its own
//! share of every endpoint's upstream HTTP/2 connections.
//!
//! A request then runs start to finish on one thread: its client
//! connection, the pipeline, and the upstream connection its call goes out
//! on, so the wake-ups between them stay on the thread that is already
//! running (no cross-thread wake-up, no work stealing, warm caches). The
//! listener hands each new connection to the thread serving the fewest, and
//! the upstream pool dials connection slot `i` on thread `i % threads`
//! ([`crate::upstream`] prefers the caller's own slots). Everything else,
//! accept loop, discovery, health checks, reloads and the admin listener,
//! stays on the process's main runtime.
//!
//! Until [`start`] is called (library use, tests, `[server] worker_threads
//! = 0`), there are no workers: connections and upstream slots run on the
//! caller's runtime as tasks of it. See docs/decisions/0010-worker-threads.md.

use std::cell::Cell;
use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::TcpStream;
use tokio::runtime::Handle;

/// The running workers, once started.
static WORKERS: OnceLock<Workers> = OnceLock::new();

thread_local! {
    /// The index of the worker this thread is, if it is one.
    static CURRENT: Cell<Option<usize>> = const { Cell::new(None) };
}

#[derive(Debug)]
struct Workers {
    handles: Vec<Handle>,
    /// Client connections each worker is serving.
    serving: Vec<AtomicUsize>,
}

/// Starts `count` worker threads, each running its own single-threaded
/// runtime until the process exits. Starting twice, or with `count` 0, is
/// a no-op.
pub fn start(count: usize) -> std::io::Result<()> {
    if count == 0 || WORKERS.get().is_some() {
        return Ok(());
    }
    let mut handles = Vec::with_capacity(count);
    for index in 0..count {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        handles.push(runtime.handle().clone());
        std::thread::Builder::new()
            .name(format!("protogate-worker-{index}"))
            .spawn(move || {
                CURRENT.set(Some(index));
                // Runs the tasks spawned onto this worker, until the process ends.
                runtime.block_on(std::future::pending::<()>());
            })?;
    }
    let serving = handles.iter().map(|_| AtomicUsize::new(0)).collect();
    let _ = WORKERS.set(Workers { handles, serving });
    Ok(())
}

/// How many workers run (0 before [`start`]).
pub fn count() -> usize {
    WORKERS.get().map_or(0, |w| w.handles.len())
}

/// The worker the calling thread is, if it is one.
pub fn current() -> Option<usize> {
    CURRENT.get()
}

/// Runs `task` on worker `index % count()`, or on the caller's runtime when
/// there are no workers.
pub fn spawn_on<F>(index: usize, task: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    match WORKERS.get() {
        Some(workers) => {
            workers.handles[index % workers.handles.len()].spawn(task);
        }
        None => {
            tokio::spawn(task);
        }
    }
}

/// Runs `serve` on one accepted client connection, on the worker serving
/// the fewest connections (or on the caller's runtime when there are no
/// workers). The stream leaves the caller's reactor for the worker's; the
/// worker's count includes the connection until `serve` returns.
pub fn spawn_connection<F, Fut>(stream: TcpStream, serve: F)
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(workers) = WORKERS.get() else {
        tokio::spawn(serve(stream));
        return;
    };
    let fewest =
        (workers.serving.iter().enumerate()).min_by_key(|(_, n)| n.load(Ordering::Relaxed));
    let Some((index, serving)) = fewest else {
        tokio::spawn(serve(stream));
        return;
    };
    let stream = match stream.into_std() {
        Ok(stream) => stream,
        Err(e) => {
            tracing::debug!(error = %e, "accepted connection lost");
            return;
        }
    };
    serving.fetch_add(1, Ordering::Relaxed);
    let serving = Serving(serving);
    workers.handles[index].spawn(async move {
        let _serving = serving;
        match TcpStream::from_std(stream) {
            Ok(stream) => serve(stream).await,
            Err(e) => tracing::debug!(error = %e, "accepted connection lost"),
        }
    });
}

/// Counts one connection on its worker until dropped.
struct Serving(&'static AtomicUsize);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
