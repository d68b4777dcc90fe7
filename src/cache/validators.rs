//! Validators: the strong `ETag` of a body, `If-None-Match` (RFC 9110
//! §13.1.2), and the note a 304 carries about the 200 it stands for.

use http::{HeaderMap, HeaderValue};

use super::REPRESENTATION;

/// A strong validator: a 128-bit XXH3 hash of the exact body bytes, as 32
/// hex digits in quotes.
///
/// A strong validator must change whenever the bytes change (RFC 9110
/// §8.8.1); it is not a signature. By accident, two bodies share a 128-bit
/// hash with probability 2^-128, which is never. On purpose, a collision
/// needs an author who controls both bodies of one resource, and all it
/// buys is that a cache keeps that author's older body: no one else's
/// content, no bytes a client did not already get from the same origin.
/// The hash needs no secret seed either: every instance behind a balancer
/// must give the same body the same tag. So XXH3 (an order of magnitude
/// faster than SHA-256 on a typical JSON answer) is enough;
/// docs/decisions/0009-performance.md has the figures.
pub fn etag(body: &[u8]) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let hash = xxhash_rust::xxh3::xxh3_128(body).to_be_bytes();
    let mut text = [b'"'; 34];
    for (i, byte) in hash.iter().enumerate() {
        text[1 + 2 * i] = HEX[usize::from(byte >> 4)];
        text[2 + 2 * i] = HEX[usize::from(byte & 0xf)];
    }
    HeaderValue::from_bytes(&text).unwrap_or(HeaderValue::from_static("\"0\""))
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
    fn etag_is_32_hex_digits_in_quotes() {
        let tag = etag(b"{\"name\":\"shelves/1/books/2\"}");
        let text = tag.to_str().expect("ASCII");
        assert_eq!(text.len(), 34, "{text}");
        let hex = text.strip_prefix('"').and_then(|t| t.strip_suffix('"'));
        assert!(
            hex.is_some_and(|h| h
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())),
            "{text}"
        );
    }

    #[test]
    fn etag_is_strong_and_depends_only_on_the_body() {
        assert_eq!(etag(b"{}"), etag(b"{}"));
        assert_ne!(etag(b"{}"), etag(b"{ }"));
        assert!(!etag(b"x").to_str().unwrap_or("W/").starts_with("W/"));
    }
}
