//! API keys for third-party callers: read from a header or query parameter,
//! stored only as SHA-256 digests, compared in constant time against every
//! stored digest so timing says nothing about which (or whether a) key matched.

use http::{HeaderName, HeaderValue};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::identity::Identity;

/// The configured keys.
#[derive(Debug)]
pub struct ApiKeys {
    keys: Vec<StoredKey>,
    consumer_metadata: HeaderName,
}

/// One key, as configured: its digest and whose it is.
#[derive(Debug, Clone)]
pub struct StoredKey {
    /// SHA-256 of the key.
    pub digest: [u8; 32],
    /// The consumer it admits.
    pub consumer: String,
    /// The consumer's tier, for rate limits.
    pub tier: Option<String>,
}

// === impl ApiKeys ===

impl ApiKeys {
    /// The stored keys; the consumer's name goes upstream in `consumer_metadata`.
    pub fn new(keys: Vec<StoredKey>, consumer_metadata: HeaderName) -> ApiKeys {
        ApiKeys {
            keys,
            consumer_metadata,
        }
    }

    /// Checks a presented key; a refusal is the reason, in words.
    pub fn verify(&self, presented: &str) -> Result<Identity, String> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found: Option<&StoredKey> = None;
        // No early exit: every digest is compared.
        for stored in &self.keys {
            if bool::from(stored.digest.ct_eq(&digest)) {
                found = Some(stored);
            }
        }
        let StoredKey { consumer, tier, .. } =
            found.ok_or_else(|| "unknown API key".to_string())?;
        let mut metadata = Vec::with_capacity(1);
        if let Ok(value) = HeaderValue::from_str(consumer) {
            metadata.push((self.consumer_metadata.clone(), value));
        }
        Ok(Identity {
            subject: None,
            consumer: Some(consumer.to_string()),
            tier: tier.clone(),
            via: Some("api_key".into()),
            metadata,
        })
    }

    /// Every tier some key has.
    pub fn tiers(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().filter_map(|k| k.tier.as_deref())
    }

    /// Metadata keys this source sets (stripped from clients everywhere).
    pub fn metadata_keys(&self) -> Vec<HeaderName> {
        vec![self.consumer_metadata.clone()]
    }
}

/// Parses a hex SHA-256 digest.
pub fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Hex SHA-256 of a key, for writing keys files.
pub fn digest_hex(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> ApiKeys {
        let digest = parse_digest(&digest_hex("s3cret-key-1")).expect("hex");
        ApiKeys::new(
            vec![StoredKey {
                digest,
                consumer: "partner-a".into(),
                tier: None,
            }],
            HeaderName::from_static("x-consumer"),
        )
    }

    #[test]
    fn a_stored_key_admits_its_consumer() {
        let identity = keys().verify("s3cret-key-1").expect("valid");
        assert_eq!(identity.consumer.as_deref(), Some("partner-a"));
    }

    #[test]
    fn a_key_one_character_off_is_refused() {
        assert!(keys().verify("s3cret-key-2").is_err());
        assert!(keys().verify("s3cret-key-").is_err());
    }

    #[test]
    fn digests_parse_only_from_64_hex_characters() {
        assert!(parse_digest("abc").is_none());
        assert!(parse_digest(&"zz".repeat(32)).is_none());
    }
}
