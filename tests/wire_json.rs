//! The proto3 JSON written straight from wire bytes (transcode::wire_json)
//! is byte for byte what the general path (DynamicMessage, then
//! stable_json) writes, for random messages of every field kind, under
//! every combination of the JSON options; and where it declines, the
//! general path still answers.

use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, Kind, MapKey, MessageDescriptor, Value};
use protogate::descriptors::{DescriptorSource, load};
use protogate::transcode::stable_json;
use protogate::transcode::wire_json::{Options, render};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const PROTO_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");

fn pool() -> DescriptorPool {
    load(&DescriptorSource::Protos {
        files: vec![
            "testing/v1/everything.proto".into(),
            "bookstore/v1/bookstore.proto".into(),
        ],
        include: vec![PROTO_DIR.into()],
    })
    .expect("repo protos compile")
}

fn all_options() -> Vec<Options> {
    (0..16u8)
        .map(|bits| Options {
            proto_names: bits & 1 != 0,
            skip_defaults: bits & 2 != 0,
            enum_numbers: bits & 4 != 0,
            stringify_64: bits & 8 != 0,
        })
        .collect()
}

/// What the gateway wrote before the wire path: decode, then stable_json.
fn general(descriptor: &MessageDescriptor, wire: &[u8], options: &Options) -> Option<Vec<u8>> {
    let message = DynamicMessage::decode(descriptor.clone(), wire).ok()?;
    stable_json::to_vec(&message, &options.serialize_options()).ok()
}

/// Compares both paths on `wire`; returns whether the wire path answered.
fn same_bytes(descriptor: &MessageDescriptor, wire: &[u8], options: &Options) -> bool {
    let Some(fast) = render(descriptor, wire, options) else {
        return false;
    };
    if fast.windows(4).any(|w| w == b"null") {
        // The caller leaves these to the general path (see response.rs).
        return false;
    }
    let expected = general(descriptor, wire, options);
    assert_eq!(
        Some(String::from_utf8_lossy(&fast).into_owned()),
        expected.map(|e| String::from_utf8_lossy(&e).into_owned()),
        "{} from {wire:02x?} with {options:?}",
        descriptor.full_name()
    );
    true
}

/// One of `items` (evaluated before the choice, so they may use `rng` too).
macro_rules! pick {
    ($rng:expr, $items:expr $(,)?) => {{
        let items = $items;
        items[$rng.random_range(0..items.len())]
    }};
}

const STRINGS: &[&str] = &[
    "",
    "a",
    "shelves/1/books/2",
    "quote \" backslash \\ newline \n tab \t",
    "control \u{1} \u{1f}",
    "unicode é 日本 🦀",
    "</script>",
    "nullable",
];

fn random_value(kind: &Kind, rng: &mut StdRng, depth: u32) -> Option<Value> {
    Some(match kind {
        Kind::Double => Value::F64(match rng.random_range(0..8) {
            0 => 0.0,
            1 => -0.0,
            2 => 0.1,
            3 => 1e300,
            4 => f64::NAN,
            5 => f64::NEG_INFINITY,
            6 => f64::from_bits(rng.random()),
            _ => rng.random_range(-1e6..1e6),
        }),
        Kind::Float => Value::F32(match rng.random_range(0..7) {
            0 => 0.0,
            1 => -0.0,
            2 => 0.1,
            3 => f32::INFINITY,
            4 => f32::from_bits(rng.random()),
            _ => rng.random_range(-1e6..1e6),
        }),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Value::I32(pick!(rng, [0, 1, -1, i32::MIN, i32::MAX, rng.random()]))
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            Value::I64(pick!(rng, [0, 1, -1, i64::MIN, i64::MAX, rng.random()]))
        }
        Kind::Uint32 | Kind::Fixed32 => Value::U32(pick!(rng, [0, 1, u32::MAX, rng.random()])),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(pick!(rng, [0, 1, u64::MAX, rng.random()])),
        Kind::Bool => Value::Bool(rng.random()),
        Kind::String => Value::String((*pick(rng, STRINGS)).to_string()),
        Kind::Bytes => {
            let len = rng.random_range(0..8);
            Value::Bytes(
                (0..len)
                    .map(|_| rng.random::<u8>())
                    .collect::<Vec<_>>()
                    .into(),
            )
        }
        // 0..=3 are named; 4 and 7 are not.
        Kind::Enum(_) => Value::EnumNumber(pick!(rng, [0, 1, 2, 3, 4, 7])),
        Kind::Message(inner) => Value::Message(random_message(inner, rng, depth + 1)?),
    })
}

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

fn random_message(
    descriptor: &MessageDescriptor,
    rng: &mut StdRng,
    depth: u32,
) -> Option<DynamicMessage> {
    let name = descriptor.full_name();
    let mut message = DynamicMessage::new(descriptor.clone());
    if name == "google.protobuf.Timestamp" {
        let seconds = match rng.random_range(0..5) {
            0 => 253_402_300_800, // year 10000: out of range
            1 => -62_135_596_800,
            _ => rng.random_range(-10_000_000_000..10_000_000_000),
        };
        let nanos = pick!(
            rng,
            [
                0,
                1_000_000,
                123_456,
                999_999_999,
                rng.random_range(0..1_000_000_000),
            ],
        );
        message.set_field_by_name("seconds", Value::I64(seconds));
        message.set_field_by_name("nanos", Value::I32(nanos));
        return Some(message);
    }
    if name.starts_with("google.protobuf.") && rng.random_bool(0.7) {
        // Other well-known types: present now and then (the wire path
        // declines them), mostly left out so the rest gets exercised.
        return None;
    }
    if depth > 3 {
        return Some(message);
    }
    for field in descriptor.fields() {
        if rng.random_bool(0.45) {
            continue;
        }
        let kind = field.kind();
        let value = if field.is_map() {
            if rng.random_bool(0.85) {
                continue;
            }
            let entry = kind.as_message().expect("map entry").clone();
            let key_kind = entry.map_entry_key_field().kind();
            let value_kind = entry.map_entry_value_field().kind();
            let mut map = std::collections::HashMap::new();
            for _ in 0..rng.random_range(1..3) {
                let key = match random_value(&key_kind, rng, depth)? {
                    Value::String(s) => MapKey::String(s),
                    Value::I32(v) => MapKey::I32(v),
                    Value::Bool(v) => MapKey::Bool(v),
                    _ => continue,
                };
                if let Some(value) = random_value(&value_kind, rng, depth) {
                    map.insert(key, value);
                }
            }
            Value::Map(map)
        } else if field.is_list() {
            let len = rng.random_range(0..4);
            Value::List(
                (0..len)
                    .filter_map(|_| random_value(&kind, rng, depth))
                    .collect(),
            )
        } else {
            match random_value(&kind, rng, depth) {
                Some(value) => value,
                None => continue,
            }
        };
        message.set_field(&field, value);
    }
    Some(message)
}

#[test]
fn random_messages_render_the_same_bytes_on_both_paths() {
    let pool = pool();
    let descriptors = [
        "testing.v1.Everything",
        "bookstore.v1.Book",
        "testing.v1.Nested",
    ]
    .map(|name| pool.get_message_by_name(name).expect("message"));
    let options = all_options();
    let (mut cases, mut answered) = (0, 0);
    for seed in 0..3000u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let descriptor = &descriptors[seed as usize % descriptors.len()];
        let Some(message) = random_message(descriptor, &mut rng, 0) else {
            continue;
        };
        let wire = message.encode_to_vec();
        for options in &options {
            cases += 1;
            answered += usize::from(same_bytes(descriptor, &wire, options));
        }
    }
    // The comparison means something only if the wire path took many
    // cases; it declines Everything's maps and other well-known types,
    // which random messages often carry (about 40% answered here).
    assert!(
        answered * 4 > cases,
        "wire path answered {answered} of {cases}"
    );
}

#[test]
fn reordered_repeated_and_corrupted_wire_bytes_never_disagree() {
    let pool = pool();
    let descriptor = pool
        .get_message_by_name("testing.v1.Everything")
        .expect("message");
    let options = Options::default();
    for seed in 0..3000u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let (Some(a), Some(b)) = (
            random_message(&descriptor, &mut rng, 0),
            random_message(&descriptor, &mut rng, 0),
        ) else {
            continue;
        };
        // Two messages back to back: the second's singular fields win and
        // its messages merge into the first's, which the wire path declines
        // or matches.
        let mut wire = a.encode_to_vec();
        wire.extend(b.encode_to_vec());
        same_bytes(&descriptor, &wire, &options);
        // One byte changed or the end cut off: declined, or the same answer.
        let mut corrupted = a.encode_to_vec();
        if !corrupted.is_empty() {
            let at = rng.random_range(0..corrupted.len());
            corrupted[at] = rng.random();
            same_bytes(&descriptor, &corrupted, &options);
            corrupted.truncate(at);
            same_bytes(&descriptor, &corrupted, &options);
        }
    }
}

#[test]
fn unpacked_repeated_scalars_and_unknown_fields_are_read_as_decoders_do() {
    let pool = pool();
    let descriptor = pool
        .get_message_by_name("testing.v1.Everything")
        .expect("message");
    // repeated_int64 (21) as two unpacked records and one packed record,
    // then an unknown field 75 (varint), then resource (80) after it.
    let mut wire = vec![
        0xa8, 0x01, 0x05, 0xa8, 0x01, 0x7f, 0xaa, 0x01, 0x02, 0x01, 0x02,
    ];
    wire.extend([0xd8, 0x04, 0x2a]);
    wire.extend([0x82, 0x05, 0x01, b'r']);
    let fast = render(&descriptor, &wire, &Options::default()).expect("wire path answers");
    assert_eq!(
        String::from_utf8(fast).expect("UTF-8"),
        r#"{"repeatedInt64":["5","127","1","2"],"resource":"r"}"#
    );
    assert!(same_bytes(&descriptor, &wire, &Options::default()));
}

#[test]
fn the_bookstore_answers_take_the_wire_path() {
    let pool = pool();
    let book = pool.get_message_by_name("bookstore.v1.Book").expect("Book");
    let mut message = DynamicMessage::new(book.clone());
    message.set_field_by_name("name", Value::String("shelves/1/books/2".into()));
    message.set_field_by_name("id", Value::I64(2));
    message.set_field_by_name("tags", Value::List(vec![Value::String("grpc".into())]));
    let wire = message.encode_to_vec();
    for options in all_options() {
        assert!(same_bytes(&book, &wire, &options), "{options:?}");
    }
}
