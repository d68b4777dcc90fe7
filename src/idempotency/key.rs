//! The `Idempotency-Key` header's value: an Item Structured Header whose
//! bare item is a String (RFC 8941 §3.3.3), e.g.
//! `Idempotency-Key: "8e03978e-40d5-43e8-bc93-6894a57f9324"`.

use http::HeaderMap;
use http::header::GetAll;

use super::IdempotencyError;

/// Longest key accepted, in bytes after unescaping.
pub const MAX_KEY_BYTES: usize = 255;

/// The key a request carries: `Ok(None)` without the header; an error for
/// a value that is not one non-empty sf-string of at most
/// [`MAX_KEY_BYTES`], or for the header given twice.
pub fn parse_key(headers: &HeaderMap) -> Result<Option<String>, IdempotencyError> {
    let values: GetAll<'_, _> = headers.get_all(crate::headers::IDEMPOTENCY_KEY);
    let mut values = values.iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(malformed("give the header once"));
    }
    parse_sf_string(value.as_bytes()).map(Some)
}

fn malformed(why: &str) -> IdempotencyError {
    IdempotencyError::MalformedKey(why.into())
}

/// RFC 8941 §4.2.5, with the surrounding spaces §4.2 allows; parameters
/// are not accepted (the draft defines none).
fn parse_sf_string(raw: &[u8]) -> Result<String, IdempotencyError> {
    let trimmed = raw.trim_ascii();
    let Some(inner) = trimmed.strip_prefix(b"\"") else {
        return Err(malformed(
            "the value must be a quoted string, e.g. \"8e03978e-40d5-43e8-bc93-6894a57f9324\"",
        ));
    };
    let mut key = String::new();
    let mut bytes = inner.iter();
    loop {
        match bytes.next() {
            None => return Err(malformed("the quoted string is not closed")),
            Some(b'\\') => match bytes.next() {
                Some(&c @ (b'"' | b'\\')) => key.push(c as char),
                _ => return Err(malformed("only \\\" and \\\\ may be escaped")),
            },
            Some(b'"') => break,
            Some(&c) if (0x20..=0x7e).contains(&c) => key.push(c as char),
            Some(_) => return Err(malformed("only visible ASCII and spaces are allowed")),
        }
    }
    if bytes.next().is_some() {
        return Err(malformed("nothing may follow the quoted string"));
    }
    if key.is_empty() {
        return Err(malformed("the key is empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(IdempotencyError::MalformedKey(format!(
            "the key is longer than {MAX_KEY_BYTES} bytes"
        )));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<String, String> {
        parse_sf_string(raw.as_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn a_quoted_string_is_a_key() {
        assert_eq!(parse("\"abc-123\"").as_deref(), Ok("abc-123"));
        assert_eq!(parse("  \"a b\"  ").as_deref(), Ok("a b"));
        assert_eq!(
            parse(r#""say \"hi\" \\ ok""#).as_deref(),
            Ok(r#"say "hi" \ ok"#)
        );
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "abc",
            "\"abc",
            "\"\"",
            "\"a\";p=1",
            "\"a\" \"b\"",
            r#""bad \n escape""#,
            "\"tab\there\"",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
        let long = format!("\"{}\"", "k".repeat(MAX_KEY_BYTES + 1));
        assert!(parse(&long).is_err());
        let longest = format!("\"{}\"", "k".repeat(MAX_KEY_BYTES));
        assert!(parse(&longest).is_ok());
    }

    #[test]
    fn the_header_twice_is_refused() {
        let mut headers = HeaderMap::new();
        headers.append("idempotency-key", "\"a\"".parse().expect("value"));
        headers.append("idempotency-key", "\"b\"".parse().expect("value"));
        assert!(parse_key(&headers).is_err());
        assert!(matches!(parse_key(&HeaderMap::new()), Ok(None)));
    }
}
