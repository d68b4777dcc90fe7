//! Compiles `[rate_limits]` and the `rate_limits = [...]` lists into
//! [`Limit`]s, reporting every mistake at its place: a name that cannot be
//! a header item, an unknown key kind, a window that is not whole seconds,
//! a tier no API key has, a consumer key on a route where every caller is
//! anonymous.

use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use toml::Spanned;

use super::local::LocalLimiter;
use super::{Bucket, Cluster, KeyKind, Limit, Rate, fields};
use crate::config::ConfigError;
use crate::config::diagnostic::suggest;
use crate::config::file::DurationValue;
use crate::config::rate_limit::{LimitSection, RateLimitsSection, TierSection};

/// Longest limit name: it is repeated in two headers of every answer.
const MAX_NAME_BYTES: usize = 64;

/// What every limit of one configuration shares.
#[derive(Debug)]
pub struct Compiler {
    cluster: Option<Arc<Cluster>>,
    key_prefix: String,
    max_tracked_keys: usize,
    sweep_interval: Duration,
    /// Tiers the API keys declare.
    tiers: BTreeSet<String>,
}

/// One `rate_limits = [...]` list and where it applies.
#[derive(Debug)]
pub struct LimitsSource<'a> {
    /// The list.
    pub section: &'a Spanned<Vec<LimitSection>>,
    /// What its Redis keys are scoped by: the service, or `service/Method`.
    pub scope: String,
    /// Every caller of the route is anonymous (`auth = "none"`).
    pub anonymous: bool,
}

// === impl Compiler ===

impl Compiler {
    /// Checks `[rate_limits]`; `tiers` are those the API keys declare.
    pub fn new(
        section: &RateLimitsSection,
        tiers: BTreeSet<String>,
        errors: &mut Vec<ConfigError>,
    ) -> Compiler {
        let cluster = section.redis.as_ref().and_then(|url| {
            match redis::Client::open(url.get_ref().as_str()) {
                Ok(client) => Some(Arc::new(Cluster::new(client, section.redis_timeout))),
                Err(e) => {
                    errors.push(
                        ConfigError::at(url.span(), format!("invalid Redis URL: {e}")).hint(
                            "use redis://host:port, rediss://host:port or redis+unix:///path/to/socket",
                        ),
                    );
                    None
                }
            }
        });
        if *section.max_tracked_keys.get_ref() == 0 {
            errors.push(ConfigError::at(
                section.max_tracked_keys.span(),
                "max_tracked_keys must be at least 1",
            ));
        }
        Compiler {
            cluster,
            key_prefix: section.redis_key_prefix.clone(),
            max_tracked_keys: (*section.max_tracked_keys.get_ref()).max(1),
            sweep_interval: section.sweep_interval,
            tiers,
        }
    }

    /// The limits of one list; a limit with a mistake is left out.
    pub fn limits(
        &self,
        source: LimitsSource<'_>,
        errors: &mut Vec<ConfigError>,
    ) -> Vec<Arc<Limit>> {
        let mut names = BTreeSet::new();
        let mut limits = Vec::new();
        for limit in source.section.get_ref() {
            let name = limit.name.get_ref();
            if !names.insert(name.clone()) {
                errors.push(ConfigError::at(
                    limit.name.span(),
                    format!("two rate limits named '{name}' on one route"),
                ));
                continue;
            }
            if let Some(compiled) = self.limit(limit, &source, errors) {
                limits.push(Arc::new(compiled));
            }
        }
        limits
    }

    fn limit(
        &self,
        section: &LimitSection,
        source: &LimitsSource<'_>,
        errors: &mut Vec<ConfigError>,
    ) -> Option<Limit> {
        let before = errors.len();
        let name = section.name.get_ref();
        check_name(&section.name, errors);
        let key = key_kind(&section.key, errors);
        if key == Some(KeyKind::Consumer) && source.anonymous {
            errors.push(
                ConfigError::at(
                    section.key.span(),
                    "key = \"consumer\" on a route where every caller is anonymous",
                )
                .hint("authenticate the route (auth = \"api_key\" or a provider), or count by key = \"ip\""),
            );
        }
        let rate = compile_rate(
            &section.rate,
            Some(&section.per),
            section.burst.as_ref(),
            None,
            errors,
        );
        let cluster = self.scope(section, errors);
        if cluster.is_some() && rate.is_some_and(|r| r.interval() < Duration::from_micros(1)) {
            errors.push(
                ConfigError::at(
                    section.rate.span(),
                    "a cluster-wide limit allows at most one request per microsecond",
                )
                .hint(
                    "Redis counts in microseconds: keep rate / per at or below 1000000 per second",
                ),
            );
        }
        let mut tiers = Vec::new();
        for (tier, tier_section) in &section.tiers {
            if key.as_ref().is_some_and(|k| *k != KeyKind::Consumer) {
                errors.push(ConfigError::at(
                    tier.span(),
                    "tiers apply to API-key consumers: they need key = \"consumer\"",
                ));
            } else if !self.tiers.contains(tier.get_ref()) {
                let known: Vec<String> = self.tiers.iter().cloned().collect();
                errors.push(
                    ConfigError::at(
                        tier.span(),
                        format!("no API key has tier '{}'", tier.get_ref()),
                    )
                    .hint(suggest(tier.get_ref(), &known, "tiers")),
                );
            }
            let TierSection {
                rate: r,
                per,
                burst,
            } = tier_section.get_ref();
            let tier_rate =
                compile_rate(r, per.as_ref(), burst.as_ref(), rate.map(|r| r.per), errors);
            if let Some(tier_rate) = tier_rate {
                tiers.push((tier.get_ref().clone(), tier_rate));
            }
        }
        if errors.len() > before {
            return None;
        }
        let (key, rate) = (key?, rate?);
        let tiers = tiers
            .into_iter()
            .map(|(tier, rate)| (tier, self.bucket(name, rate)))
            .collect();
        Some(Limit {
            name: name.clone(),
            key,
            default: self.bucket(name, rate),
            tiers,
            cluster,
            refused_until: moka::sync::Cache::builder()
                .max_capacity(self.max_tracked_keys as u64)
                .time_to_live(rate.per.max(rate.interval() * rate.burst))
                .build(),
            redis_prefix: format!("{}:{}:{name}", self.key_prefix, source.scope),
            hasher: std::hash::RandomState::new(),
        })
    }

    /// The Redis a limit counts in: the configured one unless `scope = "local"`.
    fn scope(&self, section: &LimitSection, errors: &mut Vec<ConfigError>) -> Option<Arc<Cluster>> {
        let Some(scope) = &section.scope else {
            return self.cluster.clone();
        };
        match scope.get_ref().as_str() {
            "local" => None,
            "cluster" if self.cluster.is_none() => {
                errors.push(
                    ConfigError::at(scope.span(), "scope = \"cluster\" needs a Redis")
                        .hint("set [rate_limits] redis = \"redis://host:6379\""),
                );
                None
            }
            "cluster" => self.cluster.clone(),
            other => {
                errors.push(
                    ConfigError::at(scope.span(), format!("unknown scope '{other}'")).hint(
                        "use \"cluster\" (Redis, the default when set) or \"local\" (per replica)",
                    ),
                );
                None
            }
        }
    }

    fn bucket(&self, name: &str, rate: Rate) -> Bucket {
        Bucket {
            rate,
            policy_item: fields::policy_item(name, &rate),
            local: LocalLimiter::new(rate, self.max_tracked_keys, self.sweep_interval),
        }
    }
}

/// Names become Structured Field strings in two headers: keep them plain.
fn check_name(name: &Spanned<String>, errors: &mut Vec<ConfigError>) {
    let text = name.get_ref();
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if text.is_empty() || text.len() > MAX_NAME_BYTES || !text.chars().all(plain) {
        errors.push(
            ConfigError::at(name.span(), format!("invalid rate limit name {text:?}")).hint(
                format!("use 1 to {MAX_NAME_BYTES} letters, digits, '-', '_' or '.'"),
            ),
        );
    }
}

fn key_kind(key: &Spanned<String>, errors: &mut Vec<ConfigError>) -> Option<KeyKind> {
    let text = key.get_ref();
    let kind = match text.as_str() {
        "consumer" => KeyKind::Consumer,
        "ip" => KeyKind::Ip,
        "route" => KeyKind::Route,
        other => match other.strip_prefix("header:") {
            Some(name) => match HeaderName::from_bytes(name.as_bytes()) {
                Ok(name) => KeyKind::Header(name),
                Err(_) => {
                    errors.push(ConfigError::at(
                        key.span(),
                        format!("'{name}' is not a header name"),
                    ));
                    return None;
                }
            },
            None => {
                let known = ["consumer", "ip", "route", "header:NAME"].map(String::from);
                errors.push(
                    ConfigError::at(key.span(), format!("unknown rate limit key '{other}'"))
                        .hint(suggest(other, &known, "keys")),
                );
                return None;
            }
        },
    };
    Some(kind)
}

/// A rate from its keys; `per` falls back to `default_per` (a tier's to its limit's).
fn compile_rate(
    rate: &Spanned<u32>,
    per: Option<&Spanned<DurationValue>>,
    burst: Option<&Spanned<u32>>,
    default_per: Option<Duration>,
    errors: &mut Vec<ConfigError>,
) -> Option<Rate> {
    let mut ok = true;
    let mut fail = |span: Range<usize>, message: &str, hint: &str| {
        errors.push(ConfigError::at(span, message).hint(hint));
        ok = false;
    };
    if *rate.get_ref() == 0 {
        fail(
            rate.span(),
            "rate must be at least 1",
            "to refuse every request, do not expose the method",
        );
    }
    let window = match per {
        Some(per) => {
            let window = per.get_ref().0;
            if window.is_zero() || window.subsec_nanos() != 0 {
                fail(
                    per.span(),
                    "per must be a whole number of seconds",
                    "RateLimit-Policy gives windows in seconds: write rate = 10, per = \"1s\" rather than rate = 1, per = \"100ms\"",
                );
            }
            window
        }
        None => default_per.unwrap_or(Duration::from_secs(1)),
    };
    if let Some(burst) = burst
        && *burst.get_ref() == 0
    {
        fail(
            burst.span(),
            "burst must be at least 1",
            "burst is how many requests may come at once",
        );
    }
    ok.then(|| Rate {
        rate: *rate.get_ref(),
        per: window,
        burst: burst.map_or(*rate.get_ref(), |b| *b.get_ref()),
    })
}
