//! What becomes of a unary call whose client leaves before the answer.
//!
//! The call is cancelled upstream with RST_STREAM, as any gRPC client does.
//! Many resets at once on one connection, though, look like HTTP/2 rapid
//! reset (CVE-2023-44487) to the upstream's defences: h2-based servers
//! (tonic) close the connection after 20 resets of streams they have not yet
//! accepted, Netty's HTTP/2 codec by default after 200 RST_STREAM frames in
//! 30 seconds (grpc-java when `maxRstFramesPerWindow` is set), Envoy when
//! most of its recent streams were reset young. Every
//! other call on that connection fails with it, so one client's burst of
//! departures (a mobile network dropping, a load test ending) would fail
//! other clients' calls.
//!
//! So each connection has a reset budget, a token bucket. A call abandoned
//! beyond it is left to finish, its answer read and discarded, until its
//! deadline at the latest; a bound per connection keeps that finite, and a
//! call abandoned beyond the bound is reset anyway. A call whose deadline has
//! passed is reset at once and costs no budget: the upstream's own deadline
//! (`grpc-timeout`) ends it at that moment too.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
use tokio::time::Instant;

use super::connection::UpstreamBody;
use super::deadline::Deadline;
use super::endpoint::Lease;

/// `[upstreams.NAME] cancel_budget`: how a connection cancels calls whose
/// client left (defaults in `config::upstream`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CancelPolicy {
    /// Resets one connection may send at once.
    pub burst: u32,
    /// Resets the budget regains per second.
    pub per_second: f64,
    /// Abandoned calls one connection keeps running at once; 0 resets every
    /// abandoned call at once.
    pub max_left_running: usize,
}

/// One connection slot's cancellations: its reset budget, the abandoned
/// calls it carries on, and counters of both.
#[derive(Debug)]
pub(super) struct Cancellations {
    policy: CancelPolicy,
    bucket: Mutex<Bucket>,
    running: AtomicUsize,
    /// Abandoned calls reset at once.
    pub(super) reset: AtomicU64,
    /// Abandoned calls left to finish.
    pub(super) left_running: AtomicU64,
}

/// What a unary call's caller allows once it stops waiting for the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfAbandoned {
    /// Reset it, or leave it to finish, as its connection's budget says.
    FollowBudget,
    /// Always reset it: finishing it would do what nobody can see done
    /// (a write holding an idempotency key, whose key is released when its
    /// client leaves so that a retry runs: that retry must not be the
    /// second time the write happens).
    Reset,
}

/// What to do with one abandoned call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Cancel it now with RST_STREAM.
    Reset,
    /// Let it finish (or reach its deadline), discarding the answer.
    LeaveRunning,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

// === impl Cancellations ===

impl Cancellations {
    pub(super) fn new(policy: CancelPolicy) -> Cancellations {
        Cancellations {
            policy,
            bucket: Mutex::new(Bucket::full(&policy)),
            running: AtomicUsize::new(0),
            reset: AtomicU64::new(0),
            left_running: AtomicU64::new(0),
        }
    }

    /// A new connection: the upstream counts its resets afresh.
    pub(super) fn renew(&self) {
        *self.lock() = Bucket::full(&self.policy);
    }

    /// Decides, and counts, what becomes of one abandoned call; a reset
    /// spends the budget whatever `allowed` says. A
    /// [`Verdict::LeaveRunning`] must be followed by [`Self::finished`].
    pub(super) fn abandoned(&self, allowed: IfAbandoned) -> Verdict {
        let spent = !self.lock().take(&self.policy);
        let verdict = if spent && allowed == IfAbandoned::FollowBudget && self.start_running() {
            Verdict::LeaveRunning
        } else {
            Verdict::Reset
        };
        let counter = match verdict {
            Verdict::Reset => &self.reset,
            Verdict::LeaveRunning => &self.left_running,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        verdict
    }

    /// Counts one more call left running, unless the bound is reached.
    fn start_running(&self) -> bool {
        let bound = self.policy.max_left_running;
        (self.running)
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < bound).then_some(n + 1)
            })
            .is_ok()
    }

    /// A call left running has ended.
    pub(super) fn finished(&self) {
        self.running.fetch_sub(1, Ordering::AcqRel);
    }

    /// Abandoned calls running now.
    pub(super) fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Bucket> {
        // The bucket is two numbers written together: usable after a panic.
        self.bucket.lock().unwrap_or_else(|e| e.into_inner())
    }
}

// === impl Bucket ===

impl Bucket {
    fn full(policy: &CancelPolicy) -> Bucket {
        Bucket {
            tokens: f64::from(policy.burst),
            refilled: Instant::now(),
        }
    }

    /// Takes one reset if the budget, refilled for the time since the last
    /// take, has one.
    fn take(&mut self, policy: &CancelPolicy) -> bool {
        let now = Instant::now();
        let regained = now.duration_since(self.refilled).as_secs_f64() * policy.per_second;
        self.tokens = (self.tokens + regained).min(f64::from(policy.burst));
        self.refilled = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// The response head of a sent request, still to come.
type AnswerHead = Pin<
    Box<
        dyn Future<Output = Result<Response<Incoming>, TrySendError<Request<UpstreamBody>>>> + Send,
    >,
>;

/// Where an abandoned call goes: its connection, its deadline and what its
/// caller allows.
#[derive(Clone, Copy)]
struct Owner<'a> {
    lease: &'a Lease,
    deadline: Deadline,
    allowed: IfAbandoned,
}

/// A part of an exchange its caller stopped waiting for.
enum Unfinished {
    Head(AnswerHead),
    Body(Incoming),
}

impl Owner<'_> {
    /// Resets the abandoned call (by dropping it) or leaves it running on
    /// a task of its own, as the connection's budget says.
    fn abandon(self, unfinished: Unfinished) {
        if self.deadline.remaining().is_zero() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.lease.cancellations().abandoned(self.allowed) == Verdict::Reset {
            return;
        }
        let left = LeftRunning(self.lease.detach());
        let until = self.deadline.instant();
        runtime.spawn(async move {
            // At the deadline the rest is dropped: that resets the stream.
            let _ = tokio::time::timeout_at(until, unfinished.finish()).await;
            drop(left);
        });
    }
}

impl Unfinished {
    /// Reads the rest of the answer and discards it.
    async fn finish(self) {
        let mut body = match self {
            Unfinished::Head(head) => match head.await {
                Ok(response) => response.into_body(),
                Err(_) => return,
            },
            Unfinished::Body(body) => body,
        };
        while let Some(Ok(_)) = body.frame().await {}
    }
}

/// A call left running: counts as in flight on its endpoint (through the
/// lease) and on its connection until it ends.
struct LeftRunning(Lease);

impl Drop for LeftRunning {
    fn drop(&mut self) {
        self.0.cancellations().finished();
    }
}

/// The response to a request sent on a leased connection. Dropped before
/// it arrives (its caller left), the call is abandoned (see the module).
pub(super) struct PendingAnswer<'a> {
    owner: Owner<'a>,
    head: Option<AnswerHead>,
}

impl<'a> PendingAnswer<'a> {
    /// Sends `request` on `lease`'s connection; the call's deadline bounds
    /// how long it may run on if abandoned, and `allowed` whether it may.
    pub(super) fn send(
        lease: &'a mut Lease,
        request: Request<UpstreamBody>,
        deadline: Deadline,
        allowed: IfAbandoned,
    ) -> PendingAnswer<'a> {
        let head: AnswerHead = Box::pin(lease.sender.try_send_request(request));
        PendingAnswer {
            owner: Owner {
                lease: &*lease,
                deadline,
                allowed,
            },
            head: Some(head),
        }
    }
}

impl<'a> Future for PendingAnswer<'a> {
    type Output = Result<Response<AnswerBody<'a>>, TrySendError<Request<UpstreamBody>>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let head = (this.head.as_mut()).expect("PendingAnswer polled after it completed");
        let result = ready!(head.as_mut().poll(cx));
        this.head = None;
        let owner = this.owner;
        Poll::Ready(result.map(|response| {
            response.map(|body| AnswerBody {
                owner,
                body: Some(body),
            })
        }))
    }
}

impl Drop for PendingAnswer<'_> {
    fn drop(&mut self) {
        if let Some(head) = self.head.take() {
            self.owner.abandon(Unfinished::Head(head));
        }
    }
}

/// The body of a unary answer. Dropped before its end (its caller left),
/// the call is abandoned; [`AnswerBody::discard`] resets it instead.
pub(super) struct AnswerBody<'a> {
    owner: Owner<'a>,
    body: Option<Incoming>,
}

impl AnswerBody<'_> {
    /// The gateway is done with the answer (read, or refused as bad):
    /// whatever is left of it is reset, never left running.
    pub(super) fn discard(mut self) {
        self.body = None;
    }
}

impl Body for AnswerBody<'_> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let Some(body) = this.body.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = ready!(Pin::new(body).poll_frame(cx));
        if !matches!(frame, Some(Ok(_))) {
            // Ended or failed: there is no call left to cancel.
            this.body = None;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or(SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for AnswerBody<'_> {
    fn drop(&mut self) {
        if let Some(body) = self.body.take()
            && !body.is_end_stream()
        {
            self.owner.abandon(Unfinished::Body(body));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn policy(burst: u32, per_second: f64, max_left_running: usize) -> CancelPolicy {
        CancelPolicy {
            burst,
            per_second,
            max_left_running,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_beyond_the_budget_is_left_running_up_to_the_bound() {
        let cancellations = Cancellations::new(policy(3, 1.0, 2));
        let verdicts: Vec<_> = (0..7)
            .map(|_| cancellations.abandoned(IfAbandoned::FollowBudget))
            .collect();
        use Verdict::{LeaveRunning, Reset};
        let expected = [
            Reset,
            Reset,
            Reset,
            LeaveRunning,
            LeaveRunning,
            Reset,
            Reset,
        ];
        assert_eq!(verdicts, expected);
        assert_eq!(cancellations.reset.load(Ordering::Relaxed), 5);
        assert_eq!(cancellations.left_running.load(Ordering::Relaxed), 2);
        assert_eq!(cancellations.running(), 2);
        // One finishes: room for one more, but not for a call that must be reset.
        cancellations.finished();
        assert_eq!(cancellations.abandoned(IfAbandoned::Reset), Reset);
        assert_eq!(
            cancellations.abandoned(IfAbandoned::FollowBudget),
            LeaveRunning
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_refills_at_its_rate_up_to_the_burst() {
        let cancellations = Cancellations::new(policy(2, 4.0, 0));
        assert_eq!(
            cancellations.abandoned(IfAbandoned::FollowBudget),
            Verdict::Reset
        );
        assert_eq!(
            cancellations.abandoned(IfAbandoned::FollowBudget),
            Verdict::Reset
        );
        // Spent, and nothing may be left running: counted as reset anyway.
        assert_eq!(
            cancellations.abandoned(IfAbandoned::FollowBudget),
            Verdict::Reset
        );
        assert_eq!(cancellations.left_running.load(Ordering::Relaxed), 0);
        let spent = Cancellations::new(policy(2, 4.0, 10));
        spent.abandoned(IfAbandoned::FollowBudget);
        spent.abandoned(IfAbandoned::FollowBudget);
        assert_eq!(
            spent.abandoned(IfAbandoned::FollowBudget),
            Verdict::LeaveRunning
        );
        tokio::time::advance(Duration::from_millis(250)).await;
        assert_eq!(
            spent.abandoned(IfAbandoned::FollowBudget),
            Verdict::Reset,
            "a quarter second regains one"
        );
        assert_eq!(
            spent.abandoned(IfAbandoned::FollowBudget),
            Verdict::LeaveRunning
        );
        tokio::time::advance(Duration::from_secs(60)).await;
        let regained = (0..5)
            .filter(|_| spent.abandoned(IfAbandoned::FollowBudget) == Verdict::Reset)
            .count();
        assert_eq!(regained, 2, "never more than the burst");
        spent.renew();
        assert_eq!(
            spent.abandoned(IfAbandoned::FollowBudget),
            Verdict::Reset,
            "a new connection, a full budget"
        );
    }
}
