//! Turns one gRPC method plus its HTTP rule (the `google.api.http`
//! annotation or a routes.toml override) into checked bindings: templates
//! parsed, every variable, body and response_body field resolved and checked
//! against the spec's type rules.

use std::ops::Range;

use http::Method;
use prost_reflect::{ExtensionDescriptor, Kind, MethodDescriptor, Value};
use toml::Spanned;

use crate::config::ConfigError;
use crate::config::file::HttpRuleSection;
use crate::route::template::PathTemplate;
use crate::transcode::BodyRule;
use crate::transcode::{FieldPath, text};

/// A google.api.HttpRule, from either source, with where it was written.
#[derive(Debug, Clone)]
pub(super) struct HttpRule {
    /// HTTP method and path template text.
    pub pattern: (Method, String),
    /// `*`, a field path, or empty.
    pub body: String,
    /// A response field path, or empty.
    pub response_body: String,
    /// More bindings of the same method.
    pub additional: Vec<HttpRule>,
    /// Where the rule is written in routes.toml (annotations have none).
    pub span: Option<Range<usize>>,
    /// Where its path template, body and response_body values are written,
    /// so a diagnostic can point at the value that is wrong.
    pub value_spans: ValueSpans,
}

/// Places of a routes.toml rule's values; all `None` for annotations.
#[derive(Debug, Clone, Default)]
pub(super) struct ValueSpans {
    /// The path template string.
    pub template: Option<Range<usize>>,
    /// The `body` string.
    pub body: Option<Range<usize>>,
    /// The `response_body` string.
    pub response_body: Option<Range<usize>>,
}

/// Which value of a rule a mistake is in.
#[derive(Debug, Clone, Copy)]
enum Part {
    Template,
    Body,
    ResponseBody,
}

/// One checked binding.
#[derive(Debug, Clone)]
pub(super) struct Binding {
    /// HTTP method.
    pub http_method: Method,
    /// Parsed path template.
    pub template: PathTemplate,
    /// One field per template variable.
    pub variables: Vec<FieldPath>,
    /// Where the body goes.
    pub body: BodyRule,
    /// Response field answered instead of the whole message.
    pub response_body: Option<FieldPath>,
    /// Where its path template (else its rule) is written, if in routes.toml.
    pub span: Option<Range<usize>>,
}

// === impl HttpRule ===

impl HttpRule {
    /// Reads the method's `google.api.http` annotation, if it has one.
    pub(super) fn from_annotation(
        method: &MethodDescriptor,
        http: &ExtensionDescriptor,
    ) -> Option<HttpRule> {
        let options = method.options();
        if !options.has_extension(http) {
            return None;
        }
        match options.get_extension(http).as_ref() {
            Value::Message(rule) => Self::from_message(rule),
            _ => None,
        }
    }

    fn from_message(rule: &prost_reflect::DynamicMessage) -> Option<HttpRule> {
        let text = |name: &str| match rule.get_field_by_name(name).as_deref() {
            Some(Value::String(s)) => s.clone(),
            _ => String::new(),
        };
        let pattern = ["get", "put", "post", "delete", "patch"]
            .into_iter()
            .find(|name| rule.has_field_by_name(name))
            .map(|name| {
                (
                    Method::from_bytes(name.to_ascii_uppercase().as_bytes()).unwrap_or(Method::GET),
                    text(name),
                )
            })
            .or_else(|| match rule.get_field_by_name("custom").as_deref() {
                Some(Value::Message(custom)) if rule.has_field_by_name("custom") => {
                    let get = |name: &str| match custom.get_field_by_name(name).as_deref() {
                        Some(Value::String(s)) => s.clone(),
                        _ => String::new(),
                    };
                    Method::from_bytes(get("kind").as_bytes())
                        .ok()
                        .map(|m| (m, get("path")))
                }
                _ => None,
            })?;
        let additional = match rule.get_field_by_name("additional_bindings").as_deref() {
            Some(Value::List(list)) => list
                .iter()
                .filter_map(|v| match v {
                    Value::Message(m) => Self::from_message(m),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        Some(HttpRule {
            pattern,
            body: text("body"),
            response_body: text("response_body"),
            additional,
            span: None,
            value_spans: ValueSpans::default(),
        })
    }

    /// Reads a routes.toml `http = {...}` rule.
    pub(super) fn from_config(section: &Spanned<HttpRuleSection>) -> Result<HttpRule, ConfigError> {
        let span = section.span();
        let rule = section.get_ref();
        let mut patterns = Vec::new();
        let mut template_spans = Vec::new();
        for (method, value) in [
            (Method::GET, &rule.get),
            (Method::PUT, &rule.put),
            (Method::POST, &rule.post),
            (Method::DELETE, &rule.delete),
            (Method::PATCH, &rule.patch),
        ] {
            if let Some(path) = value {
                patterns.push((method, path.get_ref().clone()));
                template_spans.push(path.span());
            }
        }
        if let Some(custom) = &rule.custom {
            let method = Method::from_bytes(custom.kind.get_ref().as_bytes()).map_err(|_| {
                ConfigError::at(
                    custom.kind.span(),
                    format!("{:?} is not a valid HTTP method", custom.kind.get_ref()),
                )
            })?;
            patterns.push((method, custom.path.get_ref().clone()));
            template_spans.push(custom.path.span());
        }
        let pattern = match patterns.len() {
            1 => patterns.remove(0),
            0 => {
                return Err(ConfigError::at(span, "the HTTP rule has no method")
                    .hint("add one of get, put, post, delete, patch or custom = { kind, path }"));
            }
            _ => {
                return Err(
                    ConfigError::at(span, "the HTTP rule has more than one method")
                        .hint("put further bindings in additional_bindings"),
                );
            }
        };
        let additional = rule
            .additional_bindings
            .iter()
            .map(HttpRule::from_config)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(HttpRule {
            pattern,
            body: rule
                .body
                .as_ref()
                .map(|b| b.get_ref().clone())
                .unwrap_or_default(),
            response_body: rule
                .response_body
                .as_ref()
                .map(|b| b.get_ref().clone())
                .unwrap_or_default(),
            additional,
            span: Some(span),
            value_spans: ValueSpans {
                template: template_spans.pop(),
                body: rule.body.as_ref().map(Spanned::span),
                response_body: rule.response_body.as_ref().map(Spanned::span),
            },
        })
    }
}

/// Checks a rule (and its additional bindings) against the method's messages.
/// Errors carry `fallback_span` when the rule itself has no place in routes.toml.
pub(super) fn bindings(
    method: &MethodDescriptor,
    rule: &HttpRule,
    fallback_span: Range<usize>,
) -> (Vec<Binding>, Vec<ConfigError>) {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut pending = vec![rule];
    let mut first = true;
    while let Some(rule) = pending.pop() {
        if !first && !rule.additional.is_empty() {
            let span = rule.span.clone().unwrap_or(fallback_span.clone());
            errors.push(ConfigError::at(
                span,
                format!("{}: additional_bindings cannot nest", method.full_name()),
            ));
        }
        first = false;
        pending.extend(rule.additional.iter());
        match binding(method, rule) {
            Ok(b) => out.push(b),
            Err((part, message, hint)) => {
                let value_span = match part {
                    Part::Template => &rule.value_spans.template,
                    Part::Body => &rule.value_spans.body,
                    Part::ResponseBody => &rule.value_spans.response_body,
                };
                let span = value_span
                    .clone()
                    .or(rule.span.clone())
                    .unwrap_or(fallback_span.clone());
                let source = if rule.span.is_some() {
                    ""
                } else {
                    " (in its google.api.http annotation)"
                };
                errors.push(
                    ConfigError::at(span, format!("{}{source}: {message}", method.full_name()))
                        .hint(hint),
                );
            }
        }
    }
    (out, errors)
}

fn binding(method: &MethodDescriptor, rule: &HttpRule) -> Result<Binding, (Part, String, String)> {
    let (http_method, path) = &rule.pattern;
    let template: PathTemplate = path.parse().map_err(|e| {
        (
            Part::Template,
            format!("invalid path template {path:?}: {e}"),
            "templates look like /v1/{name=shelves/*}/books/{book}:verb".to_string(),
        )
    })?;
    let input = method.input();
    let mut variables = Vec::new();
    for variable in &template.variables {
        let dotted = variable.field_path.join(".");
        let field = FieldPath::resolve(&input, &dotted).map_err(|e| {
            (
                Part::Template,
                format!("path variable {{{dotted}}}: {e}"),
                format!(
                    "fields of {} are: {}",
                    input.full_name(),
                    field_names(&input)
                ),
            )
        })?;
        let leaf = field.leaf();
        let what = if leaf.is_map() {
            Some("a map field".to_string())
        } else if leaf.is_list() {
            Some("a repeated field".to_string())
        } else {
            match leaf.kind() {
                Kind::Message(m) if !text::is_text_message(&m) => {
                    Some(format!("a message field ({})", m.full_name()))
                }
                _ => None,
            }
        };
        if let Some(what) = what {
            let hint = match leaf.kind() {
                Kind::Message(m) if !leaf.is_list() && !leaf.is_map() => {
                    match m.fields().find(|f| {
                        !f.is_list() && !f.is_map() && !matches!(f.kind(), Kind::Message(_))
                    }) {
                        Some(inner) => format!(
                            "bind one of its scalar fields instead, e.g. {{{dotted}.{}}}",
                            inner.name()
                        ),
                        None => "take it from the body instead".to_string(),
                    }
                }
                _ => "take repeated and map fields from the body or the query string".to_string(),
            };
            return Err((
                Part::Template,
                format!("path variable {{{dotted}}} is {what}; it must be a singular scalar"),
                hint,
            ));
        }
        variables.push(field);
    }
    let body = match rule.body.as_str() {
        "" => BodyRule::None,
        "*" => BodyRule::Whole,
        dotted => BodyRule::Field(FieldPath::resolve(&input, dotted).map_err(|e| {
            (
                Part::Body,
                format!("body {dotted:?}: {e}"),
                format!(
                    "use \"*\" or one of the fields of {}: {}",
                    input.full_name(),
                    field_names(&input)
                ),
            )
        })?),
    };
    if *http_method == Method::GET && !matches!(body, BodyRule::None) {
        return Err((
            Part::Body,
            "a GET binding cannot have a body".into(),
            "remove body (a GET takes its fields from the path and query string), or bind with post"
                .into(),
        ));
    }
    let output = method.output();
    let response_body = match rule.response_body.as_str() {
        "" => None,
        dotted => Some(FieldPath::resolve(&output, dotted).map_err(|e| {
            (
                Part::ResponseBody,
                format!("response_body {dotted:?}: {e}"),
                format!(
                    "fields of {} are: {}",
                    output.full_name(),
                    field_names(&output)
                ),
            )
        })?),
    };
    Ok(Binding {
        http_method: http_method.clone(),
        template,
        variables,
        body,
        response_body,
        span: rule.value_spans.template.clone().or(rule.span.clone()),
    })
}

fn field_names(message: &prost_reflect::MessageDescriptor) -> String {
    message
        .fields()
        .map(|f| f.name().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
