//! Bad input is refused at the edge: the right 4xx, a google.rpc.Status JSON body with a protogate ErrorInfo, and no upstream call.

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// === helpers ===

/// A scripted echo upstream and a gateway in front of it, with `extra` routes.toml.
async fn echo_gateway(extra: &str) -> (Scripted, TestGateway) {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, extra)).await;
    (scripted, gateway)
}

/// One HTTP/1.1 answer as it came off the socket.
#[derive(Debug)]
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn from_reqwest(request: reqwest::RequestBuilder) -> Raw {
    let response = request.send().await.expect("send");
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response.bytes().await.expect("body").to_vec();
    Raw {
        status,
        headers,
        body,
    }
}

/// Sends `head` (request line and headers, without the blank line) plus
/// `body` on a fresh connection, exactly as given, and reads the answer.
async fn raw_exchange(addr: SocketAddr, head: &[u8], body: &[u8]) -> Raw {
    let mut request = head.to_vec();
    request.extend_from_slice(b"\r\nhost: gateway\r\nconnection: close\r\n");
    if !body.is_empty() && !contains(head, b"transfer-encoding") {
        request.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(body);
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(&request).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the gateway answers within 10s")
        .expect("read");
    parse_answer(&answer, head.starts_with(b"HEAD "))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

fn parse_answer(answer: &[u8], head_request: bool) -> Raw {
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "no complete answer head in {:?}",
                String::from_utf8_lossy(answer)
            )
        });
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = answer[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    if head_request {
        body.clear();
    } else if chunked {
        body = dechunk(&body);
    }
    Raw {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .expect("chunk size");
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[end + 2..end + 2 + size]);
        data = &data[end + 2 + size + 2..];
    }
    out
}

/// `GET target` on a raw socket: the target's bytes go out exactly as given.
async fn raw_get(addr: SocketAddr, target: &[u8]) -> Raw {
    let mut head = b"GET ".to_vec();
    head.extend_from_slice(target);
    head.extend_from_slice(b" HTTP/1.1");
    raw_exchange(addr, &head, b"").await
}

async fn post_json(gateway: &TestGateway, path: &str, body: &str) -> Raw {
    from_reqwest(
        client()
            .post(format!("{}{path}", gateway.base))
            .header("content-type", "application/json")
            .body(body.to_string()),
    )
    .await
}

/// Asserts `status`, a google.rpc.Status JSON body with google.rpc.Code
/// `code` and a protogate ErrorInfo; returns `(reason, message)`.
#[track_caller]
fn status_error(raw: &Raw, status: u16, code: i64) -> (String, String) {
    assert_eq!(raw.status, status, "body: {}", raw.text());
    assert_eq!(raw.header("content-type"), Some("application/json"));
    let body: Value = serde_json::from_slice(&raw.body)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {:?}", raw.text()));
    assert_eq!(body["code"], code, "{body}");
    let message = body["message"].as_str().expect("message is a string");
    assert!(!message.is_empty());
    let details = body["details"].as_array().expect("details is an array");
    let info = details
        .iter()
        .find(|d| d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo")
        .unwrap_or_else(|| panic!("no ErrorInfo in {body}"));
    assert_eq!(info["domain"], "protogate");
    let reason = info["reason"].as_str().expect("reason").to_string();
    (reason, message.to_string())
}

/// A 400 INVALID_ARGUMENT; returns `(reason, message)`.
#[track_caller]
fn bad_request(raw: &Raw) -> (String, String) {
    status_error(raw, 400, 3)
}

/// A routes.toml `[limits]` section with small limits.
const SMALL_LIMITS: &str = r#"
[limits]
max_body_bytes = 256
max_json_depth = 8
max_path_bytes = 64
max_query_bytes = 64
"#;

// === JSON bodies ===

#[tokio::test]
async fn malformed_json_is_400_with_line_and_column() {
    let (scripted, gateway) = echo_gateway("").await;
    let body = "{\n  \"stringValue\": \"x\",\n  \"int32Value\": }";
    let (reason, message) = bad_request(&post_json(&gateway, "/v1/echo", body).await);
    assert_eq!(reason, "MALFORMED_JSON");
    assert!(message.contains("line 3 column 17"), "{message}");
    for body in [
        "{",
        "{\"stringValue\": \"x\"} trailing",
        "[1, 2]",
        "\"just a string\"",
        "{\"stringValue\": \"unterminated}",
        "{'single': 'quotes'}",
        "{\"stringValue\" \"x\"}",
    ] {
        let (reason, message) = bad_request(&post_json(&gateway, "/v1/echo", body).await);
        assert_eq!(reason, "MALFORMED_JSON", "{body}");
        assert!(message.contains("line 1 column "), "{body}: {message}");
    }
    assert_eq!(scripted.call_count(), 0);
}

#[tokio::test]
async fn malformed_json_in_a_body_field_reports_the_clients_column() {
    let (scripted, gateway) = echo_gateway("").await;
    let body = r#"{"label": nope}"#;
    let column = serde_json::from_str::<Value>(body)
        .expect_err("not JSON")
        .column();
    let raw = from_reqwest(
        client()
            .put(format!("{}/v1/echo/s/nested", gateway.base))
            .header("content-type", "application/json")
            .body(body),
    )
    .await;
    let (reason, message) = bad_request(&raw);
    assert_eq!(reason, "MALFORMED_JSON");
    // The column counts in the client's body, not in the gateway's wrapper.
    assert!(
        message.contains(&format!("line 1 column {column}:")),
        "{message}"
    );
    assert_eq!(scripted.call_count(), 0);
}

#[tokio::test]
async fn value_of_the_wrong_type_is_400() {
    let (scripted, gateway) = echo_gateway("").await;
    for body in [
        r#"{"stringValue": 5}"#,
        r#"{"nested": 3}"#,
        r#"{"nested": {"label": ["x"]}}"#,
        r#"{"repeatedString": "x"}"#,
        r#"{"boolValue": "yes"}"#,
        r#"{"int32Value": 1.5}"#,
        r#"{"int32Value": "abc"}"#,
        r#"{"stringMap": []}"#,
        r#"{"intMap": {"x": {}}}"#,
        r#"{"timestamp": "yesterday"}"#,
        r#"{"duration": "5 minutes"}"#,
        r#"{"structValue": [1]}"#,
        r#"{"any": {"@type": "type.googleapis.com/no.such.Type"}}"#,
    ] {
        let (reason, _) = bad_request(&post_json(&gateway, "/v1/echo", body).await);
        assert!(
            reason == "MALFORMED_JSON" || reason == "INVALID_FIELD",
            "{body}: {reason}"
        );
    }
    // A path variable or a query value that does not parse as its field's type.
    for target in [
        "/v1/echo/s/five/l",
        "/v1/echo?int32_value=one",
        "/v1/echo?bool_value=yes",
        "/v1/echo?double_value=inf",
        "/v1/echo?timestamp=yesterday",
        "/v1/echo?nested=x",
        "/v1/echo?struct_value=x",
    ] {
        let raw = raw_get(gateway.addr, target.as_bytes()).await;
        let (reason, _) = bad_request(&raw);
        assert_eq!(reason, "INVALID_FIELD", "{target}");
    }
    assert_eq!(scripted.call_count(), 0);
}

#[tokio::test]
async fn out_of_range_numbers_are_400() {
    let (scripted, gateway) = echo_gateway("").await;
    for body in [
        r#"{"int32Value": 2147483648}"#,
        r#"{"int32Value": -2147483649}"#,
        r#"{"int32Value": "99999999999"}"#,
        r#"{"uint32Value": -1}"#,
        r#"{"int64Value": "9223372036854775808"}"#,
        r#"{"uint64Value": "18446744073709551616"}"#,
        r#"{"uint64Value": -1}"#,
        r#"{"floatValue": 1e39}"#,
        r#"{"doubleValue": 1e400}"#,
        r#"{"intMap": {"2147483648": {}}}"#,
    ] {
        bad_request(&post_json(&gateway, "/v1/echo", body).await);
    }
    for target in [
        "/v1/echo?int32_value=2147483648",
        "/v1/echo?uint32_value=-1",
        "/v1/echo?int64_value=9223372036854775808",
        "/v1/echo?uint64_value=18446744073709551616",
        "/v1/echo?float_value=1e39",
        "/v1/echo?double_value=1e400",
        "/v1/echo?float_value=-1e999",
        "/v1/echo?repeated_double=1&repeated_double=1e309",
        "/v1/echo/s/9223372036854775808/l",
    ] {
        let (reason, _) = bad_request(&raw_get(gateway.addr, target.as_bytes()).await);
        assert_eq!(reason, "INVALID_FIELD", "{target}");
    }
    assert_eq!(scripted.call_count(), 0);
}

#[tokio::test]
async fn unknown_enum_name_is_400() {
    let (scripted, gateway) = echo_gateway("").await;
    let (_, message) =
        bad_request(&post_json(&gateway, "/v1/echo", r#"{"enumValue": "COLOR_PURPLE"}"#).await);
    assert!(message.contains("COLOR_PURPLE"), "{message}");
    bad_request(
        &post_json(
            &gateway,
            "/v1/echo",
            r#"{"repeatedEnum": ["COLOR_RED", "red"]}"#,
        )
        .await,
    );
    for target in [
        "/v1/echo?enum_value=COLOR_PURPLE",
        "/v1/echo?repeated_enum=color_red",
        "/v1/echo/COLOR_PURPLE:byEnum",
    ] {
        let (reason, _) = bad_request(&raw_get(gateway.addr, target.as_bytes()).await);
        assert_eq!(reason, "INVALID_FIELD", "{target}");
    }
    assert_eq!(scripted.call_count(), 0);
}

#[tokio::test]
async fn invalid_base64_is_400() {
    let (scripted, gateway) = echo_gateway("").await;
    for body in [
        r#"{"bytesValue": "!!!!"}"#,
        r#"{"bytesValue": "a"}"#,
        r#"{"repeatedBytes": ["AAAA", "A A="]}"#,
        r#"{"bytesWrapper": "%%"}"#,
    ] {
        bad_request(&post_json(&gateway, "/v1/echo", body).await);
    }
    for target in ["/v1/echo?bytes_value=%21%21", "/v1/echo?bytes_value=a"] {
        let (reason, _) = bad_request(&raw_get(gateway.addr, target.as_bytes()).await);
        assert_eq!(reason, "INVALID_FIELD", "{target}");
    }
    assert_eq!(scripted.call_count(), 0);
}

#[tokio::test]
async fn json_nested_deeper_than_max_json_depth_is_400() {
    let (scripted, gateway) = echo_gateway(SMALL_LIMITS).await;
    let nest = |depth: usize| {
        let mut body = String::new();
        for _ in 1..depth {
            body.push_str(r#"{"child":"#);
        }
        body.push_str("{}");
        body.push_str(&"}".repeat(depth - 1));
        format!(r#"{{"nested":{body}}}"#)
    };
    // At the limit the message reaches the upstream...
    let ok = post_json(&gateway, "/v1/echo", &nest(7)).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(scripted.call_count(), 1);
    // ...one level deeper it does not.
    let (reason, _) = bad_request(&post_json(&gateway, "/v1/echo", &nest(8)).await);
    assert_eq!(reason, "JSON_TOO_DEEP");
    let arrays = format!(r#"{{"listValue":{}{}}}"#, "[".repeat(9), "]".repeat(9));
    let (reason, _) = bad_request(&post_json(&gateway, "/v1/echo", &arrays).await);
    assert_eq!(reason, "JSON_TOO_DEEP");
    // Unbalanced and deep is still refused before parsing.
    let (reason, _) = bad_request(&post_json(&gateway, "/v1/echo", &"[".repeat(200)).await);
    assert_eq!(reason, "JSON_TOO_DEEP");
    assert_eq!(scripted.call_count(), 1);
}

#[tokio::test]
async fn body_over_max_body_bytes_is_413() {
    let (scripted, gateway) = echo_gateway(SMALL_LIMITS).await;
    let big = format!(r#"{{"stringValue":"{}"}}"#, "a".repeat(300));
    let (reason, _) = status_error(&post_json(&gateway, "/v1/echo", &big).await, 413, 3);
    assert_eq!(reason, "BODY_TOO_LARGE");
    // Without a Content-Length (chunked), the limit holds while reading.
    let chunked = format!("{:x}\r\n{big}\r\n0\r\n\r\n", big.len());
    let raw = raw_exchange(
        gateway.addr,
        b"POST /v1/echo HTTP/1.1\r\ncontent-type: application/json\r\ntransfer-encoding: chunked",
        chunked.as_bytes(),
    )
    .await;
    let (reason, _) = status_error(&raw, 413, 3);
    assert_eq!(reason, "BODY_TOO_LARGE");
    // Raw bytes are bounded too.
    let raw = from_reqwest(
        client()
            .post(format!("{}/v1/raw", gateway.base))
            .header("content-type", "application/octet-stream")
            .body(vec![7u8; 257]),
    )
    .await;
    status_error(&raw, 413, 3);
    assert_eq!(scripted.call_count(), 0);
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(data).expect("gzip");
    encoder.finish().expect("gzip")
}

#[tokio::test]
async fn gzip_body_over_the_limit_once_decompressed_is_413() {
    let (scripted, gateway) = echo_gateway(SMALL_LIMITS).await;
    let send = |body: Vec<u8>| {
        client()
            .post(format!("{}/v1/echo", gateway.base))
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(body)
    };
    // Within the limit once decompressed: decoded and sent on.
    let small = gzip(br#"{"stringValue":"zipped"}"#);
    let raw = from_reqwest(send(small)).await;
    assert_eq!(raw.status, 200, "{}", raw.text());
    assert_eq!(
        scripted.calls()[0].message,
        json!({"string_value": "zipped"})
    );

    let bomb = gzip(format!(r#"{{"stringValue":"{}"}}"#, "a".repeat(100_000)).as_bytes());
    assert!(bomb.len() < 256, "compressed to {} bytes", bomb.len());
    let (reason, _) = status_error(&from_reqwest(send(bomb)).await, 413, 3);
    assert_eq!(reason, "BODY_TOO_LARGE");
    assert_eq!(scripted.call_count(), 1);
}

#[tokio::test]
async fn corrupt_gzip_body_is_400() {
    let (scripted, gateway) = echo_gateway("").await;
    let mut corrupt = gzip(br#"{"stringValue":"zipped"}"#);
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0xff;
    corrupt.truncate(corrupt.len() - 4);
    let raw = from_reqwest(
        client()
            .post(format!("{}/v1/echo", gateway.base))
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(corrupt),
    )
    .await;
    bad_request(&raw);
    assert_eq!(scripted.call_count(), 0);
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    let (scripted, gateway) = echo_gateway("").await;
    for content_type in [
        Some("text/plain"),
        Some("application/xml"),
        Some("application/x-www-form-urlencoded"),
        Some("application/jsonx"),
        // multipart/form-data is read as a form (tests/multipart.rs).
        Some("multipart/mixed; boundary=x"),
        None,
    ] {
        let mut request = client()
            .post(format!("{}/v1/echo", gateway.base))
            .body(r#"{"stringValue":"x"}"#);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let (reason, _) = status_error(&from_reqwest(request).await, 415, 3);
        assert_eq!(reason, "UNSUPPORTED_MEDIA_TYPE", "{content_type:?}");
    }
    assert_eq!(scripted.call_count(), 0);
}

#[tokio::test]
async fn unsupported_content_encoding_is_415_with_a_json_body() {
    let (scripted, gateway) = echo_gateway("").await;
    let request = client()
        .post(format!("{}/v1/echo", gateway.base))
        .header("content-type", "application/json")
        .header("content-encoding", "br2")
        .body(r#"{"stringValue":"x"}"#);
    let (reason, _) = status_error(&from_reqwest(request).await, 415, 3);
    assert_eq!(reason, "UNSUPPORTED_CONTENT_ENCODING");
    assert_eq!(scripted.call_count(), 0);
}

#[tokio::test]
async fn body_on_a_route_that_takes_none_is_400() {
    let (scripted, gateway) = echo_gateway("").await;
    let raw = from_reqwest(
        client()
            .get(format!("{}/v1/echo?string_value=x", gateway.base))
            .header("content-type", "application/json")
            .body(r#"{"stringValue":"x"}"#),
    )
    .await;
    let (reason, _) = bad_request(&raw);
    assert_eq!(reason, "INVALID_FIELD");
    let raw = from_reqwest(
        client()
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/v1/nothing", gateway.base),
            )
            .body("x"),
    )
    .await;
    bad_request(&raw);
    assert_eq!(scripted.call_count(), 0);
}

// === paths ===

#[tokio::test]
async fn invalid_utf8_in_path_is_400() {
    let (scripted, gateway) = echo_gateway("").await;
    for target in [
        "/v1/echo/%FF%FE/1/x",
        "/v1/echo/s/1/%C3%28",
        "/v1/echo/%ED%A0%80/1/x",
        "/v1/resources/rooms/%C0%AF/items/x",
        "/v1/echo/%80:byEnum",
    ] {
        let (reason, _) = bad_request(&raw_get(gateway.addr, target.as_bytes()).await);
        assert_eq!(reason, "INVALID_PATH", "{target}");
    }
    // The same in the query string.
    let (reason, _) = bad_request(&raw_get(gateway.addr, b"/v1/echo?string_value=%FF").await);
    assert_eq!(reason, "INVALID_PATH");
    // Raw (unencoded) non-ASCII is refused too, even when it is valid UTF-8.
    let (reason, _) = bad_request(&raw_get(gateway.addr, "/v1/echo/é/1/x".as_bytes()).await);
    assert_eq!(reason, "INVALID_PATH");
    assert_eq!(scripted.call_count(), 0);
}

#[tokio::test]
async fn over_long_path_and_query_are_414() {
    let (scripted, gateway) = echo_gateway(SMALL_LIMITS).await;
    let path = format!("/v1/echo/{}/1/x", "s".repeat(60));
    let (reason, message) = status_error(&raw_get(gateway.addr, path.as_bytes()).await, 414, 3);
    assert_eq!(reason, "URI_TOO_LONG");
    assert!(message.contains("path"), "{message}");
    let query = format!("/v1/echo?string_value={}", "q".repeat(60));
    let (reason, message) = status_error(&raw_get(gateway.addr, query.as_bytes()).await, 414, 3);
    assert_eq!(reason, "URI_TOO_LONG");
    assert!(message.contains("query"), "{message}");
    // Just under both limits is fine.
    let fits = format!("/v1/echo?string_value={}", "q".repeat(40));
    assert_eq!(raw_get(gateway.addr, fits.as_bytes()).await.status, 200);
    assert_eq!(scripted.call_count(), 1);
}

#[tokio::test]
async fn dot_segments_that_climb_above_root_are_400() {
    let (scripted, gateway) = echo_gateway("").await;
    for target in [
        "/..",
        "/../v1/echo",
        "/v1/../../v1/echo",
        "/%2e%2e/v1/echo",
        "/v1/%2E%2E/%2e./v1/echo",
        "/v1/echo/%2E%2E/%2E%2E/%2E%2E/x",
        "/./../v1/echo",
    ] {
        let (reason, _) = bad_request(&raw_get(gateway.addr, target.as_bytes()).await);
        assert_eq!(reason, "INVALID_PATH", "{target}");
    }
    assert_eq!(scripted.call_count(), 0);
    // Dot segments that stay inside the root are resolved before routing.
    let raw = raw_get(gateway.addr, b"/v1/x/../echo/./%2e?string_value=in").await;
    assert_eq!(raw.status, 404, "a trailing '.' leaves a trailing slash");
    let raw = raw_get(gateway.addr, b"/v1/x/%2E%2E/echo?string_value=in").await;
    assert_eq!(raw.status, 200, "{}", raw.text());
    assert_eq!(scripted.calls()[0].message, json!({"string_value": "in"}));
}

#[tokio::test]
async fn invalid_percent_escapes_are_400() {
    let (scripted, gateway) = echo_gateway("").await;
    for target in [
        "/v1/echo/%zz/1/x",
        "/v1/echo/a%/1/x",
        "/v1/echo/s/1/%4",
        "/v1/%",
        "/v1/echo/%00/1/x",
        "/v1/echo?string_value=%zz",
        "/v1/echo?string_value=%",
        "/v1/echo?string_value=%4",
        "/v1/echo?%G0=1",
    ] {
        let (reason, _) = bad_request(&raw_get(gateway.addr, target.as_bytes()).await);
        assert_eq!(reason, "INVALID_PATH", "{target}");
    }
    assert_eq!(scripted.call_count(), 0);
}

#[tokio::test]
async fn raw_backslash_in_path_is_400() {
    let (scripted, gateway) = echo_gateway("").await;
    for target in ["/v1\\echo", "/v1/echo/a\\b/1/x"] {
        let (reason, _) = bad_request(&raw_get(gateway.addr, target.as_bytes()).await);
        assert_eq!(reason, "INVALID_PATH", "{target}");
    }
    assert_eq!(scripted.call_count(), 0);
}

// === query strings ===

#[tokio::test]
async fn singular_field_given_twice_in_the_query_is_400() {
    let (scripted, gateway) = echo_gateway("").await;
    for target in [
        "/v1/echo?int32_value=1&int32_value=2",
        "/v1/echo?int32_value=1&int32_value=1",
        "/v1/echo?nested.label=a&nested.label=b",
        "/v1/echo?string_value=a&stringValue=b",
        "/v1/echo?int64_wrapper=1&int64_wrapper=2",
        "/v1/echo?timestamp=2024-01-01T00:00:00Z&timestamp=2024-01-01T00:00:00Z",
    ] {
        let (reason, message) = bad_request(&raw_get(gateway.addr, target.as_bytes()).await);
        assert_eq!(reason, "INVALID_FIELD", "{target}");
        assert!(message.contains("more than once"), "{target}: {message}");
    }
    assert_eq!(scripted.call_count(), 0);
}

#[tokio::test]
async fn unknown_query_parameter_is_400() {
    let (scripted, gateway) = echo_gateway("").await;
    for target in [
        "/v1/echo?nope=1",
        "/v1/echo?string_value=a&nope",
        "/v1/echo?nested.nope=1",
        "/v1/echo?nested..label=1",
        "/v1/echo?.nested=1",
        "/v1/echo?string_value.x=1",
        "/v1/echo/s/1/l?nope=1",
    ] {
        let (reason, _) = bad_request(&raw_get(gateway.addr, target.as_bytes()).await);
        assert_eq!(reason, "UNKNOWN_FIELD", "{target}");
    }
    // Maps and (non well-known) messages exist but cannot be set from the query.
    for target in [
        "/v1/echo?string_map=a",
        "/v1/echo?int_map.label=a",
        "/v1/echo?repeated_nested.label=a",
        "/v1/echo?empty=x",
        "/v1/echo?any=x",
    ] {
        bad_request(&raw_get(gateway.addr, target.as_bytes()).await);
    }
    assert_eq!(scripted.call_count(), 0);
}

#[tokio::test]
async fn setting_a_path_bound_field_again_via_the_query_is_400() {
    let (scripted, gateway) = echo_gateway("").await;
    for target in [
        "/v1/echo/s/1/l?string_value=t",
        "/v1/echo/s/1/l?stringValue=t",
        "/v1/echo/s/1/l?int64_value=2",
        "/v1/echo/s/1/l?nested.label=x",
        "/v1/echo/COLOR_RED:byEnum?enum_value=COLOR_BLUE",
        "/v1/resources/rooms/1/items/x?resource=y",
    ] {
        let (reason, message) = bad_request(&raw_get(gateway.addr, target.as_bytes()).await);
        assert_eq!(reason, "INVALID_FIELD", "{target}");
        assert!(message.contains("already bound"), "{target}: {message}");
    }
    // A field bound by the body cannot come from the query either.
    let raw = from_reqwest(
        client()
            .put(format!("{}/v1/echo/s/nested?nested.count=1", gateway.base))
            .header("content-type", "application/json")
            .body(r#"{"label":"x"}"#),
    )
    .await;
    let (_, message) = bad_request(&raw);
    assert!(message.contains("already bound"), "{message}");
    assert_eq!(scripted.call_count(), 0);
}

#[tokio::test]
async fn two_members_of_one_oneof_via_the_query_are_400() {
    let (scripted, gateway) = echo_gateway("").await;
    for target in [
        "/v1/echo?choice_string=a&choice_int=1",
        "/v1/echo?choice_int=0&choice_string=",
        "/v1/echo?choice_int=1&choice_nested.label=x",
        "/v1/echo?choice_nested.label=x&choice_int=1",
        "/v1/echo?choice_nested.count=1&choice_string=s",
    ] {
        let (reason, message) = bad_request(&raw_get(gateway.addr, target.as_bytes()).await);
        assert_eq!(reason, "INVALID_FIELD", "{target}");
        assert!(message.contains("oneof"), "{target}: {message}");
    }
    // Two fields inside the same oneof member are fine.
    let raw = raw_get(
        gateway.addr,
        b"/v1/echo?choice_nested.label=x&choice_nested.count=2",
    )
    .await;
    assert_eq!(raw.status, 200, "{}", raw.text());
    assert_eq!(
        scripted.calls()[0].message,
        json!({"choice_nested": {"label": "x", "count": 2}})
    );
}

#[tokio::test]
async fn two_members_of_one_oneof_in_the_body_are_400() {
    let (scripted, gateway) = echo_gateway("").await;
    let body = r#"{"choiceString": "a", "choiceInt": 1}"#;
    let (_, message) = bad_request(&post_json(&gateway, "/v1/echo", body).await);
    assert!(message.contains("oneof"), "{message}");
    assert_eq!(scripted.call_count(), 0);
}

// === headers ===

#[tokio::test]
async fn malformed_grpc_timeout_header_is_400() {
    let (scripted, gateway) = echo_gateway("").await;
    for value in ["abc", "1", "S", "10x", "-1S", "1.5S", "123456789S", "1s"] {
        let raw = from_reqwest(
            client()
                .get(format!("{}/v1/echo", gateway.base))
                .header("grpc-timeout", value),
        )
        .await;
        let (reason, message) = bad_request(&raw);
        assert_eq!(reason, "INVALID_HEADER", "{value:?}");
        assert!(message.contains("grpc-timeout"), "{message}");
    }
    assert_eq!(scripted.call_count(), 0);
    // A well-formed one goes through.
    let raw = from_reqwest(
        client()
            .get(format!("{}/v1/echo", gateway.base))
            .header("grpc-timeout", "2S"),
    )
    .await;
    assert_eq!(raw.status, 200, "{}", raw.text());
    assert_eq!(scripted.call_count(), 1);
}

// === hostile input: nothing panics, every answer is JSON ===

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[self.below(items.len())]
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// One path segment: plain, escaped, dot-like or hostile; always bytes hyper accepts.
fn segment(rng: &mut Rng) -> String {
    const PIECES: &[&str] = &[
        "a",
        "Z",
        "0",
        "42",
        "-1",
        "s",
        "rooms",
        "items",
        "nested",
        "echo",
        "v1",
        "COLOR_RED",
        ":",
        ":byEnum",
        "..",
        ".",
        "%2e",
        "%2E%2E",
        "%2F",
        "%2f",
        "%5C",
        "\\",
        "%00",
        "%FF",
        "%C3",
        "%C3%A9",
        "%E2%9C%93",
        "%zz",
        "%",
        "%4",
        "+",
        "~",
        "'",
        "(",
        ")",
        "*",
        "!",
        "$",
        "&",
        ";",
        "=",
        "@",
        ",",
        "|",
        "\"",
        "{",
        "}",
        "%25",
        "%20",
        "%3A",
        "é",
        "9223372036854775808",
    ];
    let mut out = String::new();
    for _ in 0..=rng.below(3) {
        out.push_str(rng.pick(PIECES));
    }
    out
}

fn hostile_path(rng: &mut Rng) -> String {
    let mut path = match rng.below(8) {
        0 => "/v1/echo".to_string(),
        1 => format!(
            "/v1/echo/{}/{}/{}",
            segment(rng),
            segment(rng),
            segment(rng)
        ),
        2 => format!("/v1/resources/rooms/{}/items", segment(rng)),
        3 => format!("/v1/echo/{}:byEnum", segment(rng)),
        4 => format!("/v1/echo/{}/nested", segment(rng)),
        5 => rng
            .pick(&["/v1/raw", "/v1/nothing", "/", "//", "/v1//echo"])
            .to_string(),
        _ => String::new(),
    };
    for _ in 0..rng.below(4) {
        path.push('/');
        path.push_str(&segment(rng));
    }
    if path.is_empty() {
        path.push('/');
    }
    path
}

fn hostile_query(rng: &mut Rng) -> Option<String> {
    const KEYS: &[&str] = &[
        "string_value",
        "stringValue",
        "int32_value",
        "int64_value",
        "uint64_value",
        "bool_value",
        "bytes_value",
        "enum_value",
        "double_value",
        "float_value",
        "nested.label",
        "nested.count",
        "nested.child.child.label",
        "repeated_string",
        "repeated_enum",
        "repeated_nested.label",
        "string_map",
        "choice_int",
        "choice_string",
        "choice_nested.label",
        "optional_int32",
        "timestamp",
        "duration",
        "field_mask",
        "int64_wrapper",
        "bool_wrapper",
        "struct_value",
        "any",
        "resource",
        "nope",
        "",
        "%zz",
        "%FF",
        "a.b.c",
        ".",
        "nested.",
        "string%5Fvalue",
    ];
    const VALUES: &[&str] = &[
        "",
        "x",
        "1",
        "-1",
        "0",
        "2147483648",
        "-9223372036854775809",
        "18446744073709551615",
        "NaN",
        "Infinity",
        "-Infinity",
        "inf",
        "1e400",
        "true",
        "false",
        "yes",
        "COLOR_RED",
        "COLOR_PURPLE",
        "3",
        "AAE%3D",
        "-_8",
        "!!",
        "%FF",
        "%zz",
        "%",
        "a+b",
        "%2B",
        "%00",
        "2024-01-01T00:00:00Z",
        "2024-13-45T99:99:99Z",
        "1.5s",
        "-1s",
        "1h",
        "a,b",
        "%E2%9C%93",
    ];
    if rng.chance(30) {
        return None;
    }
    let mut pairs = Vec::new();
    for _ in 0..=rng.below(4) {
        let key = rng.pick(KEYS);
        match rng.below(6) {
            0 => pairs.push(key.to_string()),
            _ => pairs.push(format!("{key}={}", rng.pick(VALUES))),
        }
    }
    Some(pairs.join(if rng.chance(90) { "&" } else { "&&" }))
}

fn hostile_body(rng: &mut Rng) -> Vec<u8> {
    const BODIES: &[&str] = &[
        r#"{"stringValue":"x","int64Value":"5","nested":{"label":"l"}}"#,
        r#"{"repeatedEnum":["COLOR_RED",2],"stringMap":{"a":"b"},"intMap":{"1":{}}}"#,
        r#"{"structValue":{"a":[1,{"b":null}]},"listValue":[1,"x"],"value":null}"#,
        r#"{"any":{"@type":"type.googleapis.com/testing.v1.Nested","label":"x"}}"#,
        r#"{"any":{"@type":"type.googleapis.com/nope.Nope","x":1}}"#,
        r#"{"any":{"label":"no type"}}"#,
        r#"{"timestamp":"1970-01-01T00:00:00Z","duration":"315576000000.999999999s"}"#,
        r#"{"duration":"315576000001s"}"#,
        r#"{"timestamp":"10000-01-01T00:00:00Z"}"#,
        r#"{"doubleValue":"NaN","floatValue":1e39,"int32Value":1e2}"#,
        r#"{"choiceString":"a","choiceInt":1}"#,
        r#"{"label":"x","count":2}"#,
        r#"{"stringValue":"\ud800"}"#,
        r#"{"stringValue":"\u0000"}"#,
        r#"{"fieldMask":"a..b,,"}"#,
        r#"{"bytesValue":"===="}"#,
        r#"{"int64Value":-0.0}"#,
        r#"{"uint64Value":1.0e19}"#,
        r#"{"boolEnumMap":{"maybe":"COLOR_RED"}}"#,
        "null",
        "[]",
        "{}",
        "",
        "\u{feff}{}",
    ];
    let mut body = rng.pick(BODIES).as_bytes().to_vec();
    match rng.below(6) {
        0 if !body.is_empty() => {
            let cut = rng.below(body.len());
            body.truncate(cut);
        }
        1 if !body.is_empty() => {
            let at = rng.below(body.len());
            body[at] = (rng.next() & 0xff) as u8;
        }
        2 => {
            let depth = 1 + rng.below(100);
            body = format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes();
        }
        3 => {
            body = (0..rng.below(64))
                .map(|_| (rng.next() & 0xff) as u8)
                .collect()
        }
        _ => {}
    }
    body
}

/// One generated request.
struct Generated {
    method: &'static str,
    target: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
}

const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/json; charset=utf-8",
    "text/plain",
    "application/octet-stream",
];

/// Anything at all: a random method, path, query, body and content type.
fn hostile(rng: &mut Rng) -> Generated {
    let method = rng.pick(&["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]);
    let mut target = hostile_path(rng);
    if let Some(query) = hostile_query(rng) {
        target.push('?');
        target.push_str(&query);
    }
    let body = if rng.chance(60) {
        hostile_body(rng)
    } else {
        Vec::new()
    };
    let content_type = rng.chance(80).then(|| rng.pick(CONTENT_TYPES));
    Generated {
        method,
        target,
        content_type,
        body,
    }
}

/// A request to a real binding with plausible values, then maybe one mutation.
fn near_valid(rng: &mut Rng) -> Generated {
    const WORDS: &[&str] = &[
        "a",
        "rooms",
        "x%20y",
        "%E2%9C%93",
        "a%2Fb",
        "-",
        "~tilde",
        "1",
    ];
    const PAIRS: &[&str] = &[
        "string_value=x",
        "int32_value=5",
        "nested.count=2",
        "repeated_string=a",
        "repeated_string=b",
        "enum_value=COLOR_RED",
        "bool_value=true",
        "bytes_value=AAE%3D",
        "double_value=NaN",
        "timestamp=2024-01-01T00:00:00Z",
        "duration=1.5s",
        "choice_int=3",
        "int64_wrapper=7",
        "uint64_value=18446744073709551615",
        "optional_string=",
    ];
    const BODIES: &[&str] = &[
        r#"{"stringValue":"x","int64Value":"5","nested":{"label":"l"}}"#,
        r#"{"repeatedEnum":["COLOR_RED",2],"stringMap":{"a":"b"},"intMap":{"1":{}}}"#,
        r#"{"structValue":{"a":[1,{"b":null}]},"listValue":[1,"x"]}"#,
        r#"{"any":{"@type":"type.googleapis.com/testing.v1.Nested","label":"x"}}"#,
        r#"{"doubleWrapper":"NaN","timestamp":"1970-01-01T00:00:00Z"}"#,
        "{}",
    ];
    let word = |rng: &mut Rng| rng.pick(WORDS).to_string();
    let query = |rng: &mut Rng| {
        (0..rng.below(3))
            .map(|_| rng.pick(PAIRS))
            .collect::<Vec<_>>()
            .join("&")
    };
    let json = Some("application/json");
    let mut request = match rng.below(8) {
        0 => Generated {
            method: "POST",
            target: "/v1/echo".into(),
            content_type: json,
            body: rng.pick(BODIES).as_bytes().to_vec(),
        },
        1 => Generated {
            method: "GET",
            target: format!("/v1/echo?{}", query(rng)),
            content_type: None,
            body: Vec::new(),
        },
        2 => Generated {
            method: "GET",
            target: format!(
                "/v1/echo/{}/{}/{}?{}",
                word(rng),
                rng.next() as i64,
                word(rng),
                query(rng)
            ),
            content_type: None,
            body: Vec::new(),
        },
        3 => Generated {
            method: "GET",
            target: format!("/v1/resources/rooms/{}/items/{}", word(rng), word(rng)),
            content_type: None,
            body: Vec::new(),
        },
        4 => Generated {
            method: "GET",
            target: format!(
                "/v1/echo/{}:byEnum",
                rng.pick(&["COLOR_RED", "COLOR_BLUE", "0", "3", "9"])
            ),
            content_type: None,
            body: Vec::new(),
        },
        5 => Generated {
            method: "PUT",
            target: format!("/v1/echo/{}/nested?int32_value=1", word(rng)),
            content_type: json,
            body: br#"{"label":"l","count":3,"child":{"label":"c"}}"#.to_vec(),
        },
        6 => Generated {
            method: "POST",
            target: "/v1/raw".into(),
            content_type: Some(rng.pick(CONTENT_TYPES)),
            body: (0..rng.below(64))
                .map(|_| (rng.next() & 0xff) as u8)
                .collect(),
        },
        _ => Generated {
            method: "OPTIONS",
            target: "/v1/nothing".into(),
            content_type: None,
            body: Vec::new(),
        },
    };
    match rng.below(10) {
        0 => request.content_type = Some(rng.pick(CONTENT_TYPES)),
        1 => request.method = rng.pick(&["GET", "POST", "PUT", "DELETE", "HEAD"]),
        2 => {
            let separator = if request.target.contains('?') {
                '&'
            } else {
                '?'
            };
            request.target.push(separator);
            request
                .target
                .push_str(&hostile_query(rng).unwrap_or_default());
        }
        3 => {
            request.target = request
                .target
                .replacen("/v1/", &format!("/{}/", segment(rng)), 1)
        }
        4 if !request.body.is_empty() => {
            let at = rng.below(request.body.len());
            request.body[at] = (rng.next() & 0xff) as u8;
        }
        _ => {}
    }
    request
}

#[tokio::test]
async fn hostile_requests_get_json_errors_or_200_and_never_break_the_gateway() {
    let (scripted, gateway) = echo_gateway(
        r#"
[limits]
max_body_bytes = 4096
max_json_depth = 32
max_path_bytes = 512
max_query_bytes = 512
"#,
    )
    .await;
    let mut rng = Rng(0x5EED_1234_ABCD_0042);
    let mut successes = 0;
    let mut seen = std::collections::BTreeMap::<u16, usize>::new();
    for round in 0..200 {
        let request = if rng.chance(50) {
            near_valid(&mut rng)
        } else {
            hostile(&mut rng)
        };
        let (method, target, body) = (request.method, request.target, request.body);
        let mut head = format!("{method} {target} HTTP/1.1");
        if let Some(content_type) = request.content_type {
            head.push_str(&format!("\r\ncontent-type: {content_type}"));
        }
        if rng.chance(10) {
            let timeout = rng.pick(&["5S", "1M", "abc", "999999999H", "1.5S", ""]);
            head.push_str(&format!("\r\ngrpc-timeout: {timeout}"));
        }
        let raw = raw_exchange(gateway.addr, head.as_bytes(), &body).await;
        let context = format!(
            "round {round}: {head:?} body {:?} -> {} {}",
            String::from_utf8_lossy(&body),
            raw.status,
            raw.text()
        );
        // OPTIONS on a routed path is answered by the gateway itself (204 + Allow).
        let options_answer = method == "OPTIONS" && raw.status == 204;
        assert!(
            raw.status == 200 || options_answer || (400..500).contains(&raw.status),
            "{context}"
        );
        *seen.entry(raw.status).or_default() += 1;
        if raw.status == 200 {
            successes += 1;
        } else if method != "HEAD" && !options_answer {
            let code = match raw.status {
                404 => 5,
                405 => 12,
                _ => 3,
            };
            let (reason, _) = status_error(&raw, raw.status, code);
            assert!(!reason.is_empty(), "{context}");
        }
    }
    // Every 200 is one upstream call; no refused request reached it.
    assert_eq!(scripted.call_count(), successes);
    // The mix reaches every stage: routing (404, 405), parsing (400) and the upstream (200).
    for status in [200, 400, 404, 405] {
        assert!(seen.contains_key(&status), "no {status} in {seen:?}");
    }
    // The gateway still answers normally.
    let raw = raw_get(gateway.addr, b"/v1/echo?string_value=still+here").await;
    assert_eq!(raw.status, 200, "{}", raw.text());
    let body: Value = serde_json::from_slice(&raw.body).expect("json");
    assert_eq!(body, json!({"stringValue": "still here"}));
}

#[tokio::test]
async fn too_many_or_too_large_headers_are_431_with_a_json_body() {
    let (scripted, gateway) =
        echo_gateway("\n[limits]\nmax_headers = 10\nmax_header_bytes = 2048\n").await;
    let mut many = client().get(format!("{}/v1/echo", gateway.base));
    for i in 0..12 {
        many = many.header(format!("x-extra-{i}"), "v");
    }
    let (reason, _) = status_error(&from_reqwest(many).await, 431, 3);
    assert_eq!(reason, "HEADERS_TOO_LARGE");
    let large = client()
        .get(format!("{}/v1/echo", gateway.base))
        .header("x-large", "a".repeat(2100));
    let (reason, _) = status_error(&from_reqwest(large).await, 431, 3);
    assert_eq!(reason, "HEADERS_TOO_LARGE");
    assert_eq!(scripted.call_count(), 0);
}

// === strict body binding ===

/// `PUT path` with a JSON body, sent as written.
async fn put_json(gateway: &TestGateway, path: &str, body: &str) -> Raw {
    from_reqwest(
        client()
            .put(format!("{}{path}", gateway.base))
            .header("content-type", "application/json")
            .body(body.to_string()),
    )
    .await
}

/// Routes for Unannotated that bind fields by the path and take a body:
/// `*` beside path variables, and a body field with a variable inside it.
const BOUND_BODY_ROUTES: &str = r#"
[routes.methods.Unannotated]
http = { post = "/v1/things/{string_value}/{nested.label}", body = "*", additional_bindings = [
  { put = "/v1/labels/{nested.label}", body = "nested" },
] }
"#;

#[tokio::test]
async fn a_body_is_one_json_value_and_a_body_field_cannot_reach_other_fields() {
    let (scripted, gateway) = echo_gateway("").await;
    for body in [
        // Closing the bound object early to reach the request's other fields.
        r#"{"label":"s"},"stringValue":"injected"}"#,
        r#"{"label":"s"},"stringValue":"injected""#,
        r#"{"label":"s"}, "int32Value": 7"#,
        r#"{"label":"s"}{"label":"t"}"#,
        r#"{"label":"s"} x"#,
        r#"null,"stringValue":"injected""#,
    ] {
        let (reason, message) = bad_request(&put_json(&gateway, "/v1/echo/p/nested", body).await);
        assert_eq!(reason, "MALFORMED_JSON", "{body}: {message}");
        assert!(message.contains("trailing"), "{body}: {message}");
    }
    // body "*" takes one value too.
    for body in [
        r#"{"stringValue":"a"}{"stringValue":"b"}"#,
        r#"{"stringValue":"a"} {"int32Value":1}"#,
        r#"{}[]"#,
        r#"{} 1"#,
    ] {
        let (reason, message) = bad_request(&post_json(&gateway, "/v1/echo", body).await);
        assert_eq!(reason, "MALFORMED_JSON", "{body}: {message}");
    }
    assert_eq!(scripted.call_count(), 0, "nothing reached the upstream");
    // Whitespace after the one value is fine, and only the bound field is set.
    let raw = put_json(&gateway, "/v1/echo/p/nested", "{\"label\":\"s\"} \r\n\t").await;
    assert_eq!(raw.status, 200, "{}", raw.text());
    assert_eq!(
        scripted.calls()[0].message,
        json!({"string_value": "p", "nested": {"label": "s"}})
    );
}

#[tokio::test]
async fn duplicate_keys_are_400_naming_the_key_at_every_level() {
    let (scripted, gateway) = echo_gateway("").await;
    for (body, key, at) in [
        (
            r#"{"stringValue":"a","stringValue":"b"}"#,
            "stringValue",
            "the top level",
        ),
        (
            r#"{"int32Value":1,"int32_value":2}"#,
            "int32_value",
            "the top level",
        ),
        (
            r#"{"int64_value":"1","int64Value":"1"}"#,
            "int64Value",
            "the top level",
        ),
        (
            r#"{"nested":{"label":"a","child":{"count":1,"count":2}}}"#,
            "count",
            "'nested.child'",
        ),
        (
            r#"{"repeatedNested":[{},{"label":"a","label":"b"}]}"#,
            "label",
            "'repeatedNested[1]'",
        ),
        (r#"{"stringMap":{"k":"1","k":"2"}}"#, "k", "'stringMap'"),
        (r#"{"intMap":{"1":{},"01":{}}}"#, "01", "'intMap'"),
        (
            r#"{"intMap":{"1":{"child":{"label":"a","label":"b"}}}}"#,
            "label",
            "'intMap[\"1\"].child'",
        ),
        (
            r#"{"structValue":{"a":1,"b":{"c":1,"c":2}}}"#,
            "c",
            "'structValue.b'",
        ),
        (r#"{"value":{"a":1,"a":2}}"#, "a", "'value'"),
        (
            r#"{"any":{"@type":"type.googleapis.com/testing.v1.Nested","label":"a","label":"b"}}"#,
            "label",
            "'any'",
        ),
    ] {
        let (reason, message) = bad_request(&post_json(&gateway, "/v1/echo", body).await);
        assert_eq!(reason, "DUPLICATE_KEY", "{body}: {message}");
        assert!(message.contains(&format!("'{key}'")), "{body}: {message}");
        assert!(message.contains(&format!("at {at}")), "{body}: {message}");
    }
    // The same in a body bound to one field.
    let (reason, message) =
        bad_request(&put_json(&gateway, "/v1/echo/p/nested", r#"{"count":1,"count":1}"#).await);
    assert_eq!(reason, "DUPLICATE_KEY", "{message}");
    assert_eq!(scripted.call_count(), 0);
    // Equal keys in sibling objects are not duplicates.
    let body = r#"{"nested":{"label":"a","child":{"label":"b"}},"stringMap":{"label":"c"}}"#;
    let raw = post_json(&gateway, "/v1/echo", body).await;
    assert_eq!(raw.status, 200, "{}", raw.text());
}

#[tokio::test]
async fn duplicate_keys_in_a_large_object_are_found() {
    let (scripted, gateway) = echo_gateway("").await;
    let mut entries: Vec<String> = (0..200).map(|i| format!(r#""k{i}":"v""#)).collect();
    entries.push(r#""k17":"again""#.into());
    let body = format!(r#"{{"stringMap":{{{}}}}}"#, entries.join(","));
    let (reason, message) = bad_request(&post_json(&gateway, "/v1/echo", &body).await);
    assert_eq!(reason, "DUPLICATE_KEY", "{message}");
    assert!(message.contains("'k17'"), "{message}");
    assert_eq!(scripted.call_count(), 0);
}

#[tokio::test]
async fn body_setting_a_field_the_path_binds_is_400() {
    let (scripted, gateway) = echo_gateway(BOUND_BODY_ROUTES).await;
    for (path, body, field) in [
        (
            "/v1/things/s/l",
            r#"{"stringValue":"other"}"#,
            "string_value",
        ),
        ("/v1/things/s/l", r#"{"string_value":""}"#, "string_value"),
        ("/v1/things/s/l", r#"{"stringValue":"s"}"#, "string_value"),
        (
            "/v1/things/s/l",
            r#"{"nested":{"label":"other"}}"#,
            "nested.label",
        ),
    ] {
        let (reason, message) = bad_request(&post_json(&gateway, path, body).await);
        assert_eq!(reason, "INVALID_FIELD", "{body}: {message}");
        assert!(
            message.contains(&format!("'{field}'")) && message.contains("path variable"),
            "{body}: {message}"
        );
    }
    // A variable inside a body field is bound the same way.
    let (reason, message) =
        bad_request(&put_json(&gateway, "/v1/labels/l", r#"{"label":"other"}"#).await);
    assert_eq!(reason, "INVALID_FIELD", "{message}");
    assert!(message.contains("'nested.label'"), "{message}");
    assert_eq!(scripted.call_count(), 0);
    // The body's other fields (and a null for the bound one) are fine.
    let raw = post_json(
        &gateway,
        "/v1/things/s/l",
        r#"{"stringValue":null,"nested":{"count":2},"int32Value":3}"#,
    )
    .await;
    assert_eq!(raw.status, 200, "{}", raw.text());
    let raw = put_json(&gateway, "/v1/labels/l", r#"{"count":4}"#).await;
    assert_eq!(raw.status, 200, "{}", raw.text());
    let calls = scripted.calls();
    assert_eq!(
        calls[0].message,
        json!({"string_value": "s", "int32_value": 3, "nested": {"label": "l", "count": 2}})
    );
    assert_eq!(
        calls[1].message,
        json!({"nested": {"label": "l", "count": 4}})
    );
}

#[tokio::test]
async fn json_body_in_a_charset_other_than_utf8_is_415() {
    let (scripted, gateway) = echo_gateway("").await;
    for content_type in [
        "application/json; charset=latin1",
        "application/json; charset=ISO-8859-1",
        "application/json;charset=utf-16",
        "application/merge-patch+json; charset=windows-1252",
    ] {
        let raw = from_reqwest(
            client()
                .post(format!("{}/v1/echo", gateway.base))
                .header("content-type", content_type)
                .body(r#"{"stringValue":"caf\u00e9"}"#),
        )
        .await;
        let (reason, message) = status_error(&raw, 415, 3);
        assert_eq!(reason, "UNSUPPORTED_MEDIA_TYPE", "{content_type}");
        assert!(message.contains("UTF-8"), "{content_type}: {message}");
    }
    assert_eq!(scripted.call_count(), 0);
    for content_type in [
        "application/json; charset=utf-8",
        "application/json; charset=UTF-8",
        "application/json;CHARSET=\"Utf-8\"",
    ] {
        let raw = from_reqwest(
            client()
                .post(format!("{}/v1/echo", gateway.base))
                .header("content-type", content_type)
                .body(r#"{"stringValue":"x"}"#),
        )
        .await;
        assert_eq!(raw.status, 200, "{content_type}: {}", raw.text());
    }
    assert_eq!(scripted.call_count(), 3);
}

// === field masks ===

#[tokio::test]
async fn field_mask_naming_no_field_is_400_in_body_and_query() {
    let (scripted, gateway) = echo_gateway("").await;
    for (body, named) in [
        (r#"{"fieldMask":"stringValue,nope"}"#, "nope"),
        (r#"{"fieldMask":"nested.nope"}"#, "nested.nope"),
        (r#"{"fieldMask":"stringValue.label"}"#, "string_value.label"),
        (
            r#"{"fieldMask":"repeatedNested.label"}"#,
            "repeated_nested.label",
        ),
        (r#"{"nested":{"label":"x"},"fieldMask":"a..b"}"#, "a..b"),
        (r#"{"fieldMask":"a,,b"}"#, "a,,b"),
        (r#"{"fieldMask":"int32Value, stringValue"}"#, " stringValue"),
    ] {
        let (reason, message) = bad_request(&post_json(&gateway, "/v1/echo", body).await);
        assert_eq!(reason, "INVALID_FIELD", "{body}: {message}");
        assert!(message.contains(named), "{body}: {message}");
    }
    for (target, named) in [
        ("/v1/echo?field_mask=nope", "nope"),
        ("/v1/echo?fieldMask=nested.child.nope", "nested.child.nope"),
        ("/v1/echo?field_mask=a,,b", "a,,b"),
        ("/v1/echo?field_mask=nested.", "nested."),
    ] {
        let (reason, message) = bad_request(&raw_get(gateway.addr, target.as_bytes()).await);
        assert_eq!(reason, "INVALID_FIELD", "{target}: {message}");
        assert!(message.contains(named), "{target}: {message}");
    }
    assert_eq!(scripted.call_count(), 0);
    // Paths that name fields (to the last, which may be repeated) pass.
    let raw = post_json(
        &gateway,
        "/v1/echo",
        r#"{"fieldMask":"nested.child.label,repeatedNested,stringMap"}"#,
    )
    .await;
    assert_eq!(raw.status, 200, "{}", raw.text());
    let raw = raw_get(gateway.addr, b"/v1/echo?fieldMask=nested.count,int64Value").await;
    assert_eq!(raw.status, 200, "{}", raw.text());
    assert_eq!(scripted.call_count(), 2);
}

#[tokio::test]
async fn update_mask_names_fields_of_the_message_bound_to_the_body() {
    let scripted = spawn_scripted(
        pool(),
        Reply::Json(json!({"id": "2", "title": "t", "rating": 5.0})),
    )
    .await;
    let gateway = spawn_gateway(&bookstore_toml(scripted.addr, "")).await;
    let patch = |query: &'static str| {
        from_reqwest(
            client()
                .patch(format!("{}/v1/shelves/1/books/2?{query}", gateway.base))
                .header("content-type", "application/json")
                .body(r#"{"rating":5}"#),
        )
    };
    for query in [
        "updateMask=ratin",
        "updateMask=rating,shelf",
        "update_mask=book.rating",
    ] {
        let (reason, message) = bad_request(&patch(query).await);
        assert_eq!(reason, "INVALID_FIELD", "{query}: {message}");
        assert!(message.contains("update_mask"), "{query}: {message}");
    }
    assert_eq!(scripted.call_count(), 0);
    let raw = patch("updateMask=rating,publishTime").await;
    assert_eq!(raw.status, 200, "{}", raw.text());
    assert_eq!(
        scripted.calls()[0].message["update_mask"],
        json!("rating,publishTime")
    );
}
