//! Which wire format a server stream is written in: the route's pinned one,
//! else the best the client's `Accept` allows (RFC 9110 §12.5.1), NDJSON
//! when it says nothing.

use http::HeaderValue;

use super::StreamError;

/// A server stream's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/x-ndjson`: one JSON message per line.
    Ndjson,
    /// `text/event-stream`: one `data:` event per message.
    Sse,
    /// `application/json`: one JSON array, written element by element.
    JsonArray,
}

/// The media types offered, in the gateway's order of preference.
const OFFERED: [Format; 3] = [Format::Ndjson, Format::Sse, Format::JsonArray];

// === impl Format ===

impl Format {
    /// Its name in routes.toml (`stream_format`).
    pub fn from_name(name: &str) -> Option<Format> {
        match name {
            "ndjson" => Some(Format::Ndjson),
            "sse" => Some(Format::Sse),
            "json" => Some(Format::JsonArray),
            _ => None,
        }
    }

    /// Its name in routes.toml.
    pub fn name(self) -> &'static str {
        match self {
            Format::Ndjson => "ndjson",
            Format::Sse => "sse",
            Format::JsonArray => "json",
        }
    }

    /// Its media type.
    pub fn media_type(self) -> &'static str {
        match self {
            Format::Ndjson => "application/x-ndjson",
            Format::Sse => "text/event-stream",
            Format::JsonArray => "application/json",
        }
    }

    /// Its Content-Type header value.
    pub fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Format::Ndjson => "application/x-ndjson",
            Format::Sse => "text/event-stream; charset=utf-8",
            Format::JsonArray => "application/json",
        })
    }
}

/// The format to answer in: `pinned` if the client accepts it, else the
/// client's most preferred one; 406 when it accepts none.
pub fn negotiate(
    accept: Option<&HeaderValue>,
    pinned: Option<Format>,
) -> Result<Format, StreamError> {
    let Some(accept) = accept
        .and_then(|a| a.to_str().ok())
        .filter(|a| !a.trim().is_empty())
    else {
        return Ok(pinned.unwrap_or(Format::Ndjson));
    };
    let offered: &[Format] = match &pinned {
        Some(pinned) => std::slice::from_ref(pinned),
        None => &OFFERED,
    };
    let mut best: Option<(f32, Format)> = None;
    for &format in offered {
        let q = quality(accept, format.media_type());
        if q > 0.0 && best.is_none_or(|(best_q, _)| q > best_q) {
            best = Some((q, format));
        }
    }
    best.map(|(_, format)| format)
        .ok_or_else(|| StreamError::NotAcceptable {
            accept: accept.to_string(),
            offered: offered
                .iter()
                .map(|f| f.media_type())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The quality `accept` gives `media_type`: from its most specific
/// matching range (RFC 9110 §12.5.1), 0 when none matches.
fn quality(accept: &str, media_type: &str) -> f32 {
    let (kind, _) = media_type.split_once('/').unwrap_or((media_type, ""));
    let mut best: Option<(u8, f32)> = None;
    for range in accept.split(',') {
        let mut params = range.split(';');
        let name = params.next().unwrap_or("").trim().to_ascii_lowercase();
        let specificity = if name == media_type {
            3
        } else if name.strip_suffix("/*").is_some_and(|k| k == kind) {
            2
        } else if name == "*/*" {
            1
        } else {
            continue;
        };
        let q = params
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .and_then(|(_, v)| v.trim().parse::<f32>().ok())
            .unwrap_or(1.0)
            .clamp(0.0, 1.0);
        if best.is_none_or(|(s, _)| specificity > s) {
            best = Some((specificity, q));
        }
    }
    best.map_or(0.0, |(_, q)| q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(accept: &str) -> Result<Format, StreamError> {
        negotiate(Some(&HeaderValue::from_str(accept).expect("header")), None)
    }

    #[test]
    fn no_accept_is_ndjson_or_the_pinned_format() {
        assert_eq!(negotiate(None, None).ok(), Some(Format::Ndjson));
        assert_eq!(negotiate(None, Some(Format::Sse)).ok(), Some(Format::Sse));
        assert_eq!(pick("*/*").ok(), Some(Format::Ndjson));
    }

    #[test]
    fn the_clients_preference_wins() {
        assert_eq!(pick("text/event-stream").ok(), Some(Format::Sse));
        assert_eq!(pick("application/json").ok(), Some(Format::JsonArray));
        assert_eq!(
            pick("application/x-ndjson;q=0.5, text/event-stream").ok(),
            Some(Format::Sse)
        );
        assert_eq!(pick("text/*").ok(), Some(Format::Sse));
        assert_eq!(
            pick("*/*;q=0.1, application/json;q=0.9").ok(),
            Some(Format::JsonArray)
        );
    }

    #[test]
    fn a_refused_format_is_not_acceptable() {
        assert!(pick("text/html").is_err());
        assert!(
            pick("application/x-ndjson;q=0, text/event-stream;q=0, application/json;q=0").is_err()
        );
        let html = HeaderValue::from_static("text/html");
        assert!(negotiate(Some(&html), Some(Format::Sse)).is_err());
        let any = HeaderValue::from_static("*/*");
        assert_eq!(
            negotiate(Some(&any), Some(Format::JsonArray)).ok(),
            Some(Format::JsonArray)
        );
    }
}
