//! The gateway's own response cache for routes that opt in
//! (`cache = { ..., gateway = true }`): bounded in bytes, keyed by path,
//! normalised query and the route's `Vary` headers. Concurrent misses for one
//! key make a single upstream call and share its answer (coalescing);
//! `stale-while-revalidate` serves the stale answer while one background
//! refresh runs; `stale-if-error` serves it when the upstream fails. Only
//! anonymous callers on publicly cacheable routes are served from here, so a
//! private or authenticated answer is never shared.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::sync::OnceCell;
// The paused test clock drives freshness, so expiry is testable without sleeping.
use tokio::time::Instant;

/// `x-cache`: where an answer came from.
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// What the cache must know of a failed fetch.
pub trait FetchFailure {
    /// Whether a stale answer may stand in for this failure (RFC 5861
    /// stale-if-error): the upstream failed or was unreachable, as opposed
    /// to the request being wrong.
    fn allows_stale_answer(&self) -> bool;
}

/// A successful answer, before per-request headers are added.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Body bytes (identity encoding).
    pub body: Bytes,
    /// Its content type.
    pub content_type: HeaderValue,
    /// Allowlisted upstream metadata.
    pub headers: HeaderMap,
    /// How long the upstream call took (zero when served from cache).
    pub upstream_time: Duration,
    /// The body's ETag (GET and HEAD answers), computed where the answer
    /// is made: a stored answer keeps it, so a hit does not hash the body
    /// again.
    pub etag: Option<HeaderValue>,
}

/// A stored answer and its freshness.
#[derive(Debug)]
pub struct Entry {
    /// The answer.
    pub answer: Answer,
    stored: Instant,
    fresh_for: Duration,
    stale_while_revalidate: Duration,
    stale_if_error: Duration,
    /// Surrogate keys, for purging.
    keys: Vec<String>,
}

/// How long an entry may be kept and served.
#[derive(Debug, Clone, Copy)]
pub struct Freshness {
    /// Fresh lifetime (`max-age`).
    pub fresh_for: Duration,
    /// Window after that in which it is served while refreshing.
    pub stale_while_revalidate: Duration,
    /// Window after that in which it is served if the upstream fails.
    pub stale_if_error: Duration,
}

/// Where an answer came from, for `x-cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from a fresh entry.
    Hit,
    /// Fetched from the upstream.
    Miss,
    /// Served from a stale entry (revalidating, or the upstream failed).
    Stale,
}

/// The cache.
pub struct ResponseCache {
    entries: moka::sync::Cache<String, Arc<Entry>>,
    inflight: Mutex<HashMap<String, Arc<OnceCell<Arc<Entry>>>>>,
    refreshing: Mutex<HashSet<String>>,
    max_bytes: u64,
    /// Callers that waited on another's fetch, for metrics.
    coalesced: AtomicU64,
}

struct EntryExpiry;

impl moka::Expiry<String, Arc<Entry>> for EntryExpiry {
    fn expire_after_create(
        &self,
        _: &String,
        entry: &Arc<Entry>,
        _: std::time::Instant,
    ) -> Option<Duration> {
        Some(entry.fresh_for + entry.stale_while_revalidate.max(entry.stale_if_error))
    }
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

// === impl CacheStatus ===

impl CacheStatus {
    /// Its name in `x-cache`, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Stale => "stale",
        }
    }
}

// === impl Entry ===

impl Entry {
    /// Seconds since the answer was stored, for `Age`.
    pub fn age(&self) -> u64 {
        self.stored.elapsed().as_secs()
    }

    fn is_fresh(&self) -> bool {
        self.stored.elapsed() < self.fresh_for
    }

    fn within(&self, extra: Duration) -> bool {
        self.stored.elapsed() < self.fresh_for + extra
    }
}

// === impl ResponseCache ===

impl ResponseCache {
    /// A cache holding at most `max_bytes` of answers.
    pub fn new(max_bytes: u64) -> ResponseCache {
        let entries = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &String, entry: &Arc<Entry>| {
                let headers: usize = entry
                    .answer
                    .headers
                    .iter()
                    .map(|(k, v)| k.as_str().len() + v.len())
                    .sum();
                u32::try_from(key.len() + entry.answer.body.len() + headers + 128)
                    .unwrap_or(u32::MAX)
            })
            .expire_after(EntryExpiry)
            .support_invalidation_closures()
            .build();
        ResponseCache {
            entries,
            inflight: Mutex::new(HashMap::new()),
            refreshing: Mutex::new(HashSet::new()),
            max_bytes,
            coalesced: AtomicU64::new(0),
        }
    }

    /// The byte budget it was made with.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The entry under `key` and its age in seconds (for `Age`), if it is
    /// fresh: a hit needs no fetch, no refresh and no wait, so a caller that
    /// finds one skips preparing them. One clock read serves both.
    pub fn fresh(&self, key: &str) -> Option<(Arc<Entry>, u64)> {
        let entry = self.entries.get(key)?;
        let age = entry.stored.elapsed();
        (age < entry.fresh_for).then_some((entry, age.as_secs()))
    }

    /// Serves `key`: from a fresh entry, from a stale one while `refresh`
    /// runs in the background, or by one coalesced call of `fetch`.
    pub async fn serve<E, F, Fut, R, RFut>(
        &self,
        key: String,
        freshness: Freshness,
        surrogate_keys: Vec<String>,
        fetch: F,
        refresh: R,
    ) -> Result<(Arc<Entry>, CacheStatus), E>
    where
        E: FetchFailure,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Answer, E>>,
        R: FnOnce() -> RFut,
        RFut: Future<Output = ()> + Send + 'static,
    {
        let cached = self.entries.get(&key);
        if let Some(entry) = &cached {
            if entry.is_fresh() {
                return Ok((entry.clone(), CacheStatus::Hit));
            }
            if entry.within(entry.stale_while_revalidate) {
                let first = self.lock_refreshing().insert(key.clone());
                if first {
                    tokio::spawn(refresh());
                }
                return Ok((entry.clone(), CacheStatus::Stale));
            }
        }
        let cell = self.lock_inflight().entry(key.clone()).or_default().clone();
        let mut fetched_here = false;
        let result = cell
            .get_or_try_init(|| async {
                fetched_here = true;
                let answer = fetch().await?;
                Ok::<_, E>(self.store(&key, answer, freshness, surrogate_keys))
            })
            .await
            .cloned();
        {
            let mut inflight = self.lock_inflight();
            if inflight.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                inflight.remove(&key);
            }
        }
        match result {
            Ok(entry) => Ok((
                entry,
                if fetched_here {
                    CacheStatus::Miss
                } else {
                    self.coalesced.fetch_add(1, Ordering::Relaxed);
                    CacheStatus::Hit
                },
            )),
            Err(error) => match cached {
                // stale-if-error: a stored answer beats a failure.
                Some(entry)
                    if entry.within(entry.stale_if_error) && error.allows_stale_answer() =>
                {
                    Ok((entry, CacheStatus::Stale))
                }
                _ => Err(error),
            },
        }
    }

    /// Bytes held, as the byte bound counts them.
    pub fn weighted_size(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.weighted_size()
    }

    /// Callers served by waiting on another caller's upstream fetch.
    pub fn coalesced(&self) -> u64 {
        self.coalesced.load(Ordering::Relaxed)
    }

    /// Stores a refreshed answer (background revalidation) and clears the
    /// key's refreshing mark.
    pub fn finish_refresh(
        &self,
        key: &str,
        answer: Option<Answer>,
        freshness: Freshness,
        surrogate_keys: Vec<String>,
    ) {
        if let Some(answer) = answer {
            self.store(key, answer, freshness, surrogate_keys);
        }
        self.lock_refreshing().remove(key);
    }

    fn store(
        &self,
        key: &str,
        answer: Answer,
        freshness: Freshness,
        keys: Vec<String>,
    ) -> Arc<Entry> {
        let entry = Arc::new(Entry {
            answer,
            stored: Instant::now(),
            fresh_for: freshness.fresh_for,
            stale_while_revalidate: freshness.stale_while_revalidate,
            stale_if_error: freshness.stale_if_error,
            keys,
        });
        self.entries.insert(key.to_string(), entry.clone());
        entry
    }

    /// Drops every entry tagged with `surrogate_key`; returns how many.
    pub fn purge(&self, surrogate_key: &str) -> u64 {
        let before = self
            .entries
            .iter()
            .filter(|(_, e)| e.keys.iter().any(|k| k == surrogate_key))
            .count();
        let key = surrogate_key.to_string();
        let _ = self
            .entries
            .invalidate_entries_if(move |_, e| e.keys.contains(&key));
        self.entries.run_pending_tasks();
        before as u64
    }

    /// Drops every entry of the request path `path` (any authority, query
    /// or varied header): a successful write to a URI invalidates what was
    /// stored for it (RFC 9111 §4.4). Returns how many.
    pub fn purge_path(&self, path: &str) -> u64 {
        let of_path = |key: &String| key.split('?').next() == Some(path);
        let before = self.entries.iter().filter(|(k, _)| of_path(k)).count();
        let path = path.to_string();
        let _ = self
            .entries
            .invalidate_entries_if(move |k, _| k.split('?').next() == Some(path.as_str()));
        self.entries.run_pending_tasks();
        before as u64
    }

    /// The request paths that have entries (for a reload to judge which
    /// belong to routes that changed).
    pub fn paths(&self) -> HashSet<String> {
        (self.entries.iter())
            .filter_map(|(key, _)| key.split('?').next().map(str::to_owned))
            .collect()
    }

    /// Drops everything.
    pub fn purge_all(&self) {
        self.entries.invalidate_all();
        self.entries.run_pending_tasks();
    }

    fn lock_inflight(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, Arc<OnceCell<Arc<Entry>>>>> {
        self.inflight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_refreshing(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.refreshing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The cache key: path, query pairs in sorted order, the authority, and the
/// values of the headers the answer varies on. Everything the upstream sees
/// that can change its answer must be here, or one caller's answer is
/// served to another: the authority reaches it as `x-forwarded-host`, and
/// `vary` must list every forwarded request header.
pub fn key(
    path: &str,
    query: Option<&str>,
    authority: Option<&HeaderValue>,
    vary: &[HeaderName],
    headers: &HeaderMap,
) -> String {
    let mut pairs: Vec<&str> = query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .collect();
    pairs.sort_unstable();
    let mut key = String::with_capacity(path.len() + 64);
    key.push_str(path);
    key.push('?');
    key.push_str(&pairs.join("&"));
    key.push_str("\nhost:");
    if let Some(authority) = authority {
        key.push_str(&String::from_utf8_lossy(authority.as_bytes()).to_ascii_lowercase());
    }
    for name in vary {
        key.push('\n');
        key.push_str(name.as_str());
        key.push(':');
        for value in headers.get_all(name) {
            key.push_str(&String::from_utf8_lossy(value.as_bytes()));
            key.push(',');
        }
    }
    key
}
