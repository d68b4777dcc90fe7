//! The in-process store: bounded by keys and by answer bytes, each key
//! expiring on tokio's clock (so tests run it on a paused clock). When a
//! bound is reached, the completed key that expires first goes; keys in
//! flight are never evicted (their lease ends them).

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::{Fingerprint, Found, Held, Slot, StoredAnswer};

#[derive(Debug)]
pub(super) struct Memory {
    max_entries: usize,
    max_bytes: usize,
    slots: Mutex<Slots>,
}

#[derive(Debug, Default)]
struct Slots {
    map: HashMap<Slot, Entry>,
    /// Every key by (expiry, slot): the purge and eviction order.
    by_expiry: BTreeSet<(Instant, Slot)>,
    /// Sum of the completed answers' weights.
    bytes: usize,
    next_token: u64,
}

#[derive(Debug)]
struct Entry {
    fingerprint: Fingerprint,
    expires: Instant,
    state: State,
}

#[derive(Debug)]
enum State {
    InFlight { token: u64 },
    Done(StoredAnswer),
}

impl Memory {
    pub(super) fn new(max_entries: usize, max_bytes: usize) -> Memory {
        Memory {
            max_entries,
            max_bytes,
            slots: Mutex::new(Slots::default()),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.lock().map.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        // A panic while holding the lock leaves consistent data (every
        // mutation below is completed before any call that could panic).
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn begin(&self, slot: Slot, fingerprint: Fingerprint, lease: Duration) -> Found {
        let now = Instant::now();
        let mut slots = self.lock();
        slots.purge_expired(now);
        if let Some(entry) = slots.map.get(&slot) {
            return match &entry.state {
                _ if entry.fingerprint != fingerprint => Found::Mismatch,
                State::InFlight { .. } => Found::InFlight,
                State::Done(answer) => Found::Done(answer.clone()),
            };
        }
        slots.evict_for(self.max_entries.saturating_sub(1), self.max_bytes);
        slots.next_token += 1;
        let token = slots.next_token;
        slots.insert(
            slot,
            Entry {
                fingerprint,
                expires: now + lease,
                state: State::InFlight { token },
            },
        );
        Found::Claimed(Held::Memory(token))
    }

    pub(super) fn finish(
        &self,
        slot: Slot,
        token: u64,
        fingerprint: Fingerprint,
        answer: &StoredAnswer,
        ttl: Duration,
    ) {
        let mut slots = self.lock();
        if !slots.holds(slot, token) {
            return;
        }
        slots.remove(slot);
        slots.evict_for(
            self.max_entries.saturating_sub(1),
            self.max_bytes.saturating_sub(answer.weight()),
        );
        slots.insert(
            slot,
            Entry {
                fingerprint,
                expires: Instant::now() + ttl,
                state: State::Done(answer.clone()),
            },
        );
    }

    pub(super) fn release(&self, slot: Slot, token: u64) {
        let mut slots = self.lock();
        if slots.holds(slot, token) {
            slots.remove(slot);
        }
    }
}

impl Slots {
    fn holds(&self, slot: Slot, token: u64) -> bool {
        matches!(self.map.get(&slot), Some(Entry { state: State::InFlight { token: t }, .. }) if *t == token)
    }

    fn insert(&mut self, slot: Slot, entry: Entry) {
        self.by_expiry.insert((entry.expires, slot));
        if let State::Done(answer) = &entry.state {
            self.bytes += answer.weight();
        }
        self.map.insert(slot, entry);
    }

    fn remove(&mut self, slot: Slot) {
        if let Some(entry) = self.map.remove(&slot) {
            self.by_expiry.remove(&(entry.expires, slot));
            if let State::Done(answer) = &entry.state {
                self.bytes -= answer.weight();
            }
        }
    }

    fn purge_expired(&mut self, now: Instant) {
        while let Some(&(expires, slot)) = self.by_expiry.first() {
            if expires > now {
                return;
            }
            self.remove(slot);
        }
    }

    /// Evicts completed keys, soonest to expire first, until at most
    /// `entries` keys and `bytes` answer bytes remain (or only keys in
    /// flight are left).
    fn evict_for(&mut self, entries: usize, bytes: usize) {
        while self.map.len() > entries || self.bytes > bytes {
            let victim = self.by_expiry.iter().map(|&(_, slot)| slot).find(|slot| {
                matches!(
                    self.map.get(slot),
                    Some(Entry {
                        state: State::Done(_),
                        ..
                    })
                )
            });
            match victim {
                Some(slot) => self.remove(slot),
                None => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};

    fn answer(body: &'static str) -> StoredAnswer {
        StoredAnswer {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    fn slot(n: u8) -> Slot {
        Slot([n; 32])
    }

    const PRINT: Fingerprint = Fingerprint([7; 32]);
    const LEASE: Duration = Duration::from_secs(5);
    const TTL: Duration = Duration::from_secs(60);

    fn claim(memory: &Memory, n: u8) -> u64 {
        match memory.begin(slot(n), PRINT, LEASE) {
            Found::Claimed(Held::Memory(token)) => token,
            other => panic!("slot {n} not claimed: {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_finished_key_replays_until_its_ttl() {
        let memory = Memory::new(10, 1000);
        let token = claim(&memory, 1);
        assert!(matches!(
            memory.begin(slot(1), PRINT, LEASE),
            Found::InFlight
        ));
        assert!(matches!(
            memory.begin(slot(1), Fingerprint([8; 32]), LEASE),
            Found::Mismatch
        ));
        memory.finish(slot(1), token, PRINT, &answer("a"), TTL);
        assert!(matches!(memory.begin(slot(1), PRINT, LEASE), Found::Done(a) if a.body == "a"));
        tokio::time::advance(TTL).await;
        claim(&memory, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn bounds_evict_the_soonest_to_expire_finished_key() {
        let memory = Memory::new(2, 1000);
        for n in 1..=2 {
            let token = claim(&memory, n);
            memory.finish(slot(n), token, PRINT, &answer("x"), TTL);
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        claim(&memory, 3);
        assert_eq!(memory.len(), 2);
        claim(&memory, 1); // evicted, so new again
        assert!(matches!(
            memory.begin(slot(3), PRINT, LEASE),
            Found::InFlight
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_bound_the_stored_answers() {
        let memory = Memory::new(10, 5);
        for n in 1..=3 {
            let token = claim(&memory, n);
            memory.finish(slot(n), token, PRINT, &answer("abc"), TTL);
        }
        assert_eq!(memory.len(), 1, "two answers of 3 bytes exceed 5");
        assert!(matches!(
            memory.begin(slot(3), PRINT, LEASE),
            Found::Done(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_or_lapsed_claim_frees_the_key() {
        let memory = Memory::new(10, 100);
        let token = claim(&memory, 1);
        memory.release(slot(1), token);
        let stale = claim(&memory, 1);
        tokio::time::advance(LEASE).await;
        let fresh = claim(&memory, 1);
        memory.finish(slot(1), stale, PRINT, &answer("late"), TTL);
        assert!(
            matches!(memory.begin(slot(1), PRINT, LEASE), Found::InFlight),
            "a lapsed claim cannot finish"
        );
        memory.finish(slot(1), fresh, PRINT, &answer("ok"), TTL);
        assert!(matches!(memory.begin(slot(1), PRINT, LEASE), Found::Done(a) if a.body == "ok"));
    }
}
