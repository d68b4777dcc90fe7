//! The test protos, and random messages of every field kind, for the tests that compare
//! the gateway's fast transcoding paths with the general ones.

use prost_reflect::{DescriptorPool, DynamicMessage, Kind, MapKey, MessageDescriptor, Value};
use protogate::descriptors::{DescriptorSource, load};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const PROTO_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");

/// The repository's test protos: `testing.v1.Everything` and the bookstore.
pub(crate) fn pool() -> DescriptorPool {
    load(&DescriptorSource::Protos {
        files: vec![
            "testing/v1/everything.proto".into(),
            "bookstore/v1/bookstore.proto".into(),
        ],
        include: vec![PROTO_DIR.into()],
    })
    .expect("repo protos compile")
}

/// For each seed below `count`, a random message of one of three types
/// (every field kind, the bookstore's Book, a recursive one), with its
/// descriptor; seeds whose message has nothing to compare are skipped.
pub(crate) fn random_messages(count: u64) -> Vec<(MessageDescriptor, DynamicMessage)> {
    let pool = pool();
    let descriptors = [
        "testing.v1.Everything",
        "bookstore.v1.Book",
        "testing.v1.Nested",
    ]
    .map(|name| pool.get_message_by_name(name).expect("message"));
    (0..count)
        .filter_map(|seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            let descriptor = &descriptors[seed as usize % descriptors.len()];
            let message = random_message(descriptor, &mut rng, 0)?;
            Some((descriptor.clone(), message))
        })
        .collect()
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

pub(crate) fn random_message(
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
