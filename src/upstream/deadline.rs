//! One deadline per request, fixed when the request arrives, and the
//! `grpc-timeout` wire format.
//!
//! A deadline only ever shrinks: the budget is the route's timeout, shortened
//! by a client's `grpc-timeout`, and what the upstream is given is whatever is
//! left at the moment of the call, rounded *down*, so no hop is ever granted
//! more time than its caller has.

use std::time::Duration;

use http::HeaderValue;
use tokio::time::Instant;

/// The instant a request's budget runs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    at: Instant,
    budget: Duration,
}

/// A malformed `grpc-timeout` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("grpc-timeout must be 1 to 8 digits followed by one of H M S m u n, got {0:?}")]
pub struct InvalidTimeout(pub String);

// === impl Deadline ===

impl Deadline {
    /// Starts the clock now: the route's budget, capped by the client's ask.
    pub fn start(route_timeout: Duration, client_timeout: Option<Duration>) -> Deadline {
        Deadline::started_at(Instant::now(), route_timeout, client_timeout)
    }

    /// The deadline of a request whose head arrived at `received`: work done
    /// since then (authentication, a key fetch) is already spent.
    pub fn started_at(
        received: Instant,
        route_timeout: Duration,
        client_timeout: Option<Duration>,
    ) -> Deadline {
        let budget = client_timeout.map_or(route_timeout, |client| client.min(route_timeout));
        Deadline {
            at: received + budget,
            budget,
        }
    }

    /// Time left, zero once expired.
    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// The instant the budget runs out.
    pub fn instant(&self) -> Instant {
        self.at
    }

    /// The whole budget the request started with.
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// The remaining budget as a `grpc-timeout` value, or `None` if nothing is left.
    pub fn to_grpc_timeout(&self) -> Option<HeaderValue> {
        let remaining = self.remaining();
        (!remaining.is_zero()).then(|| encode(remaining))
    }
}

/// Encodes a duration as `grpc-timeout`: at most 8 digits, in the finest unit
/// that fits, rounded down.
pub fn encode(timeout: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let nanos = timeout.as_nanos();
    let units: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    let (value, unit) = units
        .iter()
        .map(|&(per, unit)| (nanos / per, unit))
        .find(|&(value, _)| value <= MAX)
        .unwrap_or((MAX, 'H'));
    let mut text = value.to_string();
    text.push(unit);
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("0n"))
}

/// Decodes a `grpc-timeout` value.
pub fn decode(value: &HeaderValue) -> Result<Duration, InvalidTimeout> {
    let invalid = || InvalidTimeout(String::from_utf8_lossy(value.as_bytes()).into_owned());
    let bytes = value.as_bytes();
    let (digits, unit) = bytes.split_at(bytes.len().saturating_sub(1));
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(invalid());
    }
    let amount: u64 = std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse().ok())
        .ok_or_else(invalid)?;
    Ok(match unit {
        b"H" => Duration::from_secs(amount * 3600),
        b"M" => Duration::from_secs(amount * 60),
        b"S" => Duration::from_secs(amount),
        b"m" => Duration::from_millis(amount),
        b"u" => Duration::from_micros(amount),
        b"n" => Duration::from_nanos(amount),
        _ => return Err(invalid()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ROUTE_TIMEOUT: Duration = Duration::from_secs(2);

    #[test]
    fn client_timeout_shortens_the_budget() {
        let deadline = Deadline::start(ROUTE_TIMEOUT, Some(Duration::from_millis(300)));
        assert_eq!(deadline.budget(), Duration::from_millis(300));
    }

    #[test]
    fn client_timeout_is_capped_by_the_route() {
        let deadline = Deadline::start(ROUTE_TIMEOUT, Some(Duration::from_secs(3600)));
        assert_eq!(deadline.budget(), ROUTE_TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn remaining_budget_shrinks_and_is_never_reset() {
        let deadline = Deadline::start(ROUTE_TIMEOUT, None);
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(deadline.remaining(), Duration::from_millis(500));
        assert_eq!(
            deadline.to_grpc_timeout(),
            Some(HeaderValue::from_static("500000u"))
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(deadline.remaining(), Duration::ZERO);
        assert_eq!(deadline.to_grpc_timeout(), None);
    }

    #[test]
    fn encodes_in_the_finest_unit_that_fits() {
        assert_eq!(encode(Duration::from_nanos(5)), "5n");
        assert_eq!(encode(Duration::from_millis(100)), "100000u");
        assert_eq!(encode(Duration::from_secs(5)), "5000000u");
        assert_eq!(encode(Duration::from_secs(500)), "500000m");
        assert_eq!(
            encode(Duration::from_secs(86_400 * 365 * 100_000)),
            "99999999H"
        );
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in ["", "S", "1", "123456789S", "1x", "-1S", "1.5S", " 1S"] {
            assert!(decode(&HeaderValue::from_static(bad)).is_err(), "{bad:?}");
        }
        assert_eq!(
            decode(&HeaderValue::from_static("250m")),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(
            decode(&HeaderValue::from_static("99999999H")),
            Ok(Duration::from_secs(99_999_999 * 3600))
        );
    }

    proptest! {
        #[test]
        fn encoding_never_exceeds_the_duration(nanos in 0u64..u64::MAX) {
            let d = Duration::from_nanos(nanos);
            let decoded = decode(&encode(d)).expect("encode output decodes");
            prop_assert!(decoded <= d);
        }

        #[test]
        fn round_trips_within_one_unit(value in 0u64..99_999_999, unit in prop::sample::select(vec!['n','u','m','S','M','H'])) {
            let text = format!("{value}{unit}");
            let d = decode(&HeaderValue::from_str(&text).expect("ascii")).expect("valid");
            let again = decode(&encode(d)).expect("valid");
            prop_assert_eq!(again, d);
        }
    }
}
