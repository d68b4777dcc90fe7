//! What one client connection is doing, as its supervisor in
//! [`super::serve`] needs to know it: whether a first request ever came,
//! how many requests are in flight, when each unfinished response last
//! made progress, and how many response bytes its streams hold.
//!
//! hyper offers no timeout for the protocol sniff or the HTTP/2 preface, no
//! idle timeout, and no way to reset one HTTP/2 stream from outside while it
//! waits for flow-control window. So requests and response bodies report
//! here, and the supervisor closes the connection when a bound is crossed.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::Instant;

/// The bounds a connection is held to (from `[server]`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Bounds {
    /// From accept to the first complete request head.
    pub first_request: Duration,
    /// With no request in flight.
    pub idle: Duration,
    /// Without progress on an unfinished response.
    pub send: Duration,
    /// Response bytes held by unfinished responses.
    pub buffered_bytes: usize,
}

/// Why the supervisor ends a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// No complete request head within `first_request_timeout`.
    NoFirstRequest,
    /// Nothing in flight for `idle_timeout`.
    Idle,
    /// A response made no progress for `send_timeout`.
    SendStalled,
}

/// Shared between a connection's supervisor, its service and its bodies.
#[derive(Debug)]
pub(super) struct Activity {
    bounds: Bounds,
    state: Mutex<State>,
    changed: Notify,
}

#[derive(Debug)]
struct State {
    served_first: bool,
    in_flight: usize,
    /// When the connection last became idle (or was accepted).
    idle_since: Instant,
    /// Unfinished responses: last progress, keyed by a per-connection number.
    responses: BTreeMap<u64, Instant>,
    next_response: u64,
    /// Response bytes handed to hyper and not yet accepted by the client.
    buffered: usize,
    /// The deadline the watcher's timer is set for; `None` while it waits
    /// for a change. A change that does not bring the next deadline before
    /// that timer wakes nobody (the watcher re-reads the state when the
    /// timer fires), so a request on a busy connection costs no wake-ups.
    watcher_until: Option<Instant>,
}

impl Activity {
    pub(super) fn new(bounds: Bounds) -> Arc<Activity> {
        Arc::new(Activity {
            bounds,
            state: Mutex::new(State {
                served_first: false,
                in_flight: 0,
                idle_since: Instant::now(),
                responses: BTreeMap::new(),
                next_response: 0,
                buffered: 0,
                watcher_until: None,
            }),
            changed: Notify::new(),
        })
    }

    /// Releases the state after a change and wakes the watcher if the next
    /// deadline now comes before its timer (or it has none).
    fn after_change(&self, state: MutexGuard<'_, State>) {
        let wake = match (state.watcher_until, Self::deadline_of(&state, &self.bounds)) {
            (None, _) => true,
            (Some(armed), Some((next, _))) => next < armed,
            (Some(_), None) => false,
        };
        drop(state);
        if wake {
            self.changed.notify_waiters();
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every
        // update is a few plain assignments.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A request head arrived; the request is in flight until the returned
    /// guard (or the response body it moves into) is dropped.
    pub(super) fn request_started(self: &Arc<Self>) -> InFlight {
        let mut state = self.state();
        state.served_first = true;
        state.in_flight += 1;
        self.after_change(state);
        InFlight {
            activity: self.clone(),
        }
    }

    /// Resolves with the first bound this connection crosses.
    pub(super) async fn crossed(&self) -> Verdict {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.next_deadline() {
                None => notified.await,
                Some((at, verdict)) => tokio::select! {
                    () = tokio::time::sleep_until(at) => {
                        if self.next_deadline() == Some((at, verdict)) {
                            return verdict;
                        }
                    }
                    () = notified => {}
                },
            }
        }
    }

    /// The next instant a bound may be crossed, and which one; `None` while
    /// only requests still being served are in flight (their own deadlines
    /// bound them).
    fn next_deadline(&self) -> Option<(Instant, Verdict)> {
        let mut state = self.state();
        let next = Self::deadline_of(&state, &self.bounds);
        state.watcher_until = next.map(|(at, _)| at);
        next
    }

    fn deadline_of(state: &State, bounds: &Bounds) -> Option<(Instant, Verdict)> {
        if !state.served_first {
            let at = state.idle_since + bounds.first_request;
            return Some((at, Verdict::NoFirstRequest));
        }
        if let Some(oldest) = state.responses.values().min() {
            return Some((*oldest + bounds.send, Verdict::SendStalled));
        }
        (state.in_flight == 0).then(|| (state.idle_since + bounds.idle, Verdict::Idle))
    }

    /// How long a connection told to finish may take before it is dropped.
    pub(super) fn send_bound(&self) -> Duration {
        self.bounds.send
    }
}

/// One request in flight.
#[derive(Debug)]
pub(super) struct InFlight {
    activity: Arc<Activity>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.activity.state();
        state.in_flight -= 1;
        if state.in_flight == 0 {
            state.idle_since = Instant::now();
        }
        self.activity.after_change(state);
    }
}

/// The client stopped accepting response bytes while the connection's
/// unfinished responses already hold `max_buffered_response_bytes`.
#[derive(Debug, thiserror::Error)]
#[error("connection holds {held} response bytes; {more} more would exceed the limit of {limit}")]
pub(super) struct OverBuffered {
    held: usize,
    more: usize,
    limit: usize,
}

/// A response body that reports its progress and its buffered bytes, and
/// keeps its request in flight until hyper drops it.
pub(super) struct Tracked<B> {
    inner: B,
    id: u64,
    /// Bytes of the last chunk handed to hyper, still counted as buffered.
    charged: usize,
    in_flight: InFlight,
}

impl<B> Tracked<B> {
    pub(super) fn new(inner: B, in_flight: InFlight) -> Tracked<B> {
        let mut state = in_flight.activity.state();
        let id = state.next_response;
        state.next_response += 1;
        state.responses.insert(id, Instant::now());
        in_flight.activity.after_change(state);
        Tracked {
            inner,
            id,
            charged: 0,
            in_flight,
        }
    }

    /// hyper asks for the next frame only once the previous chunk got
    /// flow-control window, so that chunk no longer counts as buffered; the
    /// new one does, unless it would push the connection over its limit
    /// while other responses hold bytes (one response always fits).
    fn charge(&mut self, len: usize) -> Result<(), OverBuffered> {
        let activity = &self.in_flight.activity;
        let mut state = activity.state();
        state.buffered -= self.charged;
        self.charged = 0;
        state.responses.insert(self.id, Instant::now());
        let limit = activity.bounds.buffered_bytes;
        if state.buffered > 0 && state.buffered + len > limit {
            return Err(OverBuffered {
                held: state.buffered,
                more: len,
                limit,
            });
        }
        state.buffered += len;
        self.charged = len;
        activity.after_change(state);
        Ok(())
    }
}

impl<B> Tracked<B> {
    /// The body has nothing to send yet (a stream waiting for its next
    /// message): hyper asked for this frame, so the last chunk is sent, and
    /// the client is not the one holding the response up. Until the body
    /// produces again it is not held to `send_timeout`.
    fn waiting_for_itself(&mut self) {
        let activity = &self.in_flight.activity;
        let mut state = activity.state();
        let was_tracked = state.responses.remove(&self.id).is_some();
        if !was_tracked && self.charged == 0 {
            return;
        }
        state.buffered -= self.charged;
        self.charged = 0;
        activity.after_change(state);
    }
}

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        let activity = &self.in_flight.activity;
        let mut state = activity.state();
        state.buffered -= self.charged;
        state.responses.remove(&self.id);
        activity.after_change(state);
    }
}

impl<B> Body for Tracked<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, Buf::remaining);
                match self.charge(len) {
                    Ok(()) => Poll::Ready(Some(Ok(frame))),
                    Err(over) => {
                        tracing::debug!(error = %over, "response reset");
                        Poll::Ready(Some(Err(over.into())))
                    }
                }
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                self.waiting_for_itself();
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
