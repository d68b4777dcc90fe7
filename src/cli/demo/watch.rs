//! WatchShelf: each shelf's change log — a revision counter, a bounded
//! history to resume from, and a bounded broadcast to the live watchers —
//! and the stream one watch reads from it.
//!
//! Memory stays bounded however many changes are made and however slowly a
//! watcher reads: the history keeps the last [`HISTORY`] changes, and a
//! watcher more than [`LIVE_BACKLOG`] changes behind is cut off with
//! ABORTED instead of being fed from an ever-growing queue.

use std::collections::VecDeque;
use std::pin::Pin;

use futures_util::{Stream, StreamExt as _};
use tokio::sync::broadcast::{self, error::RecvError};
use tonic::Status;

use super::pb::bookstore::v1::shelf_event::Kind;
use super::pb::bookstore::v1::{Book, ShelfEvent};

/// How many changes a live watcher may fall behind before it is cut off.
const LIVE_BACKLOG: usize = 64;

/// Changes kept per shelf for `since_revision`: more than the live backlog,
/// so a watcher cut off for lagging can resume where it was.
const HISTORY: usize = 256;

/// The revision of a shelf as created (or as loaded with the sample data),
/// so that `since_revision = 0` never names a real revision.
const FIRST_REVISION: i64 = 1;

/// The messages of one WatchShelf call.
pub type ShelfEvents = Pin<Box<dyn Stream<Item = Result<ShelfEvent, Status>> + Send>>;

/// One shelf's changes.
#[derive(Debug)]
pub(super) struct ShelfLog {
    revision: i64,
    history: VecDeque<ShelfEvent>,
    live: broadcast::Sender<ShelfEvent>,
}

/// A watch as it starts: what it is sent first, then its subscription.
pub(super) struct Watch {
    backlog: Vec<ShelfEvent>,
    live: broadcast::Receiver<ShelfEvent>,
    revision: i64,
}

// === impl ShelfLog ===

impl Default for ShelfLog {
    fn default() -> Self {
        ShelfLog {
            revision: FIRST_REVISION,
            history: VecDeque::new(),
            live: broadcast::channel(LIVE_BACKLOG).0,
        }
    }
}

impl ShelfLog {
    /// Records a change to `book` and sends it to the live watchers.
    pub(super) fn record(&mut self, kind: Kind, book: Book) {
        self.revision += 1;
        let event = ShelfEvent {
            revision: self.revision,
            kind: kind as i32,
            book: Some(book),
        };
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(event.clone());
        // With no watcher the send fails, which is fine: the history has it.
        let _ = self.live.send(event);
    }

    /// Starts a watch from `books` (the shelf now) or from the changes
    /// after `since_revision`. Called under the store's lock, as
    /// [`ShelfLog::record`] is, so no change falls between the start and
    /// the subscription, nor is sent twice.
    pub(super) fn watch(
        &self,
        since_revision: i64,
        books: impl Iterator<Item = Book>,
    ) -> Result<Watch, Status> {
        let mut backlog = if since_revision == 0 {
            books
                .map(|book| self.event(Kind::Snapshot, Some(book)))
                .collect()
        } else {
            self.replay(since_revision)?
        };
        backlog.push(self.event(Kind::CaughtUp, None));
        Ok(Watch {
            backlog,
            live: self.live.subscribe(),
            revision: self.revision,
        })
    }

    fn replay(&self, since_revision: i64) -> Result<Vec<ShelfEvent>, Status> {
        if since_revision < 0 || since_revision > self.revision {
            return Err(Status::out_of_range(format!(
                "since_revision {since_revision} is not a revision of this shelf (its latest is {})",
                self.revision
            )));
        }
        let oldest_kept = self
            .history
            .front()
            .map_or(self.revision, |event| event.revision - 1);
        if since_revision < oldest_kept {
            return Err(Status::out_of_range(format!(
                "since_revision {since_revision} is older than the history kept (from {oldest_kept}); watch without since_revision for a fresh snapshot"
            )));
        }
        Ok(self
            .history
            .iter()
            .filter(|event| event.revision > since_revision)
            .cloned()
            .collect())
    }

    fn event(&self, kind: Kind, book: Option<Book>) -> ShelfEvent {
        ShelfEvent {
            revision: self.revision,
            kind: kind as i32,
            book,
        }
    }
}

// === impl Watch ===

impl Watch {
    /// The backlog, then each live change until the shelf is deleted (the
    /// stream ends) or the watcher falls behind (ABORTED). Nothing is
    /// spawned: when the caller goes away, the stream and its
    /// subscription are dropped with the call.
    pub(super) fn into_stream(self) -> ShelfEvents {
        let backlog = futures_util::stream::iter(self.backlog.into_iter().map(Ok));
        let live =
            futures_util::stream::unfold(Some((self.live, self.revision)), |state| async move {
                let (mut live, delivered) = state?;
                match live.recv().await {
                    Ok(event) => {
                        let revision = event.revision;
                        Some((Ok(event), Some((live, revision))))
                    }
                    Err(RecvError::Closed) => None,
                    Err(RecvError::Lagged(missed)) => {
                        Some((Err(fell_behind(missed, delivered)), None))
                    }
                }
            });
        Box::pin(backlog.chain(live))
    }
}

/// Ends a watch that missed changes, rather than skip them silently: the
/// caller learns where to resume from.
fn fell_behind(missed: u64, delivered: i64) -> Status {
    Status::aborted(format!(
        "watcher fell behind by {missed} changes; reconnect with since_revision={delivered}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(id: i64) -> Book {
        Book {
            id,
            title: format!("book {id}"),
            ..Book::default()
        }
    }

    fn kinds(events: &[ShelfEvent]) -> Vec<(i64, Kind)> {
        events
            .iter()
            .map(|e| (e.revision, Kind::try_from(e.kind).expect("a known kind")))
            .collect()
    }

    #[test]
    fn a_watch_from_zero_is_a_snapshot_then_caught_up() {
        let mut log = ShelfLog::default();
        log.record(Kind::BookCreated, book(7));
        let watch = log
            .watch(0, [book(1), book(7)].into_iter())
            .expect("starts");
        assert_eq!(
            kinds(&watch.backlog),
            [
                (2, Kind::Snapshot),
                (2, Kind::Snapshot),
                (2, Kind::CaughtUp)
            ]
        );
    }

    #[test]
    fn a_watch_since_a_revision_replays_only_what_came_after() {
        let mut log = ShelfLog::default();
        for id in 1..=3 {
            log.record(Kind::BookCreated, book(id));
        }
        let watch = log.watch(2, std::iter::empty()).expect("starts");
        assert_eq!(
            kinds(&watch.backlog),
            [
                (3, Kind::BookCreated),
                (4, Kind::BookCreated),
                (4, Kind::CaughtUp)
            ]
        );
    }

    #[test]
    fn a_revision_older_than_the_history_is_out_of_range() {
        let mut log = ShelfLog::default();
        for id in 0..=HISTORY as i64 {
            log.record(Kind::BookUpdated, book(id));
        }
        let status = log.watch(1, std::iter::empty()).err().expect("refused");
        assert_eq!(status.code(), tonic::Code::OutOfRange);
        assert!(log.watch(2, std::iter::empty()).is_ok());
        let future = log
            .watch(log.revision + 1, std::iter::empty())
            .err()
            .expect("refused");
        assert_eq!(future.code(), tonic::Code::OutOfRange);
    }

    #[tokio::test]
    async fn a_watcher_that_falls_behind_is_aborted_with_where_to_resume() {
        let mut log = ShelfLog::default();
        let mut events = log
            .watch(0, std::iter::empty())
            .expect("starts")
            .into_stream();
        let caught_up = events.next().await.expect("an event").expect("ok");
        assert_eq!(caught_up.kind, Kind::CaughtUp as i32);
        for id in 0..=LIVE_BACKLOG as i64 {
            log.record(Kind::BookCreated, book(id));
        }
        let status = events.next().await.expect("an end").expect_err("aborted");
        assert_eq!(status.code(), tonic::Code::Aborted);
        assert!(
            status
                .message()
                .ends_with("reconnect with since_revision=1"),
            "{}",
            status.message()
        );
        assert!(events.next().await.is_none());
    }

    #[tokio::test]
    async fn live_changes_follow_the_backlog_and_the_stream_ends_with_the_log() {
        let mut log = ShelfLog::default();
        let mut events = log
            .watch(0, [book(1)].into_iter())
            .expect("starts")
            .into_stream();
        log.record(Kind::BookDeleted, book(1));
        drop(log);
        let mut seen = Vec::new();
        while let Some(event) = events.next().await {
            seen.push(event.expect("ok"));
        }
        assert_eq!(
            kinds(&seen),
            [
                (1, Kind::Snapshot),
                (1, Kind::CaughtUp),
                (2, Kind::BookDeleted)
            ]
        );
    }
}
