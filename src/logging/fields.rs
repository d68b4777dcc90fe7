//! The text log's field formatter. It writes exactly what tracing-subscriber's
//! `DefaultFields` writes without colours, but it writes the common field
//! types directly. `DefaultFields` styles every field name (a no-op without
//! colours, but not a free one) and formats every value through
//! `core::fmt`, quoting each string character by character. With the access
//! log on, that was ~16,000 of a cache hit's ~46,500 instructions.
//!
//! Only plain fields take the short path: a string, an integer or a bool
//! named other than `message`, `r#…` or `log.…`. Every other case (the
//! message, errors, raw identifiers, tracing-log's metadata) is handed to
//! `DefaultVisitor` itself, so those keep its escaping rules exactly. With
//! colours on, `DefaultFields` is used as it is (see `logging::init`).

use std::fmt;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};

/// `DefaultFields` without colours, faster for plain fields.
#[derive(Debug, Default)]
pub(super) struct PlainFields;

impl<'a> MakeVisitor<Writer<'a>> for PlainFields {
    type Visitor = PlainVisitor<'a>;

    fn make_visitor(&self, writer: Writer<'a>) -> PlainVisitor<'a> {
        PlainVisitor {
            writer,
            is_empty: true,
            result: Ok(()),
        }
    }
}

/// Writes one event's or span's fields, `name=value` separated by spaces.
pub(super) struct PlainVisitor<'a> {
    writer: Writer<'a>,
    /// No field written yet: the next one needs no separating space.
    is_empty: bool,
    result: fmt::Result,
}

impl PlainVisitor<'_> {
    /// Fields that `DefaultVisitor` treats specially.
    fn is_plain(field: &Field) -> bool {
        let name = field.name();
        name != "message" && !name.starts_with("r#") && !name.starts_with("log.")
    }

    /// Writes the separator, the name and `=`.
    fn start(&mut self, field: &Field) -> fmt::Result {
        if !std::mem::take(&mut self.is_empty) {
            self.writer.write_char(' ')?;
        }
        self.writer.write_str(field.name())?;
        self.writer.write_char('=')
    }

    /// Lets `DefaultVisitor` write one field, with its own rules.
    fn delegate(&mut self, field: &Field, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        if self.result.is_err() {
            return;
        }
        let mut default = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut default);
        self.result = default.finish();
        // tracing-log's metadata fields are the ones `DefaultVisitor` skips;
        // every other field is now on the line.
        if !field.name().starts_with("log.") {
            self.is_empty = false;
        }
    }

    /// Writes a plain field's name and value.
    fn plain(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        self.result = self.start(field).and_then(|()| value(&mut self.writer));
    }
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        match Self::is_plain(field) {
            true => self.plain(field, |writer| write_quoted(writer, value)),
            false => self.delegate(field, |default| default.record_str(field, value)),
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        match Self::is_plain(field) {
            true => self.plain(field, |writer| {
                writer.write_str(itoa::Buffer::new().format(value))
            }),
            false => self.delegate(field, |default| default.record_u64(field, value)),
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        match Self::is_plain(field) {
            true => self.plain(field, |writer| {
                writer.write_str(itoa::Buffer::new().format(value))
            }),
            false => self.delegate(field, |default| default.record_i64(field, value)),
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        match Self::is_plain(field) {
            true => self.plain(field, |writer| {
                writer.write_str(if value { "true" } else { "false" })
            }),
            false => self.delegate(field, |default| default.record_bool(field, value)),
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.delegate(field, |default| default.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match Self::is_plain(field) {
            true => self.plain(field, |writer| write!(writer, "{value:?}")),
            false => self.delegate(field, |default| default.record_debug(field, value)),
        }
    }
}

impl VisitOutput<fmt::Result> for PlainVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for PlainVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

/// Writes `value` as `<str as Debug>` does. A string of printable ASCII
/// without `"` or `\` is written as it is, between quotes; anything else
/// (escapes, control characters, non-ASCII) goes through `Debug` itself.
fn write_quoted(writer: &mut Writer<'_>, value: &str) -> fmt::Result {
    let as_is = value
        .bytes()
        .all(|b| matches!(b, b' '..=b'~') && b != b'"' && b != b'\\');
    if !as_is {
        return write!(writer, "{value:?}");
    }
    writer.write_char('"')?;
    writer.write_str(value)?;
    writer.write_char('"')
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;
    use crate::logging::tests::Writes;

    #[derive(Debug)]
    struct Caused(io::Error);

    impl fmt::Display for Caused {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("outer failure")
        }
    }

    impl std::error::Error for Caused {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    /// Events and spans with every kind of field: plain and escaped strings,
    /// integers, bools, floats, display and debug values, options, raw
    /// identifiers, messages and errors.
    fn emit() {
        let span = tracing::info_span!(
            "request",
            id = 7u64,
            path = "/a b",
            r#type = "raw",
            late = tracing::field::Empty
        );
        let _entered = span.enter();
        span.record("late", "recorded \"later\"");
        tracing::info!(
            target: "protogate::access",
            request_id = "0123456789abcdef0123456789abcdef",
            path = "/v1/shelves/1/books/2",
            status = 200u16,
            bytes = 404u64,
            delta = -5i64,
            ok = true,
            ratio = 0.25f64,
            huge = u128::MAX,
            quoted = "say \"hi\" \\ there",
            newline = "a\nb\tc\r",
            unicode = "café ☕",
            control = "\u{1b}[31mred",
            empty = "",
            tick = "it's",
            shown = %"display: no quotes",
            listed = ?vec![1, 2],
            some = Some("x"),
            none = None::<&str>,
            r#type = "raw field",
            "message with {} and \"quotes\"",
            42
        );
        let error = Caused(io::Error::other("inner cause"));
        tracing::warn!(error = &error as &dyn std::error::Error, "failed");
        let alone = io::Error::other("no source");
        tracing::warn!(error = &alone as &dyn std::error::Error);
        tracing::info!(message = "explicit \u{1b}[0m message field", after = 1u64);
        tracing::info!(count = 3u64);
        tracing::info!("only a message");
    }

    fn lines_of<N>(fields: N) -> String
    where
        N: for<'w> tracing_subscriber::fmt::FormatFields<'w> + Send + Sync + 'static,
    {
        let writes = Writes::default();
        let writer = writes.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .fmt_fields(fields)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = writes.0.lock().expect("lock").concat();
        String::from_utf8(bytes).expect("utf-8")
    }

    #[test]
    fn lines_are_those_of_tracing_subscribers_default_fields() {
        let ours = lines_of(PlainFields);
        let theirs = lines_of(tracing_subscriber::fmt::format::DefaultFields::new());
        assert_eq!(ours.lines().count(), 6, "{ours}");
        assert_eq!(ours, theirs);
    }

    #[test]
    fn plain_strings_are_quoted_and_others_escaped_as_debug_does() {
        for value in [
            "plain",
            "",
            "it's",
            "a\"b",
            "back\\slash",
            "tab\there",
            "é",
            "\u{7f}",
        ] {
            let mut line = String::new();
            write_quoted(&mut Writer::new(&mut line), value).expect("written");
            assert_eq!(line, format!("{value:?}"));
        }
    }
}
