//! Compiles a streaming method's options (`stream_format`,
//! `stream_idle_timeout`, `stream_keepalive`, `sse`) into its
//! [`stream::Policy`]; `stream_timeout` becomes its upstream budget. A
//! method's own keys replace the route's.

use std::ops::Range;
use std::time::Duration;

use prost_reflect::{Kind, MethodDescriptor};
use toml::Spanned;

use crate::config::ConfigError;
use crate::config::file::{MethodSection, RouteSection, SseSection};
use crate::stream::{self, Format, SseOptions};
use crate::transcode::FieldPath;

/// How long the head of a stream waits for its first message, and how
/// often an idle event stream gets a comment, unless `stream_keepalive`
/// says otherwise: below the 30 s or more that proxies commonly allow an
/// idle response.
const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(15);

/// The method's streaming policy (`None` for a unary method) and the
/// budget of its calls.
pub(super) fn compile(
    method: &MethodDescriptor,
    route: &RouteSection,
    section: Option<&MethodSection>,
    timeout: Duration,
    span: Range<usize>,
    errors: &mut Vec<ConfigError>,
) -> (Option<stream::Policy>, Duration) {
    let streaming = method.is_client_streaming() || method.is_server_streaming();
    if !streaming {
        if let Some(section) = section
            && sets_stream_keys(section)
        {
            errors.push(ConfigError::at(
                span,
                format!(
                    "{} is a unary method; stream_* and sse settings apply only to streaming methods",
                    method.full_name()
                ),
            ));
        }
        return (None, timeout);
    }
    let pick = |get: fn(&MethodSection) -> Option<Duration>, route_value: Option<Duration>| {
        section.and_then(get).or(route_value)
    };
    let format = section
        .and_then(|m| m.stream_format.as_ref())
        .or(route.stream_format.as_ref())
        .and_then(|name| format(name, errors));
    // Events are written only for server streams of JSON messages.
    let writes_events =
        method.is_server_streaming() && method.output().full_name() != crate::transcode::HTTP_BODY;
    let sse = section
        .and_then(|m| m.sse.as_ref())
        .or(route.sse.as_ref())
        .filter(|_| writes_events)
        .map(|sse| sse_options(method, sse, errors))
        .unwrap_or_default();
    let keepalive = pick(|m| m.stream_keepalive, route.stream_keepalive)
        .unwrap_or(DEFAULT_KEEPALIVE)
        .max(Duration::from_millis(10));
    let policy = stream::Policy {
        client_streaming: method.is_client_streaming(),
        server_streaming: method.is_server_streaming(),
        format,
        idle_timeout: pick(|m| m.stream_idle_timeout, route.stream_idle_timeout),
        keepalive,
        sse,
    };
    let budget = pick(|m| m.stream_timeout, route.stream_timeout).unwrap_or(timeout);
    (Some(policy), budget)
}

fn sets_stream_keys(section: &MethodSection) -> bool {
    section.stream_format.is_some()
        || section.stream_timeout.is_some()
        || section.stream_idle_timeout.is_some()
        || section.stream_keepalive.is_some()
        || section.sse.is_some()
}

fn format(name: &Spanned<String>, errors: &mut Vec<ConfigError>) -> Option<Format> {
    let found = Format::from_name(name.get_ref());
    if found.is_none() {
        errors.push(
            ConfigError::at(
                name.span(),
                format!("unknown stream_format '{}'", name.get_ref()),
            )
            .hint("use \"ndjson\", \"sse\" or \"json\""),
        );
    }
    found
}

fn sse_options(
    method: &MethodDescriptor,
    sse: &Spanned<SseSection>,
    errors: &mut Vec<ConfigError>,
) -> SseOptions {
    let section = sse.get_ref();
    let mut field = |name: &Option<Spanned<String>>| {
        let name = name.as_ref()?;
        match FieldPath::resolve(&method.output(), name.get_ref()) {
            Ok(path) if is_scalar(&path) => Some(path),
            Ok(_) => {
                errors.push(ConfigError::at(
                    name.span(),
                    format!(
                        "field '{}' of {} is not a single scalar (string, number, bool or enum)",
                        name.get_ref(),
                        method.output().full_name()
                    ),
                ));
                None
            }
            Err(e) => {
                errors.push(ConfigError::at(name.span(), e.to_string()));
                None
            }
        }
    };
    SseOptions {
        id: field(&section.id),
        event: field(&section.event),
        retry: section.retry,
    }
}

fn is_scalar(path: &FieldPath) -> bool {
    let leaf = path.leaf();
    !leaf.is_list() && !leaf.is_map() && !matches!(leaf.kind(), Kind::Message(_))
}
