use prost_reflect::{DescriptorPool, SerializeOptions};
use serde_json::{Value as Json, json};

use super::*;
use crate::transcode::plan::{BodyRule, JsonMapping};

const BOUNDARY: &str = "----protogate-test-7MA4YWxk";

const LIMITS: MultipartLimits = MultipartLimits {
    max_part_bytes: 64,
    max_parts: 8,
};

/// One part: name, file name, Content-Type, content.
type Spec<'a> = (&'a str, Option<&'a str>, Option<&'a str>, &'a [u8]);

fn pool() -> DescriptorPool {
    crate::descriptors::load(&crate::descriptors::DescriptorSource::Protos {
        files: vec![
            "testing/v1/everything.proto".into(),
            "bookstore/v1/bookstore.proto".into(),
        ],
        include: vec![concat!(env!("CARGO_MANIFEST_DIR"), "/proto").into()],
    })
    .expect("repo protos compile")
}

/// A plan for `service`/`method` with the body rule `body` and the path
/// variables `variables`.
fn plan(service: &str, method: &str, body: &str, variables: &[&str], deny: bool) -> Plan {
    let method = pool()
        .get_service_by_name(service)
        .and_then(|s| s.methods().find(|m| m.name() == method))
        .expect("method exists");
    let input = method.input();
    let resolve = |dotted: &str| FieldPath::resolve(&input, dotted).expect("field exists");
    Plan {
        body: match body {
            "" => BodyRule::None,
            "*" => BodyRule::Whole,
            field => BodyRule::Field(resolve(field)),
        },
        variables: variables.iter().map(|v| resolve(v)).collect(),
        method,
        response_body: None,
        json: JsonMapping {
            serialize: SerializeOptions::new(),
            render: Default::default(),
            deny_unknown_fields: deny,
            deny_unknown_query: deny,
        },
        reserved_query: Vec::new(),
        success: Default::default(),
    }
}

fn echo() -> Plan {
    plan("testing.v1.EverythingService", "Echo", "*", &[], true)
}

fn cover() -> Plan {
    plan(
        "bookstore.v1.Bookstore",
        "PutBookCover",
        "cover",
        &["shelf", "book"],
        true,
    )
}

fn form(parts: &[Spec<'_>]) -> Bytes {
    let mut body = Vec::new();
    for (name, file_name, content_type, data) in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        let disposition = match file_name {
            Some(file) => format!("form-data; name=\"{name}\"; filename=\"{file}\""),
            None => format!("form-data; name=\"{name}\""),
        };
        body.extend_from_slice(format!("Content-Disposition: {disposition}\r\n").as_bytes());
        if let Some(content_type) = content_type {
            body.extend_from_slice(format!("Content-Type: {content_type}\r\n").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body.into()
}

fn parse_with(plan: &Plan, body: Bytes, limits: MultipartLimits) -> Result<Json, TranscodeError> {
    let descriptor = plan.method.input();
    let field = match &plan.body {
        BodyRule::Field(path) => Some(path),
        _ => None,
    };
    let message = parse(plan, &descriptor, field, body, BOUNDARY.into(), limits)?;
    let options = SerializeOptions::new().use_proto_field_name(true);
    Ok(message
        .serialize_with_options(serde_json::value::Serializer, &options)
        .expect("serializes"))
}

fn parse_form(plan: &Plan, parts: &[Spec<'_>]) -> Result<Json, TranscodeError> {
    parse_with(plan, form(parts), LIMITS)
}

fn b64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[test]
fn text_parts_set_typed_fields_by_proto_json_and_dotted_names() {
    let message = parse_form(
        &echo(),
        &[
            ("int32_value", None, None, b"-7"),
            ("int64Value", None, None, b"9007199254740993"),
            ("enum_value", None, None, b"COLOR_BLUE"),
            ("repeated_string", None, None, b"a"),
            ("repeatedString", None, None, b"b"),
            ("repeated_enum", None, None, b"2"),
            ("nested.label", None, None, b"inner"),
            (
                "bool_value",
                None,
                Some("text/plain; charset=utf-8"),
                b"true",
            ),
        ],
    )
    .expect("parses");
    assert_eq!(message["int32_value"], -7);
    assert_eq!(message["int64_value"], "9007199254740993");
    assert_eq!(message["enum_value"], "COLOR_BLUE");
    assert_eq!(message["repeated_string"], json!(["a", "b"]));
    assert_eq!(message["repeated_enum"], json!(["COLOR_GREEN"]));
    assert_eq!(message["nested"]["label"], "inner");
    assert_eq!(message["bool_value"], true);
}

#[test]
fn file_and_text_parts_fill_bytes_fields_with_the_raw_content() {
    // Content that looks like a boundary line and a CRLF survive exactly.
    let file: &[u8] = b"\x00\xff\r\n--not-the-boundary\r\n\x89PNG";
    let message = parse_form(
        &echo(),
        &[
            (
                "bytes_value",
                Some("a.bin"),
                Some("application/octet-stream"),
                file,
            ),
            ("repeated_bytes", None, None, b"plain"),
            ("repeated_bytes", Some("b.txt"), Some("text/plain"), b""),
        ],
    )
    .expect("parses");
    assert_eq!(message["bytes_value"], b64(file));
    assert_eq!(message["repeated_bytes"], json!([b64(b"plain"), ""]));
}

#[test]
fn http_body_field_takes_the_one_file_part_with_its_content_type() {
    let message = parse_form(
        &cover(),
        &[("upload", Some("cover.png"), Some("image/png"), b"\x89PNG")],
    )
    .expect("parses");
    assert_eq!(message["cover"]["content_type"], "image/png");
    assert_eq!(message["cover"]["data"], b64(b"\x89PNG"));
    // Without a Content-Type a file is octet-stream, and text is text/plain.
    let file = parse_form(&cover(), &[("x", Some("x"), None, b"1")]).expect("parses");
    assert_eq!(file["cover"]["content_type"], "application/octet-stream");
    let text = parse_form(&cover(), &[("cover", None, None, b"1")]).expect("parses");
    assert_eq!(text["cover"]["content_type"], "text/plain");
}

#[test]
fn a_part_named_like_the_body_field_wins_over_other_files() {
    let parts: &[Spec<'_>] = &[
        ("thumbnail", Some("t.png"), Some("image/png"), b"small"),
        ("cover", Some("c.png"), Some("image/png"), b"large"),
    ];
    let lenient = plan(
        "bookstore.v1.Bookstore",
        "PutBookCover",
        "cover",
        &[],
        false,
    );
    let message = parse_form(&lenient, parts).expect("parses");
    assert_eq!(message["cover"]["data"], b64(b"large"));
    // Denying unknown fields, the other file is an unknown part.
    assert!(matches!(
        parse_form(&cover(), parts),
        Err(TranscodeError::UnknownField { field, .. }) if field == "thumbnail"
    ));
}

#[test]
fn two_unnamed_files_for_one_file_field_are_refused() {
    let error = parse_form(
        &cover(),
        &[
            ("a", Some("a.png"), None, b"1"),
            ("b", Some("b.png"), None, b"2"),
        ],
    )
    .expect_err("ambiguous");
    assert!(
        error.to_string().contains("expected one file part"),
        "{error}"
    );
}

#[test]
fn an_http_body_request_is_filled_by_its_file_part() {
    let raw = plan("testing.v1.EverythingService", "EchoBody", "*", &[], true);
    let message =
        parse_form(&raw, &[("file", Some("f.csv"), Some("text/csv"), b"a,b")]).expect("parses");
    assert_eq!(message["content_type"], "text/csv");
    assert_eq!(message["data"], b64(b"a,b"));
}

#[test]
fn unknown_parts_are_refused_or_ignored_as_the_binding_says() {
    let parts: &[Spec<'_>] = &[
        ("nope", None, None, b"1"),
        ("int32_value", None, None, b"2"),
    ];
    assert!(matches!(
        parse_form(&echo(), parts),
        Err(TranscodeError::UnknownField { field, context }) if field == "nope" && context == IN_FORM
    ));
    let lenient = plan("testing.v1.EverythingService", "Echo", "*", &[], false);
    assert_eq!(
        parse_form(&lenient, parts).expect("parses")["int32_value"],
        2
    );
}

#[test]
fn wrong_values_files_for_text_fields_and_repeats_are_refused() {
    let refused: &[&[Spec<'_>]] = &[
        &[("int32_value", None, None, b"seven")],
        &[("string_value", Some("s.txt"), None, b"text")],
        &[("string_value", None, None, b"\xff\xfe")],
        &[
            ("string_value", None, None, b"a"),
            ("string_value", None, None, b"b"),
        ],
        &[
            ("choice_string", None, None, b"a"),
            ("choice_int", None, None, b"1"),
        ],
        &[("nested", None, None, b"x")],
        &[("string_map", None, None, b"x")],
        &[("repeated_nested.label", None, None, b"x")],
    ];
    for parts in refused {
        assert!(
            matches!(
                parse_form(&echo(), parts),
                Err(TranscodeError::InvalidField { .. })
            ),
            "{parts:?}"
        );
    }
}

#[test]
fn a_part_cannot_set_a_field_the_path_binds() {
    let bound = plan(
        "testing.v1.EverythingService",
        "Echo",
        "*",
        &["string_value"],
        true,
    );
    let error = parse_form(&bound, &[("stringValue", None, None, b"x")]).expect_err("bound");
    assert!(error.to_string().contains("path variable"), "{error}");
}

#[test]
fn a_part_over_the_part_limit_is_refused_by_name() {
    let at_limit = vec![b'x'; LIMITS.max_part_bytes];
    assert!(parse_form(&echo(), &[("string_value", None, None, &at_limit)]).is_ok());
    let over = vec![b'x'; LIMITS.max_part_bytes + 1];
    let error = parse_form(&echo(), &[("bytes_value", Some("big"), None, &over)])
        .expect_err("over the limit");
    assert!(matches!(
        &error,
        TranscodeError::PartTooLarge { part, limit } if part == "bytes_value" && *limit == LIMITS.max_part_bytes
    ));
    assert!(
        error.to_string().contains("max_multipart_part_bytes"),
        "{error}"
    );
}

#[test]
fn more_parts_than_the_limit_are_refused() {
    let one: Spec<'_> = ("repeated_string", None, None, b"x");
    assert!(parse_form(&echo(), &vec![one; LIMITS.max_parts]).is_ok());
    assert!(matches!(
        parse_form(&echo(), &vec![one; LIMITS.max_parts + 1]),
        Err(TranscodeError::TooManyParts { limit }) if limit == LIMITS.max_parts
    ));
}

#[test]
fn malformed_forms_are_refused() {
    let whole = form(&[("string_value", None, None, b"text")]);
    let truncated = whole.slice(..whole.len() - 20);
    let no_close = whole.slice(..whole.len() - BOUNDARY.len() - 6);
    let other_boundary =
        Bytes::from(String::from_utf8_lossy(&whole).replace(BOUNDARY, "something-else"));
    let nameless = Bytes::from(format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data\r\n\r\nx\r\n--{BOUNDARY}--\r\n"
    ));
    for body in [truncated, no_close, other_boundary, nameless, Bytes::new()] {
        let result = parse_with(&echo(), body.clone(), LIMITS);
        assert!(
            matches!(result, Err(TranscodeError::MalformedMultipart(_))),
            "{body:?}: {result:?}"
        );
    }
}

#[test]
fn only_form_data_content_types_are_read_as_forms() {
    let header = |value: &'static str| HeaderValue::from_static(value);
    assert_eq!(
        boundary(Some(&header("multipart/form-data; boundary=\"a b\""))).expect("valid"),
        Some("a b".to_string())
    );
    assert!(matches!(
        boundary(Some(&header("multipart/form-data"))),
        Err(TranscodeError::MalformedMultipart(_))
    ));
    for other in [
        "application/json",
        "multipart/mixed; boundary=x",
        "text/plain",
    ] {
        assert_eq!(boundary(Some(&header(other))).expect("not a form"), None);
    }
    assert_eq!(boundary(None).expect("not a form"), None);
}
