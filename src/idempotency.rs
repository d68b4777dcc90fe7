//! Writes that are safe to retry: the `Idempotency-Key` request header
//! (IETF draft-ietf-httpapi-idempotency-key-header). On a POST or PATCH
//! binding that opts in, the first answer to a key is stored for the
//! binding's TTL and replayed to a retry that sends the same key with the
//! same request ([`Fingerprint`]); the upstream is called once per key.
//!
//! The stage owns its compiled per-binding [`Policy`], the gateway-wide
//! [`Store`] (memory, or Redis shared by every replica) and its own
//! [`IdempotencyError`]; [`crate::error`] turns that into the HTTP answer
//! (400 missing or malformed key, 409 still in flight, 422 reused with a
//! different request).
//!
//! Keys are scoped per caller ([`Scope`]): the same key from two consumers
//! names two different requests, and a replay can never reach another
//! caller than the one whose request produced it.

mod codec;
mod key;
mod memory;
mod redis;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use sha2::{Digest, Sha256};

pub use key::{MAX_KEY_BYTES, parse_key};

pub use crate::headers::{IDEMPOTENCY_KEY, IDEMPOTENCY_REPLAYED};

/// One binding's compiled `idempotency = { ... }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// How long a stored answer is replayed (the key's lifetime once the
    /// first request completed).
    pub ttl: Duration,
    /// Whether a request without `Idempotency-Key` is refused (400).
    pub required: bool,
}

/// The gateway-wide `[idempotency]` store settings, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// `redis://…` or `redis+unix://…`; `None` keeps keys in this process.
    pub redis: Option<String>,
    /// Most keys the memory store holds (completed and in flight).
    pub max_entries: usize,
    /// Most answer bytes (bodies and headers) the memory store holds.
    pub max_bytes: usize,
    /// Answers larger than this are not stored (the key is released).
    pub max_answer_bytes: usize,
    /// Prefix of every Redis key.
    pub key_prefix: String,
    /// How long one Redis command may take before the memory store is used instead.
    pub redis_timeout: Duration,
}

/// Why a request with (or without) an `Idempotency-Key` is refused.
#[derive(Debug, thiserror::Error)]
pub enum IdempotencyError {
    /// The binding requires a key and the request has none.
    #[error("this route requires an Idempotency-Key header")]
    MissingKey,
    /// The header is not a Structured Field String of an acceptable size.
    #[error("invalid Idempotency-Key header: {0}")]
    MalformedKey(String),
    /// The key was used before with a different request.
    #[error(
        "the Idempotency-Key was already used with a different request (method, path, query, Content-Type or body differ); use a new key for a new request"
    )]
    KeyReused,
    /// The first request with this key has not finished.
    #[error(
        "a request with this Idempotency-Key is still being processed; retry after it has finished"
    )]
    InFlight,
}

/// Whose keys these are: an authenticated consumer, or the client address
/// of an anonymous caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope(String);

impl Scope {
    /// A caller admitted by `via` (a JWT provider or `api_key`) as `who`
    /// (the token's `sub`, the key's consumer).
    pub fn consumer(via: &str, who: &str) -> Scope {
        Scope(format!("consumer\0{via}\0{who}"))
    }

    /// An anonymous caller, by its client address.
    pub fn client(address: &str) -> Scope {
        Scope(format!("client\0{address}"))
    }
}

/// The SHA-256 of what makes two requests "the same request": method,
/// path, query, `Content-Type` and body bytes (after any
/// `Content-Encoding` was removed), each length-prefixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of one request.
    pub fn of(
        method: &http::Method,
        path: &str,
        query: Option<&str>,
        content_type: Option<&[u8]>,
        body: &[u8],
    ) -> Fingerprint {
        let mut hash = Sha256::new();
        for part in [
            method.as_str().as_bytes(),
            path.as_bytes(),
            query.unwrap_or("").as_bytes(),
            content_type.unwrap_or(b""),
            body,
        ] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part);
        }
        Fingerprint(hash.finalize().into())
    }
}

/// Where one key of one caller lives in the store: a hash, so neither the
/// consumer's name nor the client's key is written into Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Slot([u8; 32]);

impl Slot {
    fn new(scope: &Scope, key: &str) -> Slot {
        let mut hash = Sha256::new();
        hash.update(scope.0.as_bytes());
        hash.update([0xff]);
        hash.update(key.as_bytes());
        Slot(hash.finalize().into())
    }

    fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// An answer as stored and replayed: status, the headers that belong to
/// the representation, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    /// The status the first request was answered with.
    pub status: StatusCode,
    /// Its representation headers (Content-Type, Location, the upstream's
    /// allowlisted metadata; never per-request ones such as X-Request-Id).
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
}

impl StoredAnswer {
    /// Bytes the answer occupies in a store (body plus headers).
    pub fn weight(&self) -> usize {
        self.body.len()
            + self
                .headers
                .iter()
                .map(|(n, v)| n.as_str().len() + v.len())
                .sum::<usize>()
    }
}

/// What a keyed request found in the store.
#[derive(Debug)]
pub enum Begun {
    /// The key is new: this request is the one that runs. Finish the
    /// ticket with the answer, or drop it to release the key.
    Run(Ticket),
    /// The key's first request completed: answer with this, do not call upstream.
    Replay(StoredAnswer),
}

/// Counters read at scrape time.
#[derive(Debug, Default)]
pub struct Counters {
    /// Answers replayed from the store.
    pub replays: AtomicU64,
    /// Retries refused because the first request was still in flight (409).
    pub in_flight: AtomicU64,
    /// Keys reused with a different request (422).
    pub key_reused: AtomicU64,
    /// Answers not stored because they were over `max_answer_bytes`.
    pub too_large: AtomicU64,
    /// Redis commands that failed or timed out (the memory store answered instead).
    pub redis_failures: AtomicU64,
}

/// The idempotency store: memory, or Redis with the memory store as the
/// fallback while Redis is unreachable.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: StoreSettings,
    memory: memory::Memory,
    redis: Option<redis::Redis>,
    counters: Counters,
}

/// The right to run the first request of a key. Dropped unfinished (the
/// call failed, the client went away), it releases the key so a retry runs.
#[derive(Debug)]
pub struct Ticket {
    store: Store,
    slot: Slot,
    fingerprint: Fingerprint,
    ttl: Duration,
    /// Which store holds the in-flight marker, and the marker's token.
    held: Held,
    finished: bool,
}

#[derive(Debug, Clone, Copy)]
enum Held {
    Memory(u64),
    Redis([u8; 16]),
}

// === impl Store ===

impl Store {
    /// A store with `settings`; a Redis store connects lazily, so a Redis
    /// that is down at start-up does not stop the gateway.
    pub fn new(settings: StoreSettings) -> Store {
        let redis = settings.redis.as_deref().and_then(|url| {
            redis::Redis::new(url, &settings.key_prefix, settings.redis_timeout)
                .inspect_err(|error| tracing::warn!(%error, "idempotency: Redis URL unusable; keys stay in this process"))
                .ok()
        });
        Store {
            inner: Arc::new(Inner {
                memory: memory::Memory::new(settings.max_entries, settings.max_bytes),
                redis,
                counters: Counters::default(),
                settings,
            }),
        }
    }

    /// The settings it was made with (a reload keeps an equal store).
    pub fn settings(&self) -> &StoreSettings {
        &self.inner.settings
    }

    /// Its counters.
    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// Keys the memory store holds now.
    pub fn memory_entries(&self) -> usize {
        self.inner.memory.len()
    }

    /// Claims `key` for this request, or finds its stored answer. `lease`
    /// bounds how long the in-flight marker outlives a gateway that dies
    /// mid-call (the request's deadline budget).
    pub async fn begin(
        &self,
        policy: &Policy,
        scope: &Scope,
        key: &str,
        fingerprint: Fingerprint,
        lease: Duration,
    ) -> Result<Begun, IdempotencyError> {
        let slot = Slot::new(scope, key);
        let found = match &self.inner.redis {
            Some(redis) => match redis.begin(slot, fingerprint, lease).await {
                Ok(found) => found,
                Err(error) => {
                    self.redis_failed(&error);
                    self.inner.memory.begin(slot, fingerprint, lease)
                }
            },
            None => self.inner.memory.begin(slot, fingerprint, lease),
        };
        let counters = &self.inner.counters;
        match found {
            Found::Claimed(held) => Ok(Begun::Run(Ticket {
                store: self.clone(),
                slot,
                fingerprint,
                ttl: policy.ttl,
                held,
                finished: false,
            })),
            Found::Done(answer) => {
                counters.replays.fetch_add(1, Ordering::Relaxed);
                Ok(Begun::Replay(answer))
            }
            Found::InFlight => {
                counters.in_flight.fetch_add(1, Ordering::Relaxed);
                Err(IdempotencyError::InFlight)
            }
            Found::Mismatch => {
                counters.key_reused.fetch_add(1, Ordering::Relaxed);
                Err(IdempotencyError::KeyReused)
            }
        }
    }

    fn redis_failed(&self, error: &dyn std::fmt::Display) {
        self.inner
            .counters
            .redis_failures
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%error, "idempotency: Redis failed; this replica's memory store answers instead");
    }
}

/// What a store found for a slot.
#[derive(Debug)]
enum Found {
    Claimed(Held),
    Done(StoredAnswer),
    InFlight,
    Mismatch,
}

// === impl Ticket ===

impl Ticket {
    /// Stores `answer` for the policy's TTL: retries get it from now on.
    /// An answer over `max_answer_bytes` is not stored; the key is released.
    pub async fn finish(mut self, answer: &StoredAnswer) {
        self.finished = true;
        let inner = &self.store.inner;
        if answer.weight() > inner.settings.max_answer_bytes {
            inner.counters.too_large.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                bytes = answer.weight(),
                limit = inner.settings.max_answer_bytes,
                "idempotency: answer over max_answer_bytes not stored; a retry with this key runs again"
            );
            self.release_now().await;
            return;
        }
        match (self.held, &inner.redis) {
            (Held::Memory(token), _) => {
                inner
                    .memory
                    .finish(self.slot, token, self.fingerprint, answer, self.ttl)
            }
            (Held::Redis(token), Some(redis)) => {
                if let Err(error) = redis
                    .finish(self.slot, token, self.fingerprint, answer, self.ttl)
                    .await
                {
                    self.store.redis_failed(&error);
                }
            }
            (Held::Redis(_), None) => {}
        }
    }

    /// Releases the key now (the call failed in a way a retry may fix).
    pub async fn release(mut self) {
        self.finished = true;
        self.release_now().await;
    }

    async fn release_now(&self) {
        let inner = &self.store.inner;
        match (self.held, &inner.redis) {
            (Held::Memory(token), _) => inner.memory.release(self.slot, token),
            (Held::Redis(token), Some(redis)) => {
                if let Err(error) = redis.release(self.slot, token, self.fingerprint).await {
                    // The marker's lease ends it anyway.
                    self.store.redis_failed(&error);
                }
            }
            (Held::Redis(_), None) => {}
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let inner = &self.store.inner;
        match (self.held, &inner.redis) {
            (Held::Memory(token), _) => inner.memory.release(self.slot, token),
            (Held::Redis(token), Some(redis)) => {
                // Dropped mid-call (the client went away): release without
                // waiting; if this fails, the marker's lease ends it.
                let (redis, slot, print) = (redis.clone(), self.slot, self.fingerprint);
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move {
                        let _ = redis.release(slot, token, print).await;
                    });
                }
            }
            (Held::Redis(_), None) => {}
        }
    }
}

/// Whether `url` is a Redis URL the store can use (checked at load time,
/// without connecting): `redis://`, `rediss://` or `redis+unix://`.
pub fn check_redis_url(url: &str) -> Result<(), String> {
    ::redis::Client::open(url)
        .map(drop)
        .map_err(|e| e.to_string())
}
