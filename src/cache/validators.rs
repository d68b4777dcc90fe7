//! Validators: the strong `ETag` of a body, `If-None-Match` (RFC 9110
//! §13.1.2), and the note a 304 carries about the 200 it stands for.

use std::fmt::Write as _;

use http::{HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};

use super::REPRESENTATION;

/// A strong validator: a digest of the exact body bytes.
pub fn etag(body: &[u8]) -> HeaderValue {
    let digest = Sha256::digest(body);
    let mut text = String::with_capacity(34);
    text.push('"');
    for byte in &digest[..16] {
        let _ = write!(text, "{byte:02x}");
    }
    text.push('"');
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// RFC 9110 §13.1.2: `*` or a list of entity tags, compared weakly. A tag
/// with a content-coding suffix (`"abc-gzip"`, added after compression)
/// matches its identity tag.
pub fn if_none_match(header: &HeaderValue, tag: &HeaderValue) -> bool {
    let Ok(text) = header.to_str() else {
        return false;
    };
    let ours = tag.to_str().unwrap_or("").trim_matches('"');
    text.split(',').map(str::trim).any(|candidate| {
        if candidate == "*" {
            return true;
        }
        let opaque = candidate
            .strip_prefix("W/")
            .unwrap_or(candidate)
            .trim_matches('"');
        opaque == ours
            || opaque
                .strip_prefix(ours)
                .is_some_and(|rest| matches!(rest, "-gzip" | "-br" | "-zstd" | "-deflate"))
    })
}

/// Takes the [`REPRESENTATION`] note off a 304: the length and content
/// type of the 200 it stands for.
pub fn take_representation(response: &mut HeaderMap) -> Option<(u64, Option<HeaderValue>)> {
    let note = response.remove(REPRESENTATION)?;
    let (length, content_type) = note.to_str().ok()?.split_once(' ')?;
    let content_type = (!content_type.is_empty())
        .then(|| HeaderValue::from_str(content_type).ok())
        .flatten();
    Some((length.parse().ok()?, content_type))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_takes_lists_stars_weak_tags_and_coding_suffixes() {
        let tag = HeaderValue::from_static("\"abc\"");
        for header in [
            "\"abc\"",
            "\"x\", \"abc\"",
            "*",
            "W/\"abc\"",
            "\"abc-gzip\"",
        ] {
            assert!(
                if_none_match(&HeaderValue::from_static(header), &tag),
                "{header}"
            );
        }
        for header in ["\"abd\"", "\"abc-evil\"", ""] {
            assert!(
                !if_none_match(&HeaderValue::from_static(header), &tag),
                "{header}"
            );
        }
    }

    #[test]
    fn etag_is_strong_and_depends_only_on_the_body() {
        assert_eq!(etag(b"{}"), etag(b"{}"));
        assert_ne!(etag(b"{}"), etag(b"{ }"));
        assert!(!etag(b"x").to_str().unwrap_or("W/").starts_with("W/"));
    }
}
