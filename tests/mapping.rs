//! The HTTP↔gRPC mapping of google.api.http and proto3 JSON, two-sided: what the upstream received and what the client got back.
#![recursion_limit = "256"]

mod support;

use std::collections::BTreeSet;

use serde_json::{Value, json};
use support::*;

const ECHO: &str = "/testing.v1.EverythingService/Echo";
const ECHO_QUERY: &str = "/testing.v1.EverythingService/EchoQuery";
const ECHO_PATH: &str = "/testing.v1.EverythingService/EchoPath";
const ECHO_NESTED: &str = "/testing.v1.EverythingService/EchoNested";
const ECHO_BODY: &str = "/testing.v1.EverythingService/EchoBody";
const NOTHING: &str = "/testing.v1.EverythingService/Nothing";
const UNANNOTATED: &str = "/testing.v1.EverythingService/Unannotated";

// === helpers ===

/// A scripted echo upstream and a gateway in front of it, with `extra` routes.toml.
async fn echo_gateway(extra: &str) -> (Scripted, TestGateway) {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, extra)).await;
    (scripted, gateway)
}

/// One HTTP answer, read whole.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: bytes::Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.expect("send");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("read body");
    Answer {
        status,
        headers,
        body,
    }
}

async fn get(gateway: &TestGateway, path_and_query: &str) -> Answer {
    send(client().get(format!("{}{path_and_query}", gateway.base))).await
}

async fn post_json(gateway: &TestGateway, path: &str, body: &Value) -> Answer {
    send(
        client()
            .post(format!("{}{path}", gateway.base))
            .header("content-type", "application/json")
            .body(body.to_string()),
    )
    .await
}

/// The one call the upstream received: its gRPC path and its message (proto names).
fn only_call(scripted: &Scripted) -> (String, Value) {
    let calls = scripted.calls();
    assert_eq!(calls.len(), 1, "expected exactly one upstream call");
    (calls[0].path.clone(), calls[0].message.clone())
}

/// Asserts a 200 and returns the JSON body.
fn ok_json(answer: &Answer) -> Value {
    assert_eq!(
        answer.status,
        200,
        "body: {}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.header("content-type"), Some("application/json"));
    answer.json()
}

/// Asserts a google.rpc.Status-shaped gateway error and returns its ErrorInfo reason.
fn gateway_error(answer: &Answer, status: u16, code: i64) -> String {
    assert_eq!(
        answer.status,
        status,
        "body: {}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let body = answer.json();
    assert_eq!(body["code"], code, "{body}");
    assert!(body["message"].is_string(), "{body}");
    let info = &body["details"][0];
    assert_eq!(info["@type"], "type.googleapis.com/google.rpc.ErrorInfo");
    assert_eq!(info["domain"], "protogate");
    info["reason"].as_str().expect("reason").to_string()
}

/// The canonical proto3 JSON of an Everything given as JSON: `proto_names`
/// selects the upstream's rendering (proto names), else the client's default.
fn canonical(input: &Value, proto_names: bool) -> Value {
    static POOL: std::sync::OnceLock<prost_reflect::DescriptorPool> = std::sync::OnceLock::new();
    let descriptor = POOL
        .get_or_init(pool)
        .get_message_by_name("testing.v1.Everything")
        .expect("Everything");
    let message = prost_reflect::DynamicMessage::deserialize(descriptor, input.clone())
        .expect("input is a valid Everything");
    let options = prost_reflect::SerializeOptions::new().use_proto_field_name(proto_names);
    message
        .serialize_with_options(serde_json::value::Serializer, &options)
        .expect("serializes")
}

// === path variables ===

#[tokio::test]
async fn single_segment_variables_are_fully_percent_decoded_including_slash() {
    let (scripted, gateway) = echo_gateway("").await;
    let answer = get(&gateway, "/v1/echo/a%2Fb%20c%3A%E2%9C%93/-42/lab%2fel%3Fx").await;
    let body = ok_json(&answer);
    let (path, message) = only_call(&scripted);
    assert_eq!(path, ECHO_PATH);
    assert_eq!(
        message,
        json!({"string_value": "a/b c:✓", "int64_value": "-42", "nested": {"label": "lab/el?x"}})
    );
    assert_eq!(
        body,
        json!({"stringValue": "a/b c:✓", "int64Value": "-42", "nested": {"label": "lab/el?x"}})
    );
}

#[tokio::test]
async fn plus_in_a_path_segment_is_a_literal_plus_not_a_space() {
    let (scripted, gateway) = echo_gateway("").await;
    let body = ok_json(&get(&gateway, "/v1/echo/a+b/1/c+d").await);
    let (_, message) = only_call(&scripted);
    assert_eq!(message["string_value"], "a+b");
    assert_eq!(message["nested"]["label"], "c+d");
    assert_eq!(body["stringValue"], "a+b");
}

#[tokio::test]
async fn int64_path_variable_carries_the_extremes_exactly() {
    let (scripted, gateway) = echo_gateway("").await;
    let body = ok_json(&get(&gateway, "/v1/echo/s/-9223372036854775808/l").await);
    let (_, message) = only_call(&scripted);
    assert_eq!(message["int64_value"], "-9223372036854775808");
    assert_eq!(body["int64Value"], "-9223372036854775808");
}

#[tokio::test]
async fn multi_segment_variable_keeps_encoded_slash() {
    let (scripted, gateway) = echo_gateway("").await;
    let answer = get(&gateway, "/v1/resources/rooms/r%201/items/a%2Fb/c%3Ad").await;
    let body = ok_json(&answer);
    let (path, message) = only_call(&scripted);
    assert_eq!(path, ECHO_PATH);
    // Everything but %2F is decoded; %2F stays so it differs from a separator.
    assert_eq!(message, json!({"resource": "rooms/r 1/items/a%2Fb/c:d"}));
    assert_eq!(body, json!({"resource": "rooms/r 1/items/a%2Fb/c:d"}));
}

#[tokio::test]
async fn multi_segment_variable_with_double_star_matches_zero_trailing_segments() {
    let (scripted, gateway) = echo_gateway("").await;
    let body = ok_json(&get(&gateway, "/v1/resources/rooms/r1/items").await);
    let (_, message) = only_call(&scripted);
    assert_eq!(message, json!({"resource": "rooms/r1/items"}));
    assert_eq!(body, json!({"resource": "rooms/r1/items"}));
}

#[tokio::test]
async fn multi_segment_variable_requires_its_literal_segments() {
    let (scripted, gateway) = echo_gateway("").await;
    let answer = get(&gateway, "/v1/resources/halls/r1/items/x").await;
    assert_eq!(gateway_error(&answer, 404, 5), "ROUTE_NOT_FOUND");
    assert_eq!(scripted.call_count(), 0);
}

#[tokio::test]
async fn custom_verb_binding_takes_enum_by_name_and_by_number() {
    let (scripted, gateway) = echo_gateway("").await;
    let by_name = ok_json(&get(&gateway, "/v1/echo/COLOR_BLUE:byEnum").await);
    let by_number = ok_json(&get(&gateway, "/v1/echo/2:byEnum").await);
    let calls = scripted.calls();
    assert_eq!(calls.len(), 2);
    assert!(calls.iter().all(|c| c.path == ECHO_PATH));
    assert_eq!(calls[0].message, json!({"enum_value": "COLOR_BLUE"}));
    assert_eq!(calls[1].message, json!({"enum_value": "COLOR_GREEN"}));
    assert_eq!(by_name, json!({"enumValue": "COLOR_BLUE"}));
    assert_eq!(by_number, json!({"enumValue": "COLOR_GREEN"}));
}

#[tokio::test]
async fn custom_verb_must_match_exactly() {
    let (scripted, gateway) = echo_gateway("").await;
    let answer = get(&gateway, "/v1/echo/COLOR_BLUE:byName").await;
    assert_eq!(gateway_error(&answer, 404, 5), "ROUTE_NOT_FOUND");
    assert_eq!(scripted.call_count(), 0);
}

#[tokio::test]
async fn nested_path_variable_sets_the_nested_field_and_the_query_fills_its_siblings() {
    let (scripted, gateway) = echo_gateway("").await;
    let answer = get(
        &gateway,
        "/v1/echo/s/7/lbl?nested.count=3&nested.child.label=deep&int32_value=9",
    )
    .await;
    let body = ok_json(&answer);
    let (_, message) = only_call(&scripted);
    assert_eq!(
        message,
        json!({
            "string_value": "s",
            "int64_value": "7",
            "int32_value": 9,
            "nested": {"label": "lbl", "count": 3, "child": {"label": "deep"}},
        })
    );
    assert_eq!(
        body,
        json!({
            "stringValue": "s",
            "int64Value": "7",
            "int32Value": 9,
            "nested": {"label": "lbl", "count": 3, "child": {"label": "deep"}},
        })
    );
}

#[tokio::test]
async fn literal_template_beats_variable_template() {
    let extra = r#"
[routes.methods.Unannotated]
http = { get = "/v1/echo/fixed/1/label" }
"#;
    let (scripted, gateway) = echo_gateway(extra).await;
    let literal = ok_json(&get(&gateway, "/v1/echo/fixed/1/label").await);
    let variable = ok_json(&get(&gateway, "/v1/echo/fixed/2/label").await);
    let calls = scripted.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].path, UNANNOTATED);
    assert_eq!(calls[0].message, json!({}));
    assert_eq!(literal, json!({}));
    assert_eq!(calls[1].path, ECHO_PATH);
    assert_eq!(
        calls[1].message,
        json!({"string_value": "fixed", "int64_value": "2", "nested": {"label": "label"}})
    );
    assert_eq!(variable["int64Value"], "2");
}

// === query parameters ===

#[tokio::test]
async fn nested_query_parameters_build_nested_messages() {
    let (scripted, gateway) = echo_gateway("").await;
    let answer = get(
        &gateway,
        "/v1/echo?nested.label=a&nested.count=3&nested.child.label=deep&nested.child.child.count=-1",
    )
    .await;
    let body = ok_json(&answer);
    let (path, message) = only_call(&scripted);
    assert_eq!(path, ECHO_QUERY);
    let nested = json!({
        "label": "a",
        "count": 3,
        "child": {"label": "deep", "child": {"count": -1}},
    });
    assert_eq!(message, json!({ "nested": nested }));
    assert_eq!(body, json!({ "nested": nested }));
}

#[tokio::test]
async fn repeated_query_keys_append_in_order() {
    let (scripted, gateway) = echo_gateway("").await;
    let answer = get(
        &gateway,
        "/v1/echo?repeated_string=b&repeated_string=a&repeated_string=b\
         &repeated_int64=1&repeated_int64=-2\
         &repeated_bool=true&repeated_bool=false\
         &repeated_double=1.5&repeated_double=-0.25\
         &repeated_enum=COLOR_RED&repeated_enum=3\
         &repeated_bytes=AAE%3D&repeated_bytes=_w\
         &repeated_timestamp=1970-01-01T00:00:00Z&repeated_timestamp=2000-02-29T12:00:00Z",
    )
    .await;
    let body = ok_json(&answer);
    let (_, message) = only_call(&scripted);
    assert_eq!(
        message,
        json!({
            "repeated_double": [1.5, -0.25],
            "repeated_int64": ["1", "-2"],
            "repeated_string": ["b", "a", "b"],
            "repeated_bytes": ["AAE=", "/w=="],
            "repeated_enum": ["COLOR_RED", "COLOR_BLUE"],
            "repeated_bool": [true, false],
            "repeated_timestamp": ["1970-01-01T00:00:00Z", "2000-02-29T12:00:00Z"],
        })
    );
    assert_eq!(body["repeatedString"], json!(["b", "a", "b"]));
    assert_eq!(body["repeatedInt64"], json!(["1", "-2"]));
    assert_eq!(body["repeatedEnum"], json!(["COLOR_RED", "COLOR_BLUE"]));
    assert_eq!(body["repeatedBytes"], json!(["AAE=", "/w=="]));
    assert_eq!(
        body["repeatedTimestamp"],
        json!(["1970-01-01T00:00:00Z", "2000-02-29T12:00:00Z"])
    );
}

#[tokio::test]
async fn enum_query_parameter_accepts_name_number_and_unknown_number() {
    let (scripted, gateway) = echo_gateway("").await;
    let by_name = ok_json(&get(&gateway, "/v1/echo?enum_value=COLOR_GREEN").await);
    let by_number = ok_json(&get(&gateway, "/v1/echo?enum_value=1").await);
    // proto3 enums are open: an unknown number is kept and written as a number.
    let unknown = ok_json(&get(&gateway, "/v1/echo?enum_value=7").await);
    let calls = scripted.calls();
    assert_eq!(calls[0].message, json!({"enum_value": "COLOR_GREEN"}));
    assert_eq!(calls[1].message, json!({"enum_value": "COLOR_RED"}));
    assert_eq!(calls[2].message, json!({"enum_value": 7}));
    assert_eq!(by_name, json!({"enumValue": "COLOR_GREEN"}));
    assert_eq!(by_number, json!({"enumValue": "COLOR_RED"}));
    assert_eq!(unknown, json!({"enumValue": 7}));
}

#[tokio::test]
async fn bool_query_parameters_take_true_and_false() {
    let (scripted, gateway) = echo_gateway("").await;
    let yes = ok_json(&get(&gateway, "/v1/echo?bool_value=true").await);
    let no = ok_json(&get(&gateway, "/v1/echo?bool_value=false&bool_wrapper=false").await);
    let calls = scripted.calls();
    assert_eq!(calls[0].message, json!({"bool_value": true}));
    // false is the default: absent from a plain field, present in a wrapper.
    assert_eq!(calls[1].message, json!({"bool_wrapper": false}));
    assert_eq!(yes, json!({"boolValue": true}));
    assert_eq!(no, json!({"boolWrapper": false}));
}

#[tokio::test]
async fn sixty_four_bit_and_thirty_two_bit_extremes_survive_the_query_exactly() {
    let (scripted, gateway) = echo_gateway("").await;
    let answer = get(
        &gateway,
        "/v1/echo?int64_value=-9223372036854775808&uint64_value=18446744073709551615\
         &sint64_value=9223372036854775807&fixed64_value=18446744073709551615\
         &sfixed64_value=-9223372036854775808&int32_value=-2147483648\
         &uint32_value=4294967295&sint32_value=2147483647&fixed32_value=4294967295\
         &sfixed32_value=-2147483648",
    )
    .await;
    let body = ok_json(&answer);
    let (_, message) = only_call(&scripted);
    assert_eq!(
        message,
        json!({
            "int32_value": -2147483648i64,
            "int64_value": "-9223372036854775808",
            "uint32_value": 4294967295u32,
            "uint64_value": "18446744073709551615",
            "sint32_value": 2147483647,
            "sint64_value": "9223372036854775807",
            "fixed32_value": 4294967295u32,
            "fixed64_value": "18446744073709551615",
            "sfixed32_value": -2147483648i64,
            "sfixed64_value": "-9223372036854775808",
        })
    );
    assert_eq!(body["int64Value"], "-9223372036854775808");
    assert_eq!(body["uint64Value"], "18446744073709551615");
    assert_eq!(body["fixed64Value"], "18446744073709551615");
    assert_eq!(body["uint32Value"], 4294967295u32);
}

#[tokio::test]
async fn bytes_query_parameters_accept_base64_and_base64url_padded_or_not() {
    let (scripted, gateway) = echo_gateway("").await;
    // 0xFB 0xFF: "+/8=" in base64, "-_8" in unpadded base64url.
    let answers = [
        get(&gateway, "/v1/echo?bytes_value=%2B%2F8%3D").await,
        get(&gateway, "/v1/echo?bytes_value=%2B%2F8").await,
        get(&gateway, "/v1/echo?bytes_value=-_8").await,
        get(&gateway, "/v1/echo?bytes_value=-_8%3D").await,
    ];
    let calls = scripted.calls();
    assert_eq!(calls.len(), 4);
    for (answer, call) in answers.iter().zip(&calls) {
        assert_eq!(call.message, json!({"bytes_value": "+/8="}));
        assert_eq!(ok_json(answer), json!({"bytesValue": "+/8="}));
    }
}

#[tokio::test]
async fn float_query_parameters_accept_nan_and_the_infinities() {
    let (scripted, gateway) = echo_gateway("").await;
    let answer = get(
        &gateway,
        "/v1/echo?double_value=NaN&float_value=-Infinity\
         &repeated_double=Infinity&repeated_double=-Infinity&repeated_double=1e-3\
         &double_wrapper=NaN&float_wrapper=0.5",
    )
    .await;
    let body = ok_json(&answer);
    let (_, mut message) = only_call(&scripted);
    // The harness renders the upstream's view with prost-reflect, which writes
    // a non-finite wrapper as null; the echoed answer shows the NaN arrived.
    assert!(message["double_wrapper"].is_null());
    message
        .as_object_mut()
        .expect("object")
        .remove("double_wrapper")
        .expect("double_wrapper reached the upstream");
    assert_eq!(
        message,
        json!({
            "double_value": "NaN",
            "float_value": "-Infinity",
            "repeated_double": ["Infinity", "-Infinity", 0.001],
            "float_wrapper": 0.5,
        })
    );
    assert_eq!(
        body,
        json!({
            "doubleValue": "NaN",
            "floatValue": "-Infinity",
            "repeatedDouble": ["Infinity", "-Infinity", 0.001],
            "doubleWrapper": "NaN",
            "floatWrapper": 0.5,
        })
    );
}

#[tokio::test]
async fn timestamp_duration_and_field_mask_are_read_from_their_json_strings_in_the_query() {
    let (scripted, gateway) = echo_gateway("").await;
    let answer = get(
        &gateway,
        "/v1/echo?timestamp=2024-01-02T04:04:05.5%2B01:00&duration=-1.5s\
         &field_mask=stringValue,nested.label",
    )
    .await;
    let body = ok_json(&answer);
    let (_, message) = only_call(&scripted);
    assert_eq!(
        message,
        json!({
            "timestamp": "2024-01-02T03:04:05.500Z",
            "duration": "-1.500s",
            "field_mask": "stringValue,nested.label",
        })
    );
    assert_eq!(
        body,
        json!({
            "timestamp": "2024-01-02T03:04:05.500Z",
            "duration": "-1.500s",
            "fieldMask": "stringValue,nested.label",
        })
    );
}

#[tokio::test]
async fn wrapper_query_parameters_keep_presence_of_default_values() {
    let (scripted, gateway) = echo_gateway("").await;
    let answer = get(
        &gateway,
        "/v1/echo?int64_wrapper=0&uint64_wrapper=18446744073709551615&int32_wrapper=-1\
         &uint32_wrapper=0&string_wrapper=&bytes_wrapper=AQI%3D&double_wrapper=0",
    )
    .await;
    let body = ok_json(&answer);
    let (_, message) = only_call(&scripted);
    assert_eq!(
        message,
        json!({
            "double_wrapper": 0.0,
            "int64_wrapper": "0",
            "uint64_wrapper": "18446744073709551615",
            "int32_wrapper": -1,
            "uint32_wrapper": 0,
            "string_wrapper": "",
            "bytes_wrapper": "AQI=",
        })
    );
    assert_eq!(
        body,
        json!({
            "doubleWrapper": 0.0,
            "int64Wrapper": "0",
            "uint64Wrapper": "18446744073709551615",
            "int32Wrapper": -1,
            "uint32Wrapper": 0,
            "stringWrapper": "",
            "bytesWrapper": "AQI=",
        })
    );
}

#[tokio::test]
async fn optional_fields_from_the_query_keep_an_explicit_zero() {
    let (scripted, gateway) = echo_gateway("").await;
    let body = ok_json(&get(&gateway, "/v1/echo?optional_int32=0&optional_string=").await);
    let (_, message) = only_call(&scripted);
    assert_eq!(message, json!({"optional_int32": 0, "optional_string": ""}));
    assert_eq!(body, json!({"optionalInt32": 0, "optionalString": ""}));
}

#[tokio::test]
async fn oneof_member_from_the_query_is_set_even_at_its_default() {
    let (scripted, gateway) = echo_gateway("").await;
    let int = ok_json(&get(&gateway, "/v1/echo?choice_int=0").await);
    let string = ok_json(&get(&gateway, "/v1/echo?choice_string=x").await);
    let nested = ok_json(&get(&gateway, "/v1/echo?choice_nested.label=n").await);
    let calls = scripted.calls();
    assert_eq!(calls[0].message, json!({"choice_int": 0}));
    assert_eq!(calls[1].message, json!({"choice_string": "x"}));
    assert_eq!(calls[2].message, json!({"choice_nested": {"label": "n"}}));
    assert_eq!(int, json!({"choiceInt": 0}));
    assert_eq!(string, json!({"choiceString": "x"}));
    assert_eq!(nested, json!({"choiceNested": {"label": "n"}}));
}

#[tokio::test]
async fn query_parameter_names_may_be_json_names() {
    let (scripted, gateway) = echo_gateway("").await;
    let answer = get(
        &gateway,
        "/v1/echo?stringValue=x&int64Value=5&repeatedString=a&nested.label=l&optionalInt32=1",
    )
    .await;
    let body = ok_json(&answer);
    let (_, message) = only_call(&scripted);
    assert_eq!(
        message,
        json!({
            "int64_value": "5",
            "string_value": "x",
            "nested": {"label": "l"},
            "repeated_string": ["a"],
            "optional_int32": 1,
        })
    );
    assert_eq!(body["int64Value"], "5");
}

#[tokio::test]
async fn query_values_decode_plus_as_space_and_percent_escapes() {
    let (scripted, gateway) = echo_gateway("").await;
    let answer = get(
        &gateway,
        "/v1/echo?string_value=a+b%2Bc%26d%3De%E2%9C%93&repeated%5Fstring=%20",
    )
    .await;
    let body = ok_json(&answer);
    let (_, message) = only_call(&scripted);
    assert_eq!(
        message,
        json!({"string_value": "a b+c&d=e✓", "repeated_string": [" "]})
    );
    assert_eq!(
        body,
        json!({"stringValue": "a b+c&d=e✓", "repeatedString": [" "]})
    );
}

// === body ===

#[tokio::test]
async fn body_field_binds_only_that_field_and_response_body_answers_with_it() {
    let (scripted, gateway) = echo_gateway("").await;
    let answer = send(
        client()
            .put(format!(
                "{}/v1/echo/a%20b/nested?int32_value=7",
                gateway.base
            ))
            .header("content-type", "application/json")
            .body(r#"{"label":"x","count":2,"children":[{"label":"c"}]}"#),
    )
    .await;
    let body = ok_json(&answer);
    let (path, message) = only_call(&scripted);
    assert_eq!(path, ECHO_NESTED);
    assert_eq!(
        message,
        json!({
            "int32_value": 7,
            "string_value": "a b",
            "nested": {"label": "x", "count": 2, "children": [{"label": "c"}]},
        })
    );
    // response_body "nested": only the nested message comes back.
    assert_eq!(
        body,
        json!({"label": "x", "count": 2, "children": [{"label": "c"}]})
    );
}

#[tokio::test]
async fn body_field_with_empty_body_answers_an_empty_response_body_message() {
    let (scripted, gateway) = echo_gateway("").await;
    let answer = send(client().put(format!("{}/v1/echo/s/nested", gateway.base))).await;
    let body = ok_json(&answer);
    let (_, message) = only_call(&scripted);
    assert_eq!(message, json!({"string_value": "s"}));
    assert_eq!(body, json!({}));
}

#[tokio::test]
async fn empty_body_on_a_body_star_route_sends_an_empty_message() {
    let (scripted, gateway) = echo_gateway("").await;
    let answer = send(client().post(format!("{}/v1/echo", gateway.base))).await;
    let body = ok_json(&answer);
    let (path, message) = only_call(&scripted);
    assert_eq!(path, ECHO);
    assert_eq!(message, json!({}));
    assert_eq!(body, json!({}));
}

#[tokio::test]
async fn json_body_with_charset_and_plus_json_content_types_is_accepted() {
    let (scripted, gateway) = echo_gateway("").await;
    for content_type in [
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/vnd.example+json",
    ] {
        let answer = send(
            client()
                .post(format!("{}/v1/echo", gateway.base))
                .header("content-type", content_type)
                .body(r#"{"stringValue":"ct"}"#),
        )
        .await;
        assert_eq!(
            ok_json(&answer),
            json!({"stringValue": "ct"}),
            "{content_type}"
        );
    }
    assert_eq!(scripted.call_count(), 3);
}

// === google.api.HttpBody ===

#[tokio::test]
async fn http_body_request_passes_raw_bytes_and_content_type_both_ways() {
    let (scripted, gateway) = echo_gateway("").await;
    let raw: Vec<u8> = vec![0x89, b'P', b'N', b'G', 0, 0xff, 0xfe, b'{', b'"'];
    let answer = send(
        client()
            .post(format!("{}/v1/raw", gateway.base))
            .header("content-type", "image/png")
            .body(raw.clone()),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), Some("image/png"));
    assert_eq!(answer.body.as_ref(), raw.as_slice());
    let (path, message) = only_call(&scripted);
    assert_eq!(path, ECHO_BODY);
    assert_eq!(
        message,
        json!({"content_type": "image/png", "data": "iVBORwD//nsi"})
    );
}

#[tokio::test]
async fn http_body_request_without_content_type_is_octet_stream() {
    let (scripted, gateway) = echo_gateway("").await;
    let answer = send(
        client()
            .post(format!("{}/v1/raw", gateway.base))
            .body("not json {"),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(answer.body.as_ref(), b"not json {");
    let (_, message) = only_call(&scripted);
    assert_eq!(
        message,
        json!({"content_type": "application/octet-stream", "data": "bm90IGpzb24gew=="})
    );
}

#[tokio::test]
async fn http_body_response_carries_the_upstream_content_type_and_bytes() {
    let (scripted, gateway) = echo_gateway("").await;
    scripted.set_reply(Reply::Json(json!({
        "content_type": "text/csv; charset=utf-8",
        "data": "YSxiCjEsMgo=",
    })));
    let answer = send(
        client()
            .post(format!("{}/v1/raw", gateway.base))
            .header("content-type", "text/plain")
            .body("q"),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.header("content-type"),
        Some("text/csv; charset=utf-8")
    );
    assert_eq!(answer.body.as_ref(), b"a,b\n1,2\n");
    let (_, message) = only_call(&scripted);
    assert_eq!(
        message,
        json!({"content_type": "text/plain", "data": "cQ=="})
    );

    // No content type from the upstream: raw bytes are octet-stream.
    scripted.set_reply(Reply::Json(json!({"data": "AAE="})));
    let answer = send(client().post(format!("{}/v1/raw", gateway.base)).body("q")).await;
    assert_eq!(
        answer.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(answer.body.as_ref(), &[0u8, 1]);
}

// === every JSON kind through Echo ===

#[tokio::test]
async fn echo_round_trips_every_json_kind() {
    let (scripted, gateway) = echo_gateway("").await;
    let input = json!({
        "doubleValue": 0.1,
        "floatValue": 1.5,
        "int32Value": -7,
        "int64Value": 9007199254740993u64,
        "uint32Value": "12",
        "uint64Value": "18446744073709551615",
        "sint32Value": -1,
        "sint64Value": "-9223372036854775808",
        "fixed32Value": 3,
        "fixed64Value": 4,
        "sfixed32Value": -5,
        "sfixed64Value": "-6",
        "boolValue": true,
        "stringValue": "héllo \"q\" \n ✓",
        "bytesValue": "AP8Q",
        "enumValue": "COLOR_RED",
        "nested": {"label": "n", "count": 1, "child": {"label": "c"}, "children": [{"count": 2}, {}]},
        "repeatedDouble": [1, -1.25, "NaN"],
        "repeatedInt64": [1, "-2"],
        "repeatedString": ["", "x"],
        "repeatedBytes": ["", "-_8"],
        "repeatedEnum": ["COLOR_BLUE", 2],
        "repeatedNested": [{"label": "r"}],
        "repeatedBool": [false, true],
        "stringMap": {"a": "1", "": "empty"},
        "intMap": {"-3": {"label": "neg"}, "10": {}},
        "boolEnumMap": {"true": "COLOR_GREEN", "false": 1},
        "stringInt64Map": {"k": "9223372036854775807"},
        "choiceNested": {"label": "chosen"},
        "optionalInt32": 0,
        "optionalString": "o",
        "timestamp": "1999-12-31T23:59:59.123456789Z",
        "duration": "3600s",
        "fieldMask": "nested.child.label,int64Value",
        "structValue": {"k": [1, "two", null, true, {"deep": {}}]},
        "value": {"any": ["thing", 1.5]},
        "listValue": [null, false, "s", 2, [], {}],
        "any": {"@type": "type.googleapis.com/testing.v1.Nested", "label": "in any", "count": 4},
        "empty": {},
        "int64Wrapper": "-1",
        "uint64Wrapper": 2,
        "boolWrapper": true,
        "stringWrapper": "w",
        "bytesWrapper": "AQ==",
        "repeatedTimestamp": ["2024-02-29T00:00:00Z"],
        "resource": "rooms/1"
    });
    let answer = post_json(&gateway, "/v1/echo", &input).await;
    let body = ok_json(&answer);
    let (path, message) = only_call(&scripted);
    assert_eq!(path, ECHO);
    let expected_client = json!({
        "doubleValue": 0.1,
        "floatValue": 1.5,
        "int32Value": -7,
        "int64Value": "9007199254740993",
        "uint32Value": 12,
        "uint64Value": "18446744073709551615",
        "sint32Value": -1,
        "sint64Value": "-9223372036854775808",
        "fixed32Value": 3,
        "fixed64Value": "4",
        "sfixed32Value": -5,
        "sfixed64Value": "-6",
        "boolValue": true,
        "stringValue": "héllo \"q\" \n ✓",
        "bytesValue": "AP8Q",
        "enumValue": "COLOR_RED",
        "nested": {"label": "n", "count": 1, "child": {"label": "c"}, "children": [{"count": 2}, {}]},
        "repeatedDouble": [1.0, -1.25, "NaN"],
        "repeatedInt64": ["1", "-2"],
        "repeatedString": ["", "x"],
        "repeatedBytes": ["", "+/8="],
        "repeatedEnum": ["COLOR_BLUE", "COLOR_GREEN"],
        "repeatedNested": [{"label": "r"}],
        "repeatedBool": [false, true],
        "stringMap": {"a": "1", "": "empty"},
        "intMap": {"-3": {"label": "neg"}, "10": {}},
        "boolEnumMap": {"true": "COLOR_GREEN", "false": "COLOR_RED"},
        "stringInt64Map": {"k": "9223372036854775807"},
        "choiceNested": {"label": "chosen"},
        "optionalInt32": 0,
        "optionalString": "o",
        "timestamp": "1999-12-31T23:59:59.123456789Z",
        "duration": "3600s",
        "fieldMask": "nested.child.label,int64Value",
        "structValue": {"k": [1.0, "two", null, true, {"deep": {}}]},
        "value": {"any": ["thing", 1.5]},
        "listValue": [null, false, "s", 2.0, [], {}],
        "any": {"@type": "type.googleapis.com/testing.v1.Nested", "label": "in any", "count": 4},
        "empty": {},
        "int64Wrapper": "-1",
        "uint64Wrapper": "2",
        "boolWrapper": true,
        "stringWrapper": "w",
        "bytesWrapper": "AQ==",
        "repeatedTimestamp": ["2024-02-29T00:00:00Z"],
        "resource": "rooms/1"
    });
    assert_eq!(body, expected_client);
    // The upstream saw the same message; its rendering uses proto names.
    assert_eq!(message, canonical(&expected_client, true));
    assert_eq!(message["string_int64_map"]["k"], "9223372036854775807");
    assert_eq!(
        message["any"]["@type"],
        "type.googleapis.com/testing.v1.Nested"
    );
    assert_eq!(message["choice_nested"]["label"], "chosen");
}

#[tokio::test]
async fn non_finite_float_wrappers_are_answered_as_strings_not_null() {
    let (scripted, gateway) = echo_gateway("").await;
    let input = json!({
        "doubleWrapper": "NaN",
        "floatWrapper": "-Infinity",
        "nested": {"label": "null"},
        "value": null,
        "structValue": {"n": null},
    });
    let body = ok_json(&post_json(&gateway, "/v1/echo", &input).await);
    assert_eq!(
        body,
        json!({
            "nested": {"label": "null"},
            "structValue": {"n": null},
            "value": null,
            "doubleWrapper": "NaN",
            "floatWrapper": "-Infinity",
        })
    );
    let (_, message) = only_call(&scripted);
    assert!(message.get("double_wrapper").is_some());
    assert!(message.get("float_wrapper").is_some());
}

#[tokio::test]
async fn any_holding_a_well_known_type_uses_the_value_key() {
    let (scripted, gateway) = echo_gateway("").await;
    let input =
        json!({"any": {"@type": "type.googleapis.com/google.protobuf.Duration", "value": "1.5s"}});
    let body = ok_json(&post_json(&gateway, "/v1/echo", &input).await);
    let (_, message) = only_call(&scripted);
    let expected =
        json!({"@type": "type.googleapis.com/google.protobuf.Duration", "value": "1.500s"});
    assert_eq!(message, json!({ "any": expected }));
    assert_eq!(body, json!({ "any": expected }));
}

#[tokio::test]
async fn each_oneof_member_round_trips_through_the_body() {
    let (scripted, gateway) = echo_gateway("").await;
    for (json_member, proto_member, value) in [
        ("choiceString", "choice_string", json!("")),
        ("choiceInt", "choice_int", json!(0)),
        ("choiceNested", "choice_nested", json!({})),
    ] {
        scripted.calls.lock().expect("lock").clear();
        let body = ok_json(&post_json(&gateway, "/v1/echo", &json!({ json_member: value })).await);
        let (_, message) = only_call(&scripted);
        // A set oneof member is present even at its default value.
        assert_eq!(message, json!({ proto_member: value }));
        assert_eq!(body, json!({ json_member: value }));
    }
}

#[tokio::test]
async fn body_accepts_proto_names_and_json_names_mixed() {
    let (scripted, gateway) = echo_gateway("").await;
    let input = json!({
        "string_value": "proto",
        "int64Value": "5",
        "repeated_nested": [{"label": "a"}],
        "stringMap": {"k": "v"},
        "nested": {"label": "n", "children": [{"count": 1}]},
        "optional_int32": 3,
        "bool_wrapper": false,
    });
    let body = ok_json(&post_json(&gateway, "/v1/echo", &input).await);
    let (_, message) = only_call(&scripted);
    assert_eq!(
        message,
        json!({
            "int64_value": "5",
            "string_value": "proto",
            "nested": {"label": "n", "children": [{"count": 1}]},
            "repeated_nested": [{"label": "a"}],
            "string_map": {"k": "v"},
            "optional_int32": 3,
            "bool_wrapper": false,
        })
    );
    assert_eq!(
        body,
        json!({
            "int64Value": "5",
            "stringValue": "proto",
            "nested": {"label": "n", "children": [{"count": 1}]},
            "repeatedNested": [{"label": "a"}],
            "stringMap": {"k": "v"},
            "optionalInt32": 3,
            "boolWrapper": false,
        })
    );
}

#[tokio::test]
async fn null_in_the_body_leaves_a_field_unset() {
    let (scripted, gateway) = echo_gateway("").await;
    let input =
        json!({"stringValue": null, "nested": null, "repeatedString": null, "int32Value": 1});
    let body = ok_json(&post_json(&gateway, "/v1/echo", &input).await);
    let (_, message) = only_call(&scripted);
    assert_eq!(message, json!({"int32_value": 1}));
    assert_eq!(body, json!({"int32Value": 1}));
}

// === output and input options ===

#[tokio::test]
async fn global_use_proto_names_writes_proto_field_names() {
    let (scripted, gateway) = echo_gateway("\n[json]\nuse_proto_names = true\n").await;
    let input = json!({"stringValue": "x", "nested": {"label": "l"}, "repeatedInt64": [1]});
    let body = ok_json(&post_json(&gateway, "/v1/echo", &input).await);
    assert_eq!(
        body,
        json!({"string_value": "x", "nested": {"label": "l"}, "repeated_int64": ["1"]})
    );
    let (_, message) = only_call(&scripted);
    assert_eq!(body, message);
}

#[tokio::test]
async fn emit_unpopulated_writes_fields_at_their_defaults() {
    let (scripted, gateway) = echo_gateway("\n[json]\nemit_unpopulated = true\n").await;
    let body = ok_json(&post_json(&gateway, "/v1/echo", &json!({"stringValue": "x"})).await);
    let (_, message) = only_call(&scripted);
    assert_eq!(message, json!({"string_value": "x"}));
    assert_eq!(body["stringValue"], "x");
    assert_eq!(body["int32Value"], 0);
    assert_eq!(body["int64Value"], "0");
    assert_eq!(body["boolValue"], false);
    assert_eq!(body["bytesValue"], "");
    assert_eq!(body["enumValue"], "COLOR_UNSPECIFIED");
    assert_eq!(body["doubleValue"], 0.0);
    assert_eq!(body["repeatedString"], json!([]));
    assert_eq!(body["stringMap"], json!({}));
    // Fields with presence stay absent when unset.
    for absent in [
        "nested",
        "optionalInt32",
        "choiceInt",
        "timestamp",
        "int64Wrapper",
    ] {
        assert!(body.get(absent).is_none(), "{absent} in {body}");
    }
}

#[tokio::test]
async fn enums_as_numbers_writes_enum_numbers() {
    let (scripted, gateway) = echo_gateway("\n[json]\nenums_as_numbers = true\n").await;
    let input = json!({"enumValue": "COLOR_BLUE", "repeatedEnum": ["COLOR_RED"], "boolEnumMap": {"true": "COLOR_GREEN"}});
    let body = ok_json(&post_json(&gateway, "/v1/echo", &input).await);
    assert_eq!(
        body,
        json!({"enumValue": 3, "repeatedEnum": [1], "boolEnumMap": {"true": 2}})
    );
    let (_, message) = only_call(&scripted);
    assert_eq!(message["enum_value"], "COLOR_BLUE");
}

#[tokio::test]
async fn method_json_options_override_route_options_which_override_global_options() {
    let extra = r#"
[routes.json]
enums_as_numbers = true

[routes.methods.Echo.json]
use_proto_names = false

[json]
use_proto_names = true
"#;
    let (scripted, gateway) = echo_gateway(extra).await;
    // Echo: camelCase (method) and enum numbers (route).
    let echo = ok_json(
        &post_json(
            &gateway,
            "/v1/echo",
            &json!({"enumValue": "COLOR_RED", "stringValue": "e"}),
        )
        .await,
    );
    assert_eq!(echo, json!({"stringValue": "e", "enumValue": 1}));
    // EchoQuery: proto names (global) and enum numbers (route).
    let query = ok_json(&get(&gateway, "/v1/echo?enum_value=COLOR_RED&string_value=q").await);
    assert_eq!(query, json!({"string_value": "q", "enum_value": 1}));
    let calls = scripted.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[0].message,
        json!({"string_value": "e", "enum_value": "COLOR_RED"})
    );
    assert_eq!(
        calls[1].message,
        json!({"string_value": "q", "enum_value": "COLOR_RED"})
    );
}

#[tokio::test]
async fn unknown_body_fields_are_refused_unless_ignore_unknown_fields() {
    let input =
        json!({"stringValue": "a", "bogus": {"x": [1]}, "nested": {"nope": 1, "label": "l"}});

    let (scripted, gateway) = echo_gateway("").await;
    let answer = post_json(&gateway, "/v1/echo", &input).await;
    assert_eq!(gateway_error(&answer, 400, 3), "UNKNOWN_FIELD");
    assert!(
        answer.json()["message"]
            .as_str()
            .expect("message")
            .contains("bogus")
    );
    assert_eq!(scripted.call_count(), 0);

    let (scripted, gateway) = echo_gateway("\n[json]\nignore_unknown_fields = true\n").await;
    let body = ok_json(&post_json(&gateway, "/v1/echo", &input).await);
    let (_, message) = only_call(&scripted);
    assert_eq!(
        message,
        json!({"string_value": "a", "nested": {"label": "l"}})
    );
    assert_eq!(body, json!({"stringValue": "a", "nested": {"label": "l"}}));
}

#[tokio::test]
async fn unknown_query_parameters_are_refused_unless_ignore_unknown_query_parameters() {
    let (scripted, gateway) = echo_gateway("").await;
    let answer = get(&gateway, "/v1/echo?string_value=a&bogus=1").await;
    assert_eq!(gateway_error(&answer, 400, 3), "UNKNOWN_FIELD");
    assert_eq!(scripted.call_count(), 0);

    let extra = "\n[routes.json]\nignore_unknown_query_parameters = true\n";
    let (scripted, gateway) = echo_gateway(extra).await;
    let body = ok_json(&get(&gateway, "/v1/echo?string_value=a&bogus=1&nested.bogus=2").await);
    let (_, message) = only_call(&scripted);
    assert_eq!(message, json!({"string_value": "a"}));
    assert_eq!(body, json!({"stringValue": "a"}));
}

#[tokio::test]
async fn query_parameters_on_a_body_star_route_are_refused_unless_ignored() {
    let (scripted, gateway) = echo_gateway("").await;
    let answer = post_json(
        &gateway,
        "/v1/echo?int32_value=1",
        &json!({"stringValue": "b"}),
    )
    .await;
    assert_eq!(gateway_error(&answer, 400, 3), "INVALID_FIELD");
    assert_eq!(scripted.call_count(), 0);

    let extra = "\n[json]\nignore_unknown_query_parameters = true\n";
    let (scripted, gateway) = echo_gateway(extra).await;
    let answer = post_json(
        &gateway,
        "/v1/echo?int32_value=1",
        &json!({"stringValue": "b"}),
    )
    .await;
    let body = ok_json(&answer);
    let (_, message) = only_call(&scripted);
    // body "*" leaves no field for the query: the parameter is dropped, not merged.
    assert_eq!(message, json!({"string_value": "b"}));
    assert_eq!(body, json!({"stringValue": "b"}));
}

// === methods, 404, 405 ===

#[tokio::test]
async fn head_is_answered_like_get_without_a_body() {
    let (scripted, gateway) = echo_gateway("").await;
    let get_answer = get(&gateway, "/v1/echo?string_value=head").await;
    let get_body = ok_json(&get_answer);
    let head = send(client().head(format!("{}/v1/echo?string_value=head", gateway.base))).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-type"), Some("application/json"));
    assert_eq!(
        head.header("content-length"),
        Some(get_answer.body.len().to_string().as_str())
    );
    let calls = scripted.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].path, ECHO_QUERY);
    assert_eq!(calls[1].message, json!({"string_value": "head"}));
    assert_eq!(get_body, json!({"stringValue": "head"}));
}

#[tokio::test]
async fn unknown_path_is_404_json_without_an_upstream_call() {
    let (scripted, gateway) = echo_gateway("").await;
    for path in ["/v1/nope", "/", "/v1/echo/a/b", "/v2/echo", "/v1/echo/"] {
        let answer = get(&gateway, path).await;
        assert_eq!(gateway_error(&answer, 404, 5), "ROUTE_NOT_FOUND", "{path}");
    }
    assert_eq!(scripted.call_count(), 0);
}

fn allow_set(answer: &Answer) -> BTreeSet<String> {
    answer
        .header("allow")
        .expect("Allow header")
        .split(',')
        .map(|m| m.trim().to_string())
        .collect()
}

#[tokio::test]
async fn wrong_method_is_405_with_allow_header_without_an_upstream_call() {
    let (scripted, gateway) = echo_gateway("").await;
    let answer = send(client().delete(format!("{}/v1/echo", gateway.base))).await;
    assert_eq!(gateway_error(&answer, 405, 12), "METHOD_NOT_ALLOWED");
    assert_eq!(
        allow_set(&answer),
        ["GET", "HEAD", "POST"].map(String::from).into()
    );

    let answer = get(&gateway, "/v1/echo/s/nested").await;
    assert_eq!(gateway_error(&answer, 405, 12), "METHOD_NOT_ALLOWED");
    assert_eq!(allow_set(&answer), ["PUT"].map(String::from).into());

    let answer = send(client().post(format!("{}/v1/echo/COLOR_RED:byEnum", gateway.base))).await;
    assert_eq!(gateway_error(&answer, 405, 12), "METHOD_NOT_ALLOWED");
    assert_eq!(allow_set(&answer), ["GET", "HEAD"].map(String::from).into());

    let answer = get(&gateway, "/v1/nothing").await;
    assert_eq!(gateway_error(&answer, 405, 12), "METHOD_NOT_ALLOWED");
    assert_eq!(allow_set(&answer), ["OPTIONS"].map(String::from).into());

    assert_eq!(scripted.call_count(), 0);
}

#[tokio::test]
async fn custom_options_method_calls_nothing_and_answers_empty_json() {
    let (scripted, gateway) = echo_gateway("").await;
    let answer = send(client().request(
        reqwest::Method::OPTIONS,
        format!("{}/v1/nothing", gateway.base),
    ))
    .await;
    assert_eq!(ok_json(&answer), json!({}));
    let (path, message) = only_call(&scripted);
    assert_eq!(path, NOTHING);
    assert_eq!(message, json!({}));
}

#[tokio::test]
async fn routes_toml_binds_a_method_without_an_annotation() {
    let extra = r#"
[routes.methods.Unannotated]
http = { post = "/v1/unannotated", body = "*" }
"#;
    let (scripted, gateway) = echo_gateway(extra).await;
    let input = json!({"stringValue": "u", "int64Value": "-1"});
    let body = ok_json(&post_json(&gateway, "/v1/unannotated", &input).await);
    let (path, message) = only_call(&scripted);
    assert_eq!(path, UNANNOTATED);
    assert_eq!(message, json!({"string_value": "u", "int64_value": "-1"}));
    assert_eq!(body, input);
}

#[tokio::test]
async fn unannotated_method_is_not_reachable_without_a_binding() {
    let (scripted, gateway) = echo_gateway("").await;
    let answer = post_json(&gateway, "/v1/unannotated", &json!({})).await;
    assert_eq!(gateway_error(&answer, 404, 5), "ROUTE_NOT_FOUND");
    assert_eq!(scripted.call_count(), 0);
}

// === property: Echo answers the canonical JSON of what was posted ===

mod generated {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    use serde_json::{Map, Value, json};

    use super::{canonical, ok_json, post_json};

    fn nested(depth: u32) -> BoxedStrategy<Value> {
        let leaf = (
            proptest::option::of("[a-zA-Z0-9 é✓\"\\\\/]{0,8}"),
            proptest::option::of(any::<i32>()),
        );
        if depth == 0 {
            return leaf
                .prop_map(|(label, count)| {
                    let mut m = Map::new();
                    if let Some(l) = label {
                        m.insert("label".into(), json!(l));
                    }
                    if let Some(c) = count {
                        m.insert("count".into(), json!(c));
                    }
                    Value::Object(m)
                })
                .boxed();
        }
        (
            leaf,
            proptest::option::of(nested(depth - 1)),
            proptest::collection::vec(nested(depth - 1), 0..3),
        )
            .prop_map(|((label, count), child, children)| {
                let mut m = Map::new();
                if let Some(l) = label {
                    m.insert("label".into(), json!(l));
                }
                if let Some(c) = count {
                    m.insert("count".into(), json!(c));
                }
                if let Some(c) = child {
                    m.insert("child".into(), c);
                }
                if !children.is_empty() {
                    m.insert("children".into(), Value::Array(children));
                }
                Value::Object(m)
            })
            .boxed()
    }

    /// A double with a short exact decimal form, so no JSON parser rounds it.
    fn double() -> impl Strategy<Value = f64> {
        (any::<i32>(), 0..8i32).prop_map(|(mantissa, shift)| f64::from(mantissa) / 2f64.powi(shift))
    }

    /// `(json name, proto name, value)` fields of Everything; each is included or not.
    fn fields() -> impl Strategy<Value = Vec<Option<(&'static str, &'static str, Value)>>> {
        let colors = [
            "COLOR_UNSPECIFIED",
            "COLOR_RED",
            "COLOR_GREEN",
            "COLOR_BLUE",
        ];
        let scalars = (
            proptest::option::of(double().prop_map(|v| ("doubleValue", "double_value", json!(v)))),
            proptest::option::of(
                any::<i32>().prop_map(|v| ("int32Value", "int32_value", json!(v))),
            ),
            proptest::option::of(any::<i64>().prop_map(|v| {
                // 64-bit ints may come as strings or as numbers.
                let value = if v % 2 == 0 {
                    json!(v.to_string())
                } else {
                    json!(v)
                };
                ("int64Value", "int64_value", value)
            })),
            proptest::option::of(
                any::<u64>().prop_map(|v| ("uint64Value", "uint64_value", json!(v.to_string()))),
            ),
            proptest::option::of(
                any::<i32>().prop_map(|v| ("sint32Value", "sint32_value", json!(v))),
            ),
            proptest::option::of(
                any::<u32>().prop_map(|v| ("fixed32Value", "fixed32_value", json!(v))),
            ),
            proptest::option::of(any::<bool>().prop_map(|v| ("boolValue", "bool_value", json!(v)))),
            proptest::option::of(
                any::<String>().prop_map(|v| ("stringValue", "string_value", json!(v))),
            ),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16).prop_map(|v| {
                use base64::Engine;
                let text = base64::engine::general_purpose::STANDARD.encode(v);
                ("bytesValue", "bytes_value", json!(text))
            })),
            proptest::option::of(
                proptest::sample::select(colors.to_vec())
                    .prop_map(|v| ("enumValue", "enum_value", json!(v))),
            ),
        );
        let composite = (
            proptest::option::of(nested(2).prop_map(|v| ("nested", "nested", v))),
            proptest::option::of(
                proptest::collection::vec(any::<i64>().prop_map(|v| v.to_string()), 0..4)
                    .prop_map(|v| ("repeatedInt64", "repeated_int64", json!(v))),
            ),
            proptest::option::of(
                proptest::collection::vec("[ -~]{0,6}", 0..4)
                    .prop_map(|v| ("repeatedString", "repeated_string", json!(v))),
            ),
            proptest::option::of(
                proptest::collection::vec(nested(1), 0..3)
                    .prop_map(|v| ("repeatedNested", "repeated_nested", json!(v))),
            ),
            proptest::option::of(
                proptest::collection::btree_map("[a-z]{0,4}", "[a-z0-9]{0,4}", 0..4)
                    .prop_map(|v| ("stringMap", "string_map", json!(v))),
            ),
            proptest::option::of(
                proptest::collection::btree_map(any::<i32>(), nested(0), 0..3).prop_map(|v| {
                    let m: Map<String, Value> =
                        v.into_iter().map(|(k, n)| (k.to_string(), n)).collect();
                    ("intMap", "int_map", Value::Object(m))
                }),
            ),
            proptest::option::of(
                proptest::collection::btree_map(
                    "[a-z]{1,3}",
                    any::<i64>().prop_map(|v| v.to_string()),
                    0..3,
                )
                .prop_map(|v| ("stringInt64Map", "string_int64_map", json!(v))),
            ),
            proptest::option::of(prop_oneof![
                any::<i32>().prop_map(|v| ("choiceInt", "choice_int", json!(v))),
                "[a-z]{0,5}".prop_map(|v| ("choiceString", "choice_string", json!(v))),
                nested(1).prop_map(|v| ("choiceNested", "choice_nested", v)),
            ]),
            proptest::option::of(
                any::<i32>().prop_map(|v| ("optionalInt32", "optional_int32", json!(v))),
            ),
        );
        (scalars, composite).prop_map(
            |((a, b, c, d, e, f, g, h, i, j), (k, l, m, n, o, p, q, r, s))| {
                vec![a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p, q, r, s]
            },
        )
    }

    /// An Everything as JSON, each field under its JSON name or its proto name.
    fn everything() -> impl Strategy<Value = Value> {
        (fields(), any::<u32>()).prop_map(|(fields, naming)| {
            let mut object = Map::new();
            for (i, (json_name, proto_name, value)) in fields.into_iter().flatten().enumerate() {
                let name = if naming & (1 << (i % 32)) == 0 {
                    json_name
                } else {
                    proto_name
                };
                object.insert(name.to_string(), value);
            }
            Value::Object(object)
        })
    }

    #[test]
    fn echo_answers_the_canonical_json_of_every_generated_message() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (scripted, gateway) = runtime.block_on(super::echo_gateway(""));
        let mut runner = TestRunner::new(Config {
            cases: 32,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&everything(), |input| {
                let answer = runtime.block_on(post_json(&gateway, "/v1/echo", &input));
                let body = ok_json(&answer);
                prop_assert_eq!(&body, &canonical(&input, false));
                let calls = scripted.calls();
                let last = calls.last().expect("a call");
                prop_assert_eq!(&last.message, &canonical(&input, true));
                Ok(())
            })
            .expect("every generated message round-trips");
        drop(gateway);
    }
}

// === stable representations ===

/// The keys of a JSON object in the order they were written.
fn written_keys(object: &Value) -> Vec<String> {
    object
        .as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect()
}

#[tokio::test]
async fn map_fields_are_answered_in_key_order_with_the_same_body_and_etag_every_time() {
    // Enough entries that two hash orders agreeing by chance is negligible.
    let string_map: serde_json::Map<String, Value> = (0..24)
        .map(|i| (format!("key-{:02}", (i * 7) % 24), json!(i.to_string())))
        .collect();
    let reply = json!({
        "stringMap": string_map,
        "intMap": {"10": {"label": "ten"}, "-3": {}, "9": {}, "100": {}, "0": {}, "-20": {}},
        "boolEnumMap": {"true": "COLOR_RED", "false": "COLOR_BLUE"},
        "stringInt64Map": {"b": "2", "B": "3", "a": "1", "": "0", "ab": "4"},
        "repeatedNested": [{"label": "no map here"}],
    });
    let scripted = spawn_scripted(pool(), Reply::Json(reply)).await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, "")).await;
    let first = get(&gateway, "/v1/echo").await;
    let first_body = ok_json(&first);
    let etag = first.header("etag").expect("an ETag").to_string();
    let mut expected_strings: Vec<String> = (0..24).map(|i| format!("key-{i:02}")).collect();
    expected_strings.sort();
    assert_eq!(written_keys(&first_body["stringMap"]), expected_strings);
    assert_eq!(
        written_keys(&first_body["intMap"]),
        ["-20", "-3", "0", "9", "10", "100"],
        "integer keys in numeric order"
    );
    assert_eq!(written_keys(&first_body["boolEnumMap"]), ["false", "true"]);
    assert_eq!(
        written_keys(&first_body["stringInt64Map"]),
        ["", "B", "a", "ab", "b"],
        "string keys bytewise"
    );
    for _ in 0..10 {
        let again = get(&gateway, "/v1/echo").await;
        assert_eq!(again.status, 200);
        assert_eq!(again.body, first.body, "the same message, the same bytes");
        assert_eq!(again.header("etag"), Some(etag.as_str()));
    }
    // So revalidation works: the client's tag matches the next answer.
    let revalidated = send(
        client()
            .get(format!("{}/v1/echo", gateway.base))
            .header("if-none-match", &etag),
    )
    .await;
    assert_eq!(revalidated.status, 304);
    assert_eq!(scripted.call_count(), 12);
}

#[tokio::test]
async fn map_in_a_response_body_field_is_answered_in_key_order() {
    let string_map: serde_json::Map<String, Value> = (0..16)
        .rev()
        .map(|i| (format!("k{i:02}"), json!("v")))
        .collect();
    let scripted = spawn_scripted(pool(), Reply::Json(json!({"stringMap": string_map}))).await;
    let gateway = spawn_gateway(&everything_toml(
        scripted.addr,
        r#"
[routes.methods.Unannotated]
http = { get = "/v1/maps", response_body = "string_map" }
"#,
    ))
    .await;
    let first = get(&gateway, "/v1/maps").await;
    let keys = written_keys(&ok_json(&first));
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys.len(), 16);
    assert_eq!(keys, sorted);
    for _ in 0..5 {
        assert_eq!(get(&gateway, "/v1/maps").await.body, first.body);
    }
}

#[tokio::test]
async fn error_detail_maps_are_answered_in_key_order() {
    let metadata: serde_json::Map<String, Value> = (0..16)
        .rev()
        .map(|i| (format!("m{i:02}"), json!(i.to_string())))
        .collect();
    let details = status_details(
        &pool(),
        9,
        "shelf is full",
        &[(
            "google.rpc.ErrorInfo",
            json!({"reason": "SHELF_FULL", "domain": "bookstore.example", "metadata": metadata}),
        )],
    );
    let scripted = spawn_scripted(
        pool(),
        Reply::Status {
            code: 9,
            message: "shelf is full".into(),
            details: Some(details),
        },
    )
    .await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, "")).await;
    let first = get(&gateway, "/v1/echo").await;
    assert_eq!(first.status, 400);
    let keys = written_keys(&first.json()["details"][0]["metadata"]);
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys.len(), 16);
    assert_eq!(keys, sorted);
    for _ in 0..5 {
        assert_eq!(get(&gateway, "/v1/echo").await.body, first.body);
    }
}
