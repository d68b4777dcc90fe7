//! The proto3 JSON written straight from wire bytes (transcode::wire_json)
//! is byte for byte what the general path (DynamicMessage, then
//! stable_json) writes, for random messages of every field kind, under
//! every combination of the JSON options; and where it declines, the
//! general path still answers.

use prost::Message as _;
use prost_reflect::{DynamicMessage, MessageDescriptor, Value};
use protogate::transcode::stable_json;
use protogate::transcode::wire_json::{Options, render};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

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

#[path = "support/messages.rs"]
mod messages;

use messages::{pool, random_message, random_messages};

#[test]
fn random_messages_render_the_same_bytes_on_both_paths() {
    let options = all_options();
    let (mut cases, mut answered) = (0, 0);
    for (descriptor, message) in random_messages(3000) {
        let wire = message.encode_to_vec();
        for options in &options {
            cases += 1;
            answered += usize::from(same_bytes(&descriptor, &wire, options));
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
