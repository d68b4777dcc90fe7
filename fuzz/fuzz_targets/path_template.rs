//! Template parsing never panics, and what parses round-trips through Display.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protogate::route::template::PathTemplate;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(template) = text.parse::<PathTemplate>() {
        let again: PathTemplate = template.to_string().parse().expect("Display output parses");
        assert_eq!(again, template);
    }
});
