//! A JWKS endpoint's keys, fetched at start-up and in the background, never
//! on the request path except for one case: a token naming an unknown `kid`
//! may trigger a refetch, at most once per cool-down, single-flight (every
//! caller waits on the same fetch, bounded by the fetch timeout), so key
//! rotation works without a restart and a flood of random `kid`s cannot
//! hammer the issuer. The last good key set is kept while the issuer is down.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use jsonwebtoken::jwk::JwkSet;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::jwt::KeySet;
use crate::backoff::Backoff;

/// The first retry after a failed fetch, doubling on each further failure.
const FIRST_RETRY: Duration = Duration::from_millis(500);
/// The longest wait between retries (shorter still if the refresh interval is).
const MAX_RETRY: Duration = Duration::from_secs(32);

/// The last good key set of every JWKS URL fetched in this process. A new
/// snapshot (a reload) starts from it rather than from nothing, so a reload
/// neither answers 503 until its first fetch lands nor loses the keys while
/// the issuer is down.
static LAST_GOOD: LazyLock<std::sync::Mutex<HashMap<String, Arc<KeySet>>>> =
    LazyLock::new(Default::default);

/// Settings of one JWKS source.
#[derive(Debug, Clone)]
pub struct JwksConfig {
    /// Provider name, for logs.
    pub provider: String,
    /// The JWKS URL.
    pub url: String,
    /// Regular refresh interval (shortened by the response's max-age).
    pub refresh: Duration,
    /// Least time between fetches caused by unknown `kid`s.
    pub cooldown: Duration,
    /// Fetch timeout.
    pub timeout: Duration,
    /// Largest response body accepted.
    pub max_bytes: usize,
}

/// The live key set of one JWKS URL.
#[derive(Debug)]
pub struct Jwks {
    config: JwksConfig,
    client: reqwest::Client,
    keys: ArcSwapOption<KeySet>,
    /// Held while a fetch runs: the single flight. Holds the last fetch time.
    flight: Mutex<Option<Instant>>,
    /// Bumped by every completed fetch, success or not.
    generation: AtomicU64,
    fetches: AtomicU64,
    failures: AtomicU64,
}

// === impl Jwks ===

impl Jwks {
    /// Starts the background refresher; the first fetch happens at once.
    /// Fails when the HTTP client cannot be built (e.g. no CA certificates
    /// on the system): a start-up error, never a panic.
    pub fn start(config: JwksConfig) -> Result<Arc<Jwks>, String> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            // Keys come from this URL only; never follow a redirect elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| error_chain(&e))?;
        let last_good = LAST_GOOD
            .lock()
            .ok()
            .and_then(|seen| seen.get(&config.url).cloned());
        let jwks = Arc::new(Jwks {
            config,
            client,
            keys: ArcSwapOption::new(last_good),
            flight: Mutex::new(None),
            generation: AtomicU64::new(0),
            fetches: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&jwks);
        tokio::spawn(async move {
            // Retries after a failure come sooner than the refresh interval.
            let mut retry = None::<Backoff>;
            loop {
                let Some(jwks) = weak.upgrade() else { return };
                let next = {
                    let mut last = jwks.flight.lock().await;
                    let result = jwks.fetch().await;
                    *last = Some(Instant::now());
                    jwks.generation.fetch_add(1, Ordering::SeqCst);
                    match result {
                        Ok(max_age) => {
                            retry = None;
                            // max-age only brings the refresh forward, never
                            // below the cool-down (unless the refresh itself
                            // is shorter; `clamp` would panic then).
                            max_age.map_or(jwks.config.refresh, |age| {
                                age.max(jwks.config.cooldown).min(jwks.config.refresh)
                            })
                        }
                        Err(reason) => {
                            let kept = if jwks.keys.load().is_some() {
                                "keeping the last good keys"
                            } else {
                                "calls needing this provider answer 503 until keys arrive"
                            };
                            tracing::error!(provider = %jwks.config.provider, url = %jwks.config.url, %reason, "JWKS fetch failed; {kept}");
                            retry
                                .get_or_insert_with(|| {
                                    Backoff::new(FIRST_RETRY, jwks.config.refresh.min(MAX_RETRY))
                                })
                                .next_delay()
                        }
                    }
                };
                drop(jwks);
                tokio::time::sleep(next).await;
            }
        });
        Ok(jwks)
    }

    /// The current keys, `None` until the first successful fetch.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        self.keys.load_full()
    }

    /// How many fetches were made (for tests and metrics).
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::SeqCst)
    }

    /// How many fetches failed (for metrics).
    pub fn failure_count(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// A token named a `kid` we do not know: refetch if the cool-down
    /// allows, joining a fetch already in flight. Bounded by the fetch timeout.
    pub async fn refresh_for_unknown_kid(&self) -> Option<Arc<KeySet>> {
        let seen = self.generation.load(Ordering::SeqCst);
        let Ok(mut last) = tokio::time::timeout(self.config.timeout, self.flight.lock()).await
        else {
            return self.current();
        };
        if self.generation.load(Ordering::SeqCst) != seen {
            // Someone fetched while we waited: use what they got.
            return self.current();
        }
        if last.is_some_and(|at| at.elapsed() < self.config.cooldown) {
            return self.current();
        }
        if let Err(reason) = self.fetch().await {
            tracing::warn!(provider = %self.config.provider, %reason, "JWKS refetch for an unknown kid failed");
        }
        *last = Some(Instant::now());
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.current()
    }

    /// One fetch, counted; see [`Jwks::fetch_once`].
    async fn fetch(&self) -> Result<Option<Duration>, String> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let result = self.fetch_once().await;
        if result.is_err() {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// One fetch; on success installs the keys and returns the response's max-age.
    async fn fetch_once(&self) -> Result<Option<Duration>, String> {
        let fetch = async {
            let mut response = self
                .client
                .get(&self.config.url)
                .send()
                .await
                .map_err(|e| error_chain(&e))?;
            if !response.status().is_success() {
                return Err(format!("HTTP status {}", response.status()));
            }
            let max_age = response
                .headers()
                .get(http::header::CACHE_CONTROL)
                .and_then(|v| v.to_str().ok())
                .and_then(max_age);
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| error_chain(&e))? {
                if body.len() + chunk.len() > self.config.max_bytes {
                    return Err(format!(
                        "JWKS body is larger than {} bytes",
                        self.config.max_bytes
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok((body, max_age))
        };
        let (body, max_age) = tokio::time::timeout(self.config.timeout, fetch)
            .await
            .map_err(|_| format!("timed out after {:?}", self.config.timeout))??;
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| format!("not a JWKS: {e}"))?;
        let keys = KeySet::from_jwks(&set, &self.config.provider);
        if keys.is_empty() {
            return Err("the JWKS holds no usable key".into());
        }
        tracing::info!(provider = %self.config.provider, keys = keys.len(), "JWKS loaded");
        let keys = Arc::new(keys);
        if let Ok(mut seen) = LAST_GOOD.lock() {
            seen.insert(self.config.url.clone(), keys.clone());
        }
        self.keys.store(Some(keys));
        Ok(max_age)
    }
}

/// An error and every cause under it, outermost first: reqwest's own text
/// ("error sending request for url (...)") names no cause, the chain does
/// (connection refused, a TLS failure, a reset).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Some layers repeat their cause in their own text.
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn max_age(cache_control: &str) -> Option<Duration> {
    cache_control
        .split(',')
        .filter_map(|d| d.trim().strip_prefix("max-age="))
        .find_map(|v| v.trim().parse().ok())
        .map(Duration::from_secs)
}
