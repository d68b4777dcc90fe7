//! Rate limits: the stage after authentication (the caller is known) and
//! before the body is read. A binding's [`Policy`] is a list of limits, all
//! of which must pass; each counts requests per key (the consumer, the
//! client address, the route or a header's value) with GCRA, in process
//! ([`local`]) or in Redis shared by every replica ([`cluster`]). A check
//! says what the answer carries: `RateLimit-Policy` (every limit) and
//! `RateLimit` (what is left of the tightest), per
//! draft-ietf-httpapi-ratelimit-headers-11; a refusal is a
//! [`RateLimitError`].

mod cluster;
mod compile;
mod fields;
mod local;

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::auth::Identity;

pub use cluster::Cluster;
pub use compile::{Compiler, LimitsSource};

/// One binding's limits.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    limits: Vec<Arc<Limit>>,
    /// This binding's bucket for limits keyed by route.
    route_key: Arc<str>,
    /// `RateLimit-Policy` for callers without a tier (compiled once).
    policy_field: Option<HeaderValue>,
}

/// One configured limit, shared by every binding it applies to (a
/// route-level limit counts a consumer's calls to all the route's methods).
#[derive(Debug)]
pub struct Limit {
    name: String,
    key: KeyKind,
    default: Bucket,
    tiers: Vec<(String, Bucket)>,
    /// Where cluster-wide limits are counted; `None` for local ones.
    cluster: Option<Arc<Cluster>>,
    /// Keys Redis refused, until when: refused again without asking.
    refused_until: moka::sync::Cache<u64, tokio::time::Instant>,
    /// The start of this limit's Redis keys.
    redis_prefix: String,
    hasher: std::hash::RandomState,
}

/// One rate of a limit (its default, or a tier's) and its local buckets.
#[derive(Debug)]
struct Bucket {
    rate: Rate,
    /// Its item in `RateLimit-Policy`.
    policy_item: String,
    local: local::LocalLimiter,
}

/// What a limit counts separately.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    /// The API key's consumer or the token's `sub` (the client address for
    /// an anonymous caller).
    Consumer,
    /// The client address, behind the trusted proxies.
    Ip,
    /// Nothing: one bucket per binding.
    Route,
    /// The value of a request header (one shared bucket when absent).
    Header(HeaderName),
}

/// `burst` requests at once, then `rate` per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests per `per`.
    pub rate: u32,
    /// The window of `rate`.
    pub per: Duration,
    /// Requests allowed at once.
    pub burst: u32,
}

/// Who is asking, as far as keys are concerned.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// From authentication.
    pub identity: &'a Identity,
    /// The client's address, behind the trusted proxies.
    pub client_ip: Option<IpAddr>,
    /// The request's headers.
    pub headers: &'a HeaderMap,
}

/// What a check decided and what the answer carries.
#[derive(Debug, Default)]
pub struct Checked {
    /// `RateLimit-Policy` and `RateLimit`, for every answer of the request.
    pub fields: Vec<(HeaderName, HeaderValue)>,
    /// Whether a cluster-wide limit was decided locally (Redis unavailable).
    pub fell_back: bool,
    /// Set when a limit refused the request.
    pub refused: Option<RateLimitError>,
}

/// Decision of one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Allowed { remaining: u64, reset: Duration },
    Refused { retry_after: Duration },
}

/// A request over one of its limits.
#[derive(Debug, Clone, thiserror::Error)]
#[error("rate limit '{limit}' exceeded: {quota}")]
pub struct RateLimitError {
    /// The limit's name.
    pub limit: String,
    /// What it counts by: `consumer`, `ip`, `route` or `header`.
    pub key: &'static str,
    /// Whose quota: `consumer:NAME`, `ip:ADDR`, `route:METHOD TEMPLATE`, `header:NAME`.
    pub subject: String,
    /// The quota in words, e.g. "100 requests per 60 s".
    pub quota: String,
    /// When a request of this caller will be allowed again.
    pub retry_after: Duration,
}

/// A limit as a document generator (OpenAPI) shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitDescription {
    /// The policy name.
    pub name: String,
    /// `consumer`, `ip`, `route` or `header:NAME`.
    pub key: String,
    /// The default rate.
    pub rate: Rate,
    /// Other rates, by API-key tier.
    pub tiers: Vec<(String, Rate)>,
    /// Counted in Redis, across replicas.
    pub cluster_wide: bool,
}

// === impl Policy ===

impl Policy {
    /// `limits` on the binding `method template`.
    pub fn new(limits: Vec<Arc<Limit>>, method: &Method, template: &str) -> Policy {
        let items: Vec<&str> = limits
            .iter()
            .map(|l| l.default.policy_item.as_str())
            .collect();
        Policy {
            policy_field: fields::join(&items),
            route_key: Arc::from(format!("{method} {template}")),
            limits,
        }
    }

    /// Whether the binding has no limit.
    pub fn is_empty(&self) -> bool {
        self.limits.is_empty()
    }

    /// `RateLimit-Policy` before the caller is known (an answer refused by
    /// authentication still tells what the route's limits are).
    pub fn policy_field(&self) -> Option<HeaderValue> {
        self.policy_field.clone()
    }

    /// Counts the request against every limit, in order, stopping at the
    /// first that refuses (the ones after it are not charged).
    pub async fn check(&self, caller: Caller<'_>) -> Checked {
        let mut checked = Checked::default();
        if self.limits.is_empty() {
            return checked;
        }
        let tier = caller.identity.tier.as_deref();
        let mut items = Vec::with_capacity(self.limits.len());
        // The tightest so far: (remaining, reset, limit name).
        let mut tightest: Option<(u64, Duration, &str)> = None;
        for limit in &self.limits {
            let bucket = limit.bucket(tier);
            items.push(bucket.policy_item.as_str());
            let (subject, key) = limit.key.value(caller, &self.route_key);
            let (decision, fell_back) = limit.decide(bucket, &key).await;
            checked.fell_back |= fell_back;
            match decision {
                Decision::Allowed { remaining, reset } => {
                    if tightest.is_none_or(|(least, ..)| remaining < least) {
                        tightest = Some((remaining, reset, &limit.name));
                    }
                }
                Decision::Refused { retry_after } => {
                    tightest = Some((0, retry_after, &limit.name));
                    checked.refused = Some(RateLimitError {
                        limit: limit.name.clone(),
                        key: limit.key.label(),
                        subject,
                        quota: bucket.rate.in_words(),
                        retry_after,
                    });
                    break;
                }
            }
        }
        let policy = match tier {
            Some(_) if self.limits.iter().any(|l| !l.tiers.is_empty()) => {
                let all: Vec<&str> = self
                    .limits
                    .iter()
                    .map(|l| l.bucket(tier).policy_item.as_str())
                    .collect();
                fields::join(&all)
            }
            _ => self.policy_field.clone(),
        };
        checked
            .fields
            .extend(policy.map(|v| (crate::headers::RATELIMIT_POLICY, v)));
        if let Some((remaining, reset, name)) = tightest
            && let Some(value) = fields::current(name, remaining, reset)
        {
            checked.fields.push((crate::headers::RATELIMIT, value));
        }
        checked
    }

    /// How many keys each limit tracks in memory now, by name (all its
    /// rates together): what `max_tracked_keys` bounds.
    pub fn tracked_keys(&self) -> Vec<(String, usize)> {
        (self.limits.iter())
            .map(|l| (l.name.clone(), l.tracked_keys()))
            .collect()
    }

    /// The binding's limits, for documentation.
    pub fn describe(&self) -> Vec<LimitDescription> {
        self.limits.iter().map(|l| l.describe()).collect()
    }
}

// === impl Limit ===

impl Limit {
    /// The bucket of a caller's tier (the default for none or an unknown one).
    fn bucket(&self, tier: Option<&str>) -> &Bucket {
        tier.and_then(|t| self.tiers.iter().find(|(name, _)| name == t))
            .map_or(&self.default, |(_, bucket)| bucket)
    }

    /// Asks Redis (unless it refused this key until later), else the local
    /// buckets. Says whether Redis should have answered and did not.
    async fn decide(&self, bucket: &Bucket, key: &str) -> (Decision, bool) {
        let hashed = self.hasher.hash_one(key);
        let Some(cluster) = &self.cluster else {
            return (bucket.local.check(hashed), false);
        };
        let now = tokio::time::Instant::now();
        if let Some(until) = self.refused_until.get(&hashed)
            && until > now
        {
            return (
                Decision::Refused {
                    retry_after: until - now,
                },
                false,
            );
        }
        let redis_key = format!("{}:{}", self.redis_prefix, fields::key_digest(key));
        match cluster.check(&redis_key, &bucket.rate).await {
            Ok(decision) => {
                if let Decision::Refused { retry_after } = decision {
                    self.refused_until.insert(hashed, now + retry_after);
                }
                (decision, false)
            }
            Err(_) => (bucket.local.check(hashed), true),
        }
    }

    fn describe(&self) -> LimitDescription {
        LimitDescription {
            name: self.name.clone(),
            key: self.key.to_string(),
            rate: self.default.rate,
            tiers: (self.tiers.iter())
                .map(|(name, bucket)| (name.clone(), bucket.rate))
                .collect(),
            cluster_wide: self.cluster.is_some(),
        }
    }

    /// Keys tracked in memory by its local buckets.
    fn tracked_keys(&self) -> usize {
        let tiers = self.tiers.iter().map(|(_, b)| b.local.tracked_keys());
        self.default.local.tracked_keys() + tiers.sum::<usize>()
    }
}

// === impl KeyKind ===

impl KeyKind {
    /// The metric label: `consumer`, `ip`, `route` or `header`.
    pub fn label(&self) -> &'static str {
        match self {
            KeyKind::Consumer => "consumer",
            KeyKind::Ip => "ip",
            KeyKind::Route => "route",
            KeyKind::Header(_) => "header",
        }
    }

    /// The caller's key: (the subject a 429 names, the bucket key). A
    /// header's value is never echoed; an unknown address is one bucket.
    fn value(&self, caller: Caller<'_>, route: &str) -> (String, String) {
        let ip = || {
            caller
                .client_ip
                .map_or("unknown".into(), |ip| ip.to_string())
        };
        match self {
            KeyKind::Consumer => match (&caller.identity.consumer, &caller.identity.subject) {
                (Some(consumer), _) => (format!("consumer:{consumer}"), format!("key:{consumer}")),
                (None, Some(sub)) => (format!("consumer:{sub}"), format!("sub:{sub}")),
                (None, None) => (format!("ip:{}", ip()), format!("ip:{}", ip())),
            },
            KeyKind::Ip => (format!("ip:{}", ip()), ip()),
            KeyKind::Route => (format!("route:{route}"), route.to_string()),
            KeyKind::Header(name) => {
                let value = caller.headers.get(name).map(HeaderValue::as_bytes);
                let value = String::from_utf8_lossy(value.unwrap_or_default());
                (format!("header:{name}"), value.into_owned())
            }
        }
    }
}

impl std::fmt::Display for KeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyKind::Header(name) => write!(f, "header:{name}"),
            other => f.write_str(other.label()),
        }
    }
}

// === impl Rate ===

impl Rate {
    /// The time one request's cell takes to drain.
    pub fn interval(&self) -> Duration {
        self.per / self.rate.max(1)
    }

    fn in_words(&self) -> String {
        format!("{} requests per {} s", self.rate, self.per.as_secs())
    }
}
