//! The `RateLimit-Policy` and `RateLimit` fields of
//! draft-ietf-httpapi-ratelimit-headers-11 (Structured Field lists of
//! String items with parameters), and the digest that names a key in Redis.

use std::time::Duration;

use http::HeaderValue;
use sha2::{Digest, Sha256};

use super::Rate;

/// A policy's item: `"name";q=RATE;w=SECONDS`, plus the GCRA burst as a
/// vendor parameter when it differs from the quota (the draft leaves the
/// algorithm open and asks for prefixed extension parameters).
pub(super) fn policy_item(name: &str, rate: &Rate) -> String {
    let mut item = format!("\"{name}\";q={};w={}", rate.rate, rate.per.as_secs());
    if rate.burst != rate.rate {
        item.push_str(&format!(";protogate-burst={}", rate.burst));
    }
    item
}

/// The items as one field value; `None` for no items.
pub(super) fn join(items: &[&str]) -> Option<HeaderValue> {
    if items.is_empty() {
        return None;
    }
    // Names are checked at load time to be token characters, so this holds.
    HeaderValue::from_str(&items.join(", ")).ok()
}

/// `"name";r=REMAINING;t=SECONDS`: what is left, and within how long
/// (rounded up, so a client waiting `t` never comes back early).
pub(super) fn current(name: &str, remaining: u64, reset: Duration) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "\"{name}\";r={remaining};t={}",
        whole_seconds(reset)
    ))
    .ok()
}

/// Seconds, rounded up.
fn whole_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// A key as Redis stores it: 128 bits of its SHA-256 in hex, so a long or
/// hostile header value is a short, fixed-size key name.
pub(super) fn key_digest(key: &str) -> String {
    Sha256::digest(key.as_bytes())[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_structured_field_lists() {
        let rate = Rate {
            rate: 100,
            per: Duration::from_secs(60),
            burst: 20,
        };
        let item = policy_item("per-consumer", &rate);
        assert_eq!(item, "\"per-consumer\";q=100;w=60;protogate-burst=20");
        let both = join(&[&item, "\"global\";q=5;w=1"]).expect("value");
        assert_eq!(
            both,
            "\"per-consumer\";q=100;w=60;protogate-burst=20, \"global\";q=5;w=1"
        );
        let now = current("global", 0, Duration::from_millis(1_200)).expect("value");
        assert_eq!(now, "\"global\";r=0;t=2");
    }

    #[test]
    fn key_digests_are_short_and_stable() {
        let long = "x".repeat(10_000);
        assert_eq!(key_digest(&long).len(), 32);
        assert_eq!(key_digest("a"), key_digest("a"));
        assert_ne!(key_digest("a"), key_digest("b"));
    }
}
