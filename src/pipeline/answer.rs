//! The HTTP answer of a served request: the binding's success status (a
//! 204 without body or Content-Type), the cache policy's headers, a 304 on
//! a matching `If-None-Match`, no body for HEAD, `Server-Timing`; and the
//! 204 with `Allow` for a bare OPTIONS.

use super::*;

/// Headers a served answer typically gains after its upstream metadata.
const ADDED_HEADERS: usize = 14;

/// Builds the HTTP answer: cache headers, 304 on a matching If-None-Match,
/// no body for HEAD.
pub(super) fn respond(
    plan: &MethodPlan,
    parts: &Parts,
    captures: &[(usize, String)],
    personal: bool,
    answer: Answer,
    cache_status: Option<CacheStatus>,
    age: Option<u64>,
) -> Result<Response, GatewayError> {
    let mut response = Response::new(Body::empty());
    let headers = response.headers_mut();
    // Room for what this answer gains below and on its way out (cache
    // policy, request id, timing, CORS), so the map is not rehashed as the
    // headers arrive, twice per answer when it started from the stored map.
    headers.reserve(answer.headers.len() + ADDED_HEADERS);
    headers.extend(answer.headers);
    headers.insert(header::CONTENT_TYPE, answer.content_type);
    // An answer from the cache made no upstream call for this request; the
    // stored duration was another request's (as for an idempotent replay).
    let called_upstream = matches!(cache_status, None | Some(CacheStatus::Miss));
    if called_upstream && !answer.upstream_time.is_zero() {
        headers.insert(
            SERVER_TIMING,
            server_timing("upstream", answer.upstream_time),
        );
    }
    if let Some(status) = cache_status {
        headers.insert(X_CACHE, HeaderValue::from_static(status.as_str()));
    }
    if let Some(age) = age {
        headers.insert(header::AGE, HeaderValue::from(age));
    }
    let not_modified = plan.cache.apply(
        &parts.method,
        &parts.headers,
        personal,
        captures,
        &answer.body,
        answer.etag,
        headers,
    );
    if not_modified {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response.headers_mut().remove(header::CONTENT_TYPE);
        return Ok(response);
    }
    let status = plan.transcode.success.status;
    *response.status_mut() = status;
    if status == StatusCode::NO_CONTENT {
        // RFC 9110 §15.3.5: no content, so nothing describes any.
        response.headers_mut().remove(header::CONTENT_TYPE);
        return Ok(response);
    }
    // hyper writes a body's exact length as Content-Length, formatted
    // straight into its write buffer; a HEAD answer has no body to tell it.
    match parts.method == Method::HEAD {
        true => {
            let length = HeaderValue::from(answer.body.len());
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, length);
        }
        false => *response.body_mut() = Body::from(answer.body),
    }
    Ok(response)
}

/// A 204 whose `Allow` lists `methods` and OPTIONS.
pub(super) fn allow(methods: &[Method]) -> Response {
    let list = methods
        .iter()
        .chain(std::iter::once(&Method::OPTIONS))
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(value) = HeaderValue::from_str(&list) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
}

/// One `Server-Timing` metric (milliseconds, as browsers' devtools expect).
/// Written on the stack with plain integer formatting: every answer
/// carries one or two of these, and `write!` with a float precision took a
/// few thousand instructions, a tenth of a cache hit. Marked never-indexed,
/// as the value is new on every answer (see [`crate::headers::per_message`]).
pub(super) fn server_timing(name: &str, elapsed: std::time::Duration) -> HeaderValue {
    let tenths = (elapsed.as_nanos() + 50_000) / 100_000;
    let mut whole = itoa::Buffer::new();
    let parts: [&[u8]; 5] = [
        name.as_bytes(),
        b";dur=",
        whole.format(tenths / 10).as_bytes(),
        b".",
        &[b'0' + (tenths % 10) as u8],
    ];
    let mut text = [0u8; 96];
    let mut len = 0;
    for part in parts {
        let Some(room) = text.get_mut(len..len + part.len()) else {
            return HeaderValue::from_static("gateway");
        };
        room.copy_from_slice(part);
        len += part.len();
    }
    let value =
        HeaderValue::from_bytes(&text[..len]).unwrap_or(HeaderValue::from_static("gateway"));
    crate::headers::per_message(value)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn server_timing_is_in_milliseconds_to_a_tenth() {
        let cases = [
            (Duration::ZERO, "gw;dur=0.0"),
            (Duration::from_micros(49), "gw;dur=0.0"),
            (Duration::from_micros(50), "gw;dur=0.1"),
            (Duration::from_micros(1_234), "gw;dur=1.2"),
            (Duration::from_micros(1_250), "gw;dur=1.3"),
            (Duration::from_millis(12_345), "gw;dur=12345.0"),
            (Duration::from_micros(999_950), "gw;dur=1000.0"),
        ];
        for (elapsed, expected) in cases {
            let value = server_timing("gw", elapsed);
            assert_eq!(value, expected, "{elapsed:?}");
            assert!(value.is_sensitive(), "new on every answer: never indexed");
        }
    }
}
