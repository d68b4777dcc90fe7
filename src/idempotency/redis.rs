//! The store shared by every replica: one Redis key per caller's key. A
//! claim is `SET NX PX <lease>` of an in-flight marker (in one script with
//! the read of what is there, so claiming costs one round trip); the answer
//! replaces the marker with `PX <ttl>` only while the marker is still this
//! claim's; a release deletes it only then. Every command is bounded by
//! `redis_timeout`; a failure is the caller's cue to use the memory store.

use std::time::Duration;

use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::codec::{self, Decoded};
use super::{Fingerprint, Found, Held, Slot, StoredAnswer};

/// Claims the key, or returns what holds it.
const CLAIM: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end
return redis.call('GET', KEYS[1])";

/// Replaces this claim's marker with the answer.
const FINISH: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0";

/// Deletes this claim's marker.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";

#[derive(Clone)]
pub(super) struct Redis {
    connection: ConnectionManager,
    prefix: String,
    timeout: Duration,
    claim: std::sync::Arc<Script>,
    finish: std::sync::Arc<Script>,
    release: std::sync::Arc<Script>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// A Redis command that failed or took longer than `redis_timeout`.
#[derive(Debug, thiserror::Error)]
pub(super) enum RedisFailure {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
}

impl Redis {
    /// Connects lazily: the first command dials.
    pub(super) fn new(url: &str, prefix: &str, timeout: Duration) -> redis::RedisResult<Redis> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1);
        Ok(Redis {
            connection: ConnectionManager::new_lazy_with_config(client, config)?,
            prefix: prefix.to_string(),
            timeout,
            claim: Script::new(CLAIM).into(),
            finish: Script::new(FINISH).into(),
            release: Script::new(RELEASE).into(),
        })
    }

    fn key(&self, slot: Slot) -> String {
        format!("{}{}", self.prefix, slot.hex())
    }

    async fn bounded<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, RedisFailure> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(RedisFailure::Timeout(self.timeout)),
        }
    }

    pub(super) async fn begin(
        &self,
        slot: Slot,
        fingerprint: Fingerprint,
        lease: Duration,
    ) -> Result<Found, RedisFailure> {
        let token: [u8; 16] = rand::random();
        let marker = codec::in_flight(fingerprint, token);
        let mut connection = self.connection.clone();
        let mut invocation = self.claim.key(self.key(slot));
        invocation.arg(&marker).arg(millis(lease));
        let held: Option<Vec<u8>> = self
            .bounded(invocation.invoke_async(&mut connection))
            .await?;
        Ok(match held.as_deref().map(codec::decode) {
            None => Found::Claimed(Held::Redis(token)),
            Some(Some(Decoded::InFlight(print))) if print == fingerprint => Found::InFlight,
            Some(Some(Decoded::Done(print, answer))) if print == fingerprint => Found::Done(answer),
            Some(Some(_)) => Found::Mismatch,
            // Not ours to overwrite: someone else's value under our prefix.
            Some(None) => Found::InFlight,
        })
    }

    pub(super) async fn finish(
        &self,
        slot: Slot,
        token: [u8; 16],
        fingerprint: Fingerprint,
        answer: &StoredAnswer,
        ttl: Duration,
    ) -> Result<(), RedisFailure> {
        let mut connection = self.connection.clone();
        let mut invocation = self.finish.key(self.key(slot));
        invocation
            .arg(codec::in_flight(fingerprint, token))
            .arg(codec::done(fingerprint, answer))
            .arg(millis(ttl));
        let _: i64 = self
            .bounded(invocation.invoke_async(&mut connection))
            .await?;
        Ok(())
    }

    pub(super) async fn release(
        &self,
        slot: Slot,
        token: [u8; 16],
        fingerprint: Fingerprint,
    ) -> Result<(), RedisFailure> {
        let mut connection = self.connection.clone();
        let mut invocation = self.release.key(self.key(slot));
        invocation.arg(codec::in_flight(fingerprint, token));
        let _: i64 = self
            .bounded(invocation.invoke_async(&mut connection))
            .await?;
        Ok(())
    }
}

fn millis(duration: Duration) -> u64 {
    (duration.as_millis() as u64).max(1)
}
