//! One endpoint of an upstream: its connection slots and what the pool
//! knows about it — calls in flight (the balancer's load signal), the
//! active health check's verdict, and passive outlier ejection.
//!
//! An endpoint that discovery removes is drained by ownership: the pool
//! forgets it, calls in flight keep it alive through their [`Lease`], and
//! when the last one finishes the endpoint is dropped and its connection
//! tasks stop, closing the connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use http::uri::Authority;
use hyper::client::conn::http2::SendRequest;
use tokio::sync::{oneshot, watch};

use super::cancel::Cancellations;
use super::connection::{Slot, UpstreamBody, run_slot};
use super::outlier::Outlier;
use super::pool::PoolConfig;
use crate::workers;

/// One address of an upstream and its connections.
#[derive(Debug)]
pub struct Endpoint {
    authority: Authority,
    slots: Vec<Arc<Slot>>,
    /// Round-robin turn among the live slots.
    next: AtomicUsize,
    in_flight: AtomicUsize,
    /// Calls handed a connection here, ever.
    calls: AtomicU64,
    /// The active health check's verdict (true while checks are off).
    healthy: AtomicBool,
    outlier: Outlier,
    /// Stops the slots' dialler tasks when the endpoint is dropped.
    stop: watch::Sender<bool>,
}

/// A connection of one endpoint, handed out for one call; counts as a call
/// in flight on the endpoint until dropped.
#[derive(Debug)]
pub struct Lease {
    endpoint: Arc<Endpoint>,
    /// The slot whose connection it is.
    slot: Arc<Slot>,
    /// The HTTP/2 connection handle (streams multiplex on it).
    pub sender: SendRequest<UpstreamBody>,
}

thread_local! {
    /// Round-robin turn among a worker's own slots (see [`Endpoint::lease`]).
    static LOCAL_TURN: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

// === impl Endpoint ===

impl Endpoint {
    /// Starts `config.connections` dialler tasks for `authority`; the
    /// receivers resolve when each has made its first attempt.
    pub(super) fn start(
        authority: Authority,
        config: &PoolConfig,
    ) -> (Arc<Endpoint>, Vec<oneshot::Receiver<()>>) {
        let (stop, _) = watch::channel(false);
        let mut slots = Vec::new();
        let mut first_attempts = Vec::new();
        for index in 0..config.connections_per_endpoint() {
            let slot = Arc::new(Slot::new(authority.clone(), config.cancel));
            let (attempted, first_attempt) = oneshot::channel();
            // Slot `index` lives on worker `index % workers`, which its calls prefer.
            workers::spawn_on(
                index,
                run_slot(slot.clone(), config.clone(), stop.subscribe(), attempted),
            );
            first_attempts.push(first_attempt);
            slots.push(slot);
        }
        let endpoint = Endpoint {
            authority,
            slots,
            next: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            calls: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            outlier: Outlier::default(),
            stop,
        };
        (Arc::new(endpoint), first_attempts)
    }

    /// The endpoint's address.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// Calls in flight on this endpoint.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Calls (attempts and health checks) that were handed a connection here.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Whether the active health check lets it take calls.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub(super) fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    /// Its passive outlier-detection state.
    pub fn outlier(&self) -> &Outlier {
        &self.outlier
    }

    /// How many of its slots hold a live connection.
    pub fn connected(&self) -> usize {
        self.slots.iter().filter(|s| s.live().is_some()).count()
    }

    /// Whether any slot holds a live connection (cheaper than `connected`).
    pub fn is_connected(&self) -> bool {
        self.slots.iter().any(|s| s.live().is_some())
    }

    /// Its slots' count: the connections it keeps when all is well.
    pub fn size(&self) -> usize {
        self.slots.len()
    }

    /// Dials that failed, over its slots.
    pub fn dial_failures(&self) -> u64 {
        self.sum(|s| &s.events.dial_failures)
    }

    /// Connections the upstream closed cleanly (GOAWAY), over its slots.
    pub fn connections_closed_by_upstream(&self) -> u64 {
        self.sum(|s| &s.events.closed_by_upstream)
    }

    /// Connections lost to an error, over its slots.
    pub fn connections_lost(&self) -> u64 {
        self.sum(|s| &s.events.lost)
    }

    /// Calls whose client left, reset at once, over its slots.
    pub fn abandoned_calls_reset(&self) -> u64 {
        self.sum(|s| &s.cancellations.reset)
    }

    /// Calls whose client left that are still running, over its slots.
    pub fn abandoned_calls_running(&self) -> usize {
        self.slots.iter().map(|s| s.cancellations.running()).sum()
    }

    /// Calls whose client left, left to finish, over its slots.
    pub fn abandoned_calls_left_running(&self) -> u64 {
        self.sum(|s| &s.cancellations.left_running)
    }

    /// One of its slots' counters, over its slots.
    fn sum(&self, counter: fn(&Slot) -> &AtomicU64) -> u64 {
        self.slots
            .iter()
            .map(|s| counter(s).load(Ordering::Relaxed))
            .sum()
    }

    /// The most recent dial or connection failure, if any.
    pub fn last_error(&self) -> Option<Arc<String>> {
        self.slots.iter().find_map(|s| s.last_error.load_full())
    }

    /// A live connection: one the calling worker thread runs if it has
    /// one (see [`crate::workers`]), else any, taking turns among the live
    /// slots so that a slot that is down does not hand its share to one
    /// neighbour.
    pub fn lease(self: &Arc<Self>) -> Option<Lease> {
        let (slot, sender) = self.local_slot().or_else(|| self.any_slot())?;
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.calls.fetch_add(1, Ordering::Relaxed);
        Some(Lease {
            endpoint: self.clone(),
            slot: slot.clone(),
            sender: SendRequest::clone(&sender),
        })
    }

    /// A live slot of the calling worker's, taking turns among them.
    fn local_slot(&self) -> Option<LiveSlot<'_>> {
        let (worker, workers) = (workers::current()?, workers::count());
        let mine = || (self.slots.iter().skip(worker).step_by(workers)).filter_map(live_slot);
        let live = mine().count();
        if live == 0 {
            return None;
        }
        // The worker's own turn: a shared counter would bounce its cache
        // line between the workers on every call.
        let turn = LOCAL_TURN.get();
        LOCAL_TURN.set(turn.wrapping_add(1));
        mine().nth(turn % live)
    }

    /// A live slot, taking turns among them.
    fn any_slot(&self) -> Option<LiveSlot<'_>> {
        let live = self.connected();
        if live == 0 {
            return None;
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % live;
        // A slot may drop between the count and the pick: then the next
        // live one (if any) takes the turn.
        self.slots
            .iter()
            .filter_map(live_slot)
            .nth(turn)
            .or_else(|| self.slots.iter().find_map(live_slot))
    }
}

/// A slot and its live connection.
type LiveSlot<'a> = (&'a Arc<Slot>, Arc<SendRequest<UpstreamBody>>);

fn live_slot(slot: &Arc<Slot>) -> Option<LiveSlot<'_>> {
    slot.live().map(|sender| (slot, sender))
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        // Stops the dialler tasks; their connections close with them.
        let _ = self.stop.send(true);
    }
}

// === impl Lease ===

impl Lease {
    /// The endpoint the call goes to.
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }

    /// Where the request goes (for the request URI).
    pub fn authority(&self) -> &Authority {
        &self.endpoint.authority
    }

    /// Its connection's budget for cancelling calls whose client left.
    pub(super) fn cancellations(&self) -> &Cancellations {
        &self.slot.cancellations
    }

    /// A second lease on the same connection, for a call that outlives its
    /// caller (see [`super::cancel`]); it counts as a call in flight.
    pub(super) fn detach(&self) -> Lease {
        self.endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
        Lease {
            endpoint: self.endpoint.clone(),
            slot: self.slot.clone(),
            sender: self.sender.clone(),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
