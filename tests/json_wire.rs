//! A JSON request body written straight to wire bytes
//! (transcode::json_wire) sets the same message as the general path
//! (strict check, then prost-reflect's reader), for random messages of every
//! field kind in every JSON spelling, and for bodies bent to hit each rule;
//! where the two could differ the wire path declines and the general path
//! answers, errors included.

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method};
use prost::Message as _;
use prost_reflect::{DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions};
use protogate::route::path::normalize;
use protogate::snapshot::Compiled;
use protogate::transcode::json_wire::{Target, encode};
use protogate::transcode::request::{HttpInput, general};
use protogate::transcode::{self, body_json, query};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[path = "support/messages.rs"]
mod messages;

use messages::{pool, random_message, random_messages};

/// The message the general path reads from `json`, canonically encoded.
fn general_message(descriptor: &MessageDescriptor, json: &[u8]) -> Option<Vec<u8>> {
    let options = DeserializeOptions::new();
    let message = body_json::parse(descriptor, None, &[], json, &options).ok()?;
    Some(message.encode_to_vec())
}

/// Compares both paths on `json`; returns whether the wire path answered.
fn same_message(descriptor: &MessageDescriptor, json: &[u8]) -> bool {
    let target = Target {
        message: descriptor,
        field: None,
        bound: &[],
        max_depth: 64,
    };
    let mut buf = BytesMut::new();
    if encode(&target, json, &mut buf).is_none() {
        return false;
    }
    // Field order and packing may differ on the wire; what the upstream
    // decodes may not.
    let fast = DynamicMessage::decode(descriptor.clone(), buf.freeze())
        .expect("the wire path writes decodable bytes")
        .encode_to_vec();
    let text = String::from_utf8_lossy(json);
    let expected = general_message(descriptor, json)
        .unwrap_or_else(|| panic!("the wire path took a body the general path refuses: {text}"));
    assert_eq!(fast, expected, "{} from {text}", descriptor.full_name());
    true
}

fn json_spellings() -> Vec<SerializeOptions> {
    (0..16u8)
        .map(|bits| {
            SerializeOptions::new()
                .use_proto_field_name(bits & 1 != 0)
                .skip_default_fields(bits & 2 != 0)
                .use_enum_numbers(bits & 4 != 0)
                .stringify_64_bit_integers(bits & 8 != 0)
        })
        .collect()
}

/// The message's proto3 JSON; `None` for one that has none (a Timestamp
/// out of range).
fn to_json(message: &DynamicMessage, options: &SerializeOptions) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::new(&mut out);
    message
        .serialize_with_options(&mut serializer, options)
        .ok()?;
    Some(out)
}

#[test]
fn random_bodies_set_the_same_message_on_both_paths() {
    let spellings = json_spellings();
    let (mut cases, mut answered) = (0, 0);
    for (descriptor, message) in random_messages(2000) {
        for options in &spellings {
            let Some(json) = to_json(&message, options) else {
                continue;
            };
            cases += 1;
            answered += usize::from(same_message(&descriptor, &json));
        }
    }
    // Meaningful only if the wire path took many cases; it declines
    // Everything's maps and most well-known types, which random messages
    // often carry.
    assert!(
        answered * 4 > cases,
        "wire path answered {answered} of {cases}"
    );
}

/// Keys that collide, are unknown or are bound, and values at the edges
/// of each reading rule.
const KEYS: &[&str] = &[
    "int32Value",
    "int64_value",
    "uint32Value",
    "uint64Value",
    "sint32Value",
    "sint64Value",
    "fixed32Value",
    "fixed64Value",
    "sfixed32Value",
    "sfixed64Value",
    "floatValue",
    "doubleValue",
    "boolValue",
    "stringValue",
    "bytesValue",
    "enumValue",
    "nested",
    "repeatedInt64",
    "repeated_int64",
    "repeatedDouble",
    "repeatedBytes",
    "repeatedEnum",
    "repeatedBool",
    "repeatedNested",
    "optionalInt32",
    "optional_string",
    "timestamp",
    "choiceString",
    "choice_int",
    "choiceNested",
    "stringMap",
    "zzz",
    "repeatedTimestamp",
    "label",
    "count",
    "child",
    "children",
    "[x.y]",
];

const VALUES: &[&str] = &[
    "null",
    "0",
    "-0",
    "1",
    "-1",
    "1.0",
    "1.5",
    "-1.5",
    "1e3",
    "1e40",
    "-1e40",
    "2147483648",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "-9223372036854775808",
    "\"1\"",
    "\"-1\"",
    "\"+1\"",
    "\"01\"",
    "\"1.0\"",
    "\"1e3\"",
    "\" 1\"",
    "\"NaN\"",
    "\"Infinity\"",
    "\"-Infinity\"",
    "\"inf\"",
    "\"nan\"",
    "\"AAEC\"",
    "\"AAE=\"",
    "\"AA-_\"",
    "\"AA+/\"",
    "\"A\"",
    "\"\"",
    "\"x\\u0041\"",
    "\"COLOR_RED\"",
    "\"COLOR_BLUE\"",
    "\"RED\"",
    "\"BOGUS\"",
    "true",
    "false",
    "[]",
    "[1,2]",
    "[null]",
    "[\"1\",2]",
    "[{}]",
    "{}",
    "{\"value\":\"v\"}",
    "{\"zzz\":1}",
    "\"2024-03-01T12:00:00Z\"",
    "\"2024-03-01T12:00:00.123456789Z\"",
    "\"2024-03-01T12:00:00+01:00\"",
    "\"9999-12-31T23:59:59Z\"",
    "\"0000-01-01T00:00:00Z\"",
    "[\"2024-03-01T12:00:00Z\"]",
];

#[test]
fn bent_bodies_never_disagree() {
    let pool = pool();
    let descriptor = pool
        .get_message_by_name("testing.v1.Everything")
        .expect("message");
    let options = SerializeOptions::new();
    let mut answered = 0;
    for seed in 0..6000u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let message = random_message(&descriptor, &mut rng, 0);
        let mut json = message
            .and_then(|m| to_json(&m, &options))
            .unwrap_or_else(|| b"{}".to_vec());
        for _ in 0..rng.random_range(1..4) {
            let openings: Vec<usize> = (json.iter().enumerate())
                .filter(|(_, b)| **b == b'{')
                .map(|(i, _)| i + 1)
                .collect();
            let at = openings[rng.random_range(0..openings.len())];
            let key = KEYS[rng.random_range(0..KEYS.len())];
            let value = VALUES[rng.random_range(0..VALUES.len())];
            let separator = if json.get(at) == Some(&b'}') { "" } else { "," };
            let entry = format!("\"{key}\":{value}{separator}");
            json.splice(at..at, entry.bytes());
        }
        match rng.random_range(0..20) {
            0 => json.extend_from_slice(b" x"),
            1 => json.truncate(json.len() / 2),
            2 => json = b"null".to_vec(),
            _ => {}
        }
        answered += usize::from(same_message(&descriptor, &json));
    }
    // Most bent bodies repeat a key and are declined; the rest must agree.
    assert!(answered > 100, "wire path answered {answered} of 6000");
}

fn bookstore(dir: &std::path::Path) -> Compiled {
    let path = dir.join("routes.toml");
    let proto_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");
    let toml = format!(
        "[proto]\nfiles = [\"bookstore/v1/bookstore.proto\"]\ninclude = [\"{proto_dir}\"]\n\
         [upstreams.bookstore]\nendpoints = [\"http://127.0.0.1:1\"]\n\
         [[routes]]\nservice = \"bookstore.v1.Bookstore\"\nupstream = \"bookstore\"\nauth = \"none\"\n"
    );
    std::fs::write(&path, toml).expect("write routes.toml");
    let loaded = protogate::config::load(&path).expect("parses");
    protogate::snapshot::compile(&loaded).expect("compiles")
}

/// Transcodes one request both ways: (the gateway's answer, the general path's).
type BothWays = (
    Result<Bytes, transcode::TranscodeError>,
    Result<Bytes, transcode::TranscodeError>,
);

fn both_ways(compiled: &Compiled, method: Method, target: &str, body: &str) -> BothWays {
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let path = normalize(path).expect("valid path");
    let found = compiled.routes.find(&method, &path).expect("route");
    let plan = &compiled.plans.get(found.binding).transcode;
    let json = HeaderValue::from_static("application/json");
    let input = || HttpInput {
        captures: &found.captures,
        query,
        content_type: Some(&json),
        body: Bytes::copy_from_slice(body.as_bytes()),
        max_json_depth: 64,
        multipart: None,
    };
    (transcode::request(plan, input()), general(plan, input()))
}

#[test]
fn bookstore_requests_match_with_path_variables_and_body_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let compiled = bookstore(dir.path());
    let book = r#"{"title":"T","author":"A","genre":"GENRE_FICTION","pageCount":"512","tags":["a","b"],"publishTime":"2024-03-01T12:00:00Z","rating":4.25,"inStock":true}"#;
    let cases = [
        (Method::POST, "/v1/shelves/7/books", book.to_string()),
        (Method::POST, "/v1/shelves/0/books", "{}".to_string()),
        (Method::POST, "/v1/shelves/7/books", String::new()),
        (Method::POST, "/v1/shelves/7/books", "null".to_string()),
        (
            Method::POST,
            "/v1/shelves/7/books",
            r#"{"title":null}"#.to_string(),
        ),
        (
            Method::PATCH,
            "/v1/shelves/7/books/9",
            r#"{"title":"New"}"#.to_string(),
        ),
        (
            Method::POST,
            "/v1/shelves/7/books/9:publish",
            "{}".to_string(),
        ),
        (Method::GET, "/v1/shelves/7/books/9", String::new()),
        (Method::GET, "/v1/books/shelves/1/books/2", String::new()),
        (
            Method::POST,
            "/v1/shelves",
            r#"{"theme":"Rust"}"#.to_string(),
        ),
        (
            Method::GET,
            "/v1/shelves/7/books?pageSize=10&page_token=a%20b+c",
            String::new(),
        ),
        (
            Method::GET,
            "/v1/shelves/7/books?page_size=0&page_token=",
            String::new(),
        ),
        (
            Method::GET,
            "/v1/books:search?query=rust&genres=GENRE_FICTION&genres=2&genres=0&inStockOnly=true",
            String::new(),
        ),
        (
            Method::GET,
            "/v1/books:search?publishedAfter=2024-03-01T12:00:00Z",
            String::new(),
        ),
        (Method::GET, "/v1/books:search?&&query=", String::new()),
    ];
    for (method, path, body) in cases {
        let (fast, general) = both_ways(&compiled, method.clone(), path, &body);
        let (fast, general) = (fast.expect("transcodes"), general.expect("transcodes"));
        let route = path.split('?').next().unwrap_or(path);
        let found = compiled
            .routes
            .find(&method, &normalize(route).expect("valid"))
            .expect("route");
        let input = compiled.plans.get(found.binding).transcode.method.input();
        let decode = |framed: Bytes| {
            let message =
                DynamicMessage::decode(input.clone(), framed.slice(5..)).expect("decodes");
            message.encode_to_vec()
        };
        assert_eq!(decode(fast), decode(general), "{method} {path} {body}");
    }
}

#[test]
fn bodies_the_wire_path_declines_get_the_general_paths_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let compiled = bookstore(dir.path());
    let cases = [
        // The path binds book.id; the body may not set it too.
        (Method::PATCH, "/v1/shelves/7/books/9", r#"{"id":"10"}"#),
        // Given twice, under its JSON and its proto name.
        (
            Method::POST,
            "/v1/shelves/7/books",
            r#"{"pageCount":1,"page_count":2}"#,
        ),
        (Method::POST, "/v1/shelves/7/books", r#"{"title":"T"} {}"#),
        (
            Method::POST,
            "/v1/shelves/7/books",
            r#"{"genre":"NOT_A_GENRE"}"#,
        ),
        (Method::POST, "/v1/shelves/7/books", r#"{"pageCount":1.5}"#),
        (
            Method::POST,
            "/v1/shelves/7/books/9:publish",
            r#"{"shelf":"8"}"#,
        ),
        (
            Method::GET,
            "/v1/shelves/7/books?pageSize=1&page_size=2",
            "",
        ),
        (Method::GET, "/v1/shelves/7/books?shelf=8", ""),
        (Method::GET, "/v1/shelves/7/books?pageSize=ten", ""),
        (Method::GET, "/v1/books:search?genres=BOGUS", ""),
        (Method::GET, "/v1/books:search?query=%zz", ""),
        (Method::POST, "/v1/shelves/7/books?book.title=x", "{}"),
        // Unknown parameters are refused unless the route ignores them.
        (Method::GET, "/v1/shelves/7/books?api_key=k", ""),
        (Method::POST, "/v1/shelves/7/books?title=x", "{}"),
    ];
    for (method, path, body) in cases {
        let (fast, general) = both_ways(&compiled, method.clone(), path, body);
        let case = format!("{method} {path} {body}");
        let (fast, general) = (fast.expect_err(&case), general.expect_err(&case));
        assert_eq!(fast.to_string(), general.to_string(), "{case}");
    }
}

#[test]
fn the_bookstore_create_body_takes_the_wire_path() {
    let pool = pool();
    let book = pool.get_message_by_name("bookstore.v1.Book").expect("Book");
    let body = br#"{"title":"Designing Data-Intensive Gateways","author":"Grace B. Liskov-Knuth","genre":"GENRE_NONFICTION","pageCount":"512","tags":["api","http"],"publishTime":"2024-03-01T12:00:00Z","rating":4.25,"inStock":true}"#;
    assert!(same_message(&book, body));
}

#[test]
fn plain_query_parameters_take_the_wire_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let compiled = bookstore(dir.path());
    let plan_of = |method: &Method, path: &str| {
        let found = (compiled.routes)
            .find(method, &normalize(path).expect("valid"))
            .expect("route");
        compiled.plans.get(found.binding).transcode.clone()
    };
    let list = plan_of(&Method::GET, "/v1/shelves/7/books");
    let search = plan_of(&Method::GET, "/v1/books:search");
    let mut buf = BytesMut::new();
    assert!(query::to_wire(&list, "pageSize=10&page_token=abc", &mut buf).is_some());
    assert!(query::to_wire(&search, "genres=GENRE_FICTION&genres=2&query=a+b", &mut buf).is_some());
    // Given twice, bound by the path, or a well-known type: the general path's.
    assert!(query::to_wire(&list, "pageSize=1&page_size=2", &mut buf).is_none());
    assert!(query::to_wire(&list, "shelf=8", &mut buf).is_none());
    assert!(query::to_wire(&search, "publishedAfter=2024-03-01T12:00:00Z", &mut buf).is_none());
}
