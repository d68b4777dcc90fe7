//! `multipart/form-data` uploads, both sides: what the upstream received for
//! a form (files as raw bytes or google.api.HttpBody with their content
//! type, text parts as typed fields), and that a form over a limit, with an
//! unknown part, or malformed is refused before the upstream sees anything.

mod support;

use base64::Engine;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use support::*;

/// Small multipart limits, and bindings of Unannotated that take the body
/// as one bytes field, or take no body at all.
const ROUTES: &str = r#"
[limits]
max_body_bytes = 8192
max_multipart_part_bytes = 1024
max_multipart_parts = 8

[routes.methods.Unannotated]
http = { post = "/v1/upload/{string_value}", body = "bytes_value", additional_bindings = [
  { post = "/v1/nobody" },
] }
"#;

const PART_LIMIT: usize = 1024;
const PARTS_LIMIT: usize = 8;

/// A boundary for forms written by hand.
const BOUNDARY: &str = "protogate-test-boundary";

// === helpers ===

async fn echo_gateway() -> (Scripted, TestGateway) {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, ROUTES)).await;
    (scripted, gateway)
}

async fn post_form(gateway: &TestGateway, path: &str, form: Form) -> reqwest::Response {
    client()
        .post(format!("{}{path}", gateway.base))
        .multipart(form)
        .send()
        .await
        .expect("send")
}

/// Sends `body` as a form with `content_type`, exactly as given.
async fn post_raw(
    gateway: &TestGateway,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    client()
        .post(format!("{}{path}", gateway.base))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("send")
}

/// The only call's request message.
#[track_caller]
fn only_message(scripted: &Scripted) -> Value {
    let calls = scripted.calls();
    assert_eq!(calls.len(), 1, "one call upstream");
    calls[0].message.clone()
}

/// A refusal's `(status, reason, message)`.
async fn refused(response: reqwest::Response) -> (u16, String, String) {
    let refusal = refusal(response).await;
    let reason = refusal.body["details"][0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let message = refusal.body["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (refusal.status, reason, message)
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn file(data: Vec<u8>, name: &str, content_type: &str) -> Part {
    Part::bytes(data)
        .file_name(name.to_string())
        .mime_str(content_type)
        .expect("valid media type")
}

/// A form with one text part per `(name, value)`, written by hand.
fn text_form(parts: &[(&str, &str)]) -> Vec<u8> {
    let mut body = String::new();
    for (name, value) in parts {
        body.push_str(&format!(
            "--{BOUNDARY}\r\ncontent-disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        ));
    }
    body.push_str(&format!("--{BOUNDARY}--\r\n"));
    body.into_bytes()
}

// === what the upstream receives ===

#[tokio::test]
async fn a_file_part_reaches_a_bytes_field_byte_for_byte() {
    let (scripted, gateway) = echo_gateway().await;
    // Every byte value, CRLFs and a boundary-like line included.
    let mut data: Vec<u8> = (0..=255).collect();
    data.extend_from_slice(b"\r\n--protogate-test-boundary\r\n");
    let form = Form::new().part(
        "bytes_value",
        file(data.clone(), "blob.bin", "application/octet-stream"),
    );
    let response = post_form(&gateway, "/v1/echo", form).await;
    assert_eq!(
        response.status(),
        200,
        "{}",
        response.text().await.unwrap_or_default()
    );
    assert_eq!(only_message(&scripted)["bytes_value"], b64(&data));

    // A body bound to the bytes field takes the form's one file part,
    // whatever its name; the path fills the rest.
    let form = Form::new().part(
        "upload",
        file(data.clone(), "blob.bin", "application/octet-stream"),
    );
    let response = post_form(&gateway, "/v1/upload/named", form).await;
    assert_eq!(
        response.status(),
        200,
        "{}",
        response.text().await.unwrap_or_default()
    );
    let message = scripted.calls()[1].message.clone();
    assert_eq!(message["bytes_value"], b64(&data));
    assert_eq!(message["string_value"], "named");
}

#[tokio::test]
async fn a_file_part_reaches_an_http_body_field_with_its_content_type() {
    let scripted = spawn_scripted(pool(), Reply::Json(json!({}))).await;
    let gateway = spawn_gateway(&bookstore_toml(scripted.addr, "")).await;
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    let response = client()
        .put(format!("{}/v1/shelves/1/books/2/cover", gateway.base))
        .multipart(Form::new().part("cover", file(png.clone(), "cover.png", "image/png")))
        .send()
        .await
        .expect("send");
    assert_eq!(
        response.status(),
        200,
        "{}",
        response.text().await.unwrap_or_default()
    );
    let message = only_message(&scripted);
    assert_eq!(message["shelf"], "1");
    assert_eq!(message["book"], "2");
    assert_eq!(message["cover"]["content_type"], "image/png");
    assert_eq!(message["cover"]["data"], b64(&png));
}

#[tokio::test]
async fn the_demo_bookstore_serves_the_cover_it_was_sent_as_a_form() {
    let (upstream, _) = spawn_bookstore().await;
    let gateway = spawn_gateway(&bookstore_toml(upstream, "")).await;
    let svg = b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>".to_vec();
    // As `curl -X PUT -F 'cover=@cover.svg;type=image/svg+xml'` sends it.
    let response = client()
        .put(format!("{}/v1/shelves/1/books/1/cover", gateway.base))
        .multipart(Form::new().part("cover", file(svg.clone(), "cover.svg", "image/svg+xml")))
        .send()
        .await
        .expect("send");
    assert_eq!(
        response.status(),
        200,
        "{}",
        response.text().await.unwrap_or_default()
    );
    let cover = client()
        .get(format!("{}/v1/shelves/1/books/1/cover", gateway.base))
        .send()
        .await
        .expect("send");
    assert_eq!(cover.status(), 200);
    assert_eq!(cover.headers()["content-type"], "image/svg+xml");
    assert_eq!(cover.bytes().await.expect("body").to_vec(), svg);
}

#[tokio::test]
async fn text_parts_become_typed_fields() {
    let (scripted, gateway) = echo_gateway().await;
    let form = Form::new()
        .text("int32_value", "-42")
        .text("int64Value", "9007199254740993")
        .text("enum_value", "COLOR_RED")
        .text("repeated_string", "first")
        .text("repeated_string", "second")
        .text("repeated_enum", "COLOR_BLUE")
        .text("repeated_enum", "2")
        .text("nested.label", "inner");
    let response = post_form(&gateway, "/v1/echo", form).await;
    assert_eq!(
        response.status(),
        200,
        "{}",
        response.text().await.unwrap_or_default()
    );
    let message = only_message(&scripted);
    assert_eq!(message["int32_value"], -42);
    assert_eq!(message["int64_value"], "9007199254740993");
    assert_eq!(message["enum_value"], "COLOR_RED");
    assert_eq!(message["repeated_string"], json!(["first", "second"]));
    assert_eq!(
        message["repeated_enum"],
        json!(["COLOR_BLUE", "COLOR_GREEN"])
    );
    assert_eq!(message["nested"]["label"], "inner");
}

// === refused before the upstream ===

#[tokio::test]
async fn an_unknown_part_or_a_bad_value_is_400_naming_it() {
    let (scripted, gateway) = echo_gateway().await;
    let form = Form::new()
        .text("int32_value", "1")
        .text("no_such_field", "x");
    let (status, reason, message) = refused(post_form(&gateway, "/v1/echo", form).await).await;
    assert_eq!(
        (status, reason.as_str()),
        (400, "UNKNOWN_FIELD"),
        "{message}"
    );
    assert!(message.contains("no_such_field"), "{message}");

    let form = Form::new().text("int32_value", "many");
    let (status, reason, message) = refused(post_form(&gateway, "/v1/echo", form).await).await;
    assert_eq!(
        (status, reason.as_str()),
        (400, "INVALID_FIELD"),
        "{message}"
    );
    assert!(message.contains("int32_value"), "{message}");

    let form = Form::new().part(
        "string_value",
        file(b"text".to_vec(), "s.txt", "text/plain"),
    );
    let (status, reason, message) = refused(post_form(&gateway, "/v1/echo", form).await).await;
    assert_eq!(
        (status, reason.as_str()),
        (400, "INVALID_FIELD"),
        "{message}"
    );
    assert_eq!(scripted.call_count(), 0);
}

#[tokio::test]
async fn a_part_over_the_part_limit_is_413_naming_the_part_and_the_limit() {
    let (scripted, gateway) = echo_gateway().await;
    let form = Form::new().part(
        "bytes_value",
        file(
            vec![7; PART_LIMIT + 1],
            "big.bin",
            "application/octet-stream",
        ),
    );
    let (status, reason, message) = refused(post_form(&gateway, "/v1/echo", form).await).await;
    assert_eq!(
        (status, reason.as_str()),
        (413, "PART_TOO_LARGE"),
        "{message}"
    );
    assert!(message.contains("'bytes_value'"), "{message}");
    assert!(message.contains("max_multipart_part_bytes"), "{message}");
    assert!(message.contains(&PART_LIMIT.to_string()), "{message}");
    assert_eq!(scripted.call_count(), 0, "the upstream saw nothing");

    // At the limit, the part goes through.
    let form = Form::new().part(
        "bytes_value",
        file(vec![7; PART_LIMIT], "max.bin", "application/octet-stream"),
    );
    let response = post_form(&gateway, "/v1/echo", form).await;
    assert_eq!(response.status(), 200);
    assert_eq!(scripted.call_count(), 1);
}

#[tokio::test]
async fn more_parts_than_the_limit_is_413_and_the_body_limit_still_holds() {
    let (scripted, gateway) = echo_gateway().await;
    let values = vec![("repeated_string", "x"); PARTS_LIMIT + 1];
    let form = text_form(&values);
    let content_type = format!("multipart/form-data; boundary={BOUNDARY}");
    let (status, reason, message) =
        refused(post_raw(&gateway, "/v1/echo", &content_type, form).await).await;
    assert_eq!(
        (status, reason.as_str()),
        (413, "TOO_MANY_PARTS"),
        "{message}"
    );
    assert!(message.contains("max_multipart_parts"), "{message}");

    // Parts each within their limit, but a body over max_body_bytes.
    let mut form = Form::new();
    for _ in 0..PARTS_LIMIT {
        form = form.part(
            "repeated_bytes",
            file(vec![1; PART_LIMIT], "p.bin", "application/octet-stream"),
        );
    }
    let (status, reason, _) = refused(post_form(&gateway, "/v1/echo", form).await).await;
    assert_eq!((status, reason.as_str()), (413, "BODY_TOO_LARGE"));

    let response = post_raw(&gateway, "/v1/echo", &content_type, text_form(&values[1..])).await;
    assert_eq!(response.status(), 200, "exactly the limit of parts");
    assert_eq!(
        only_message(&scripted)["repeated_string"]
            .as_array()
            .map(Vec::len),
        Some(PARTS_LIMIT)
    );
}

#[tokio::test]
async fn a_malformed_form_is_400() {
    let (scripted, gateway) = echo_gateway().await;
    let form = text_form(&[("string_value", "text")]);
    let with_boundary = format!("multipart/form-data; boundary={BOUNDARY}");
    let cases = [
        (
            "another boundary",
            "multipart/form-data; boundary=not-the-one".to_string(),
            form.clone(),
        ),
        (
            "no boundary",
            "multipart/form-data".to_string(),
            form.clone(),
        ),
        (
            "truncated",
            with_boundary.clone(),
            form[..form.len() - 12].to_vec(),
        ),
        (
            "no closing boundary",
            with_boundary.clone(),
            form[..form.len() - BOUNDARY.len() - 6].to_vec(),
        ),
        ("empty", with_boundary.clone(), Vec::new()),
    ];
    for (case, content_type, body) in cases {
        let (status, reason, message) =
            refused(post_raw(&gateway, "/v1/echo", &content_type, body).await).await;
        assert_eq!(
            (status, reason.as_str()),
            (400, "MALFORMED_MULTIPART"),
            "{case}: {message}"
        );
    }
    assert_eq!(scripted.call_count(), 0);
}

#[tokio::test]
async fn a_route_without_a_body_refuses_a_form() {
    let (scripted, gateway) = echo_gateway().await;
    let form = Form::new().text("string_value", "x");
    let (status, reason, message) = refused(post_form(&gateway, "/v1/nobody", form).await).await;
    assert_eq!(
        (status, reason.as_str()),
        (400, "INVALID_FIELD"),
        "{message}"
    );
    assert!(message.contains("no request body"), "{message}");
    assert_eq!(scripted.call_count(), 0);
}
