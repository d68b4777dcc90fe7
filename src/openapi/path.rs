//! A `google.api.http` path template as an OpenAPI path and its path
//! parameters. OpenAPI path parameters are one segment each (clients escape
//! a `/` in a value, and the gateway keeps `%2F` as data), so a variable
//! over several segments, `{name=shelves/*/books/*}`, is written out: its
//! literals stay literal and each `*` becomes a parameter of its own
//! (`name_1`, `name_2`), described as a part of `name`. A nested field's
//! parameter joins its path with `_` (`{book.id}` → `{book_id}`). A `**` cannot be
//! written as one OpenAPI segment: it is one parameter whose description
//! says it may span segments. See docs/decisions/0005-openapi.md.

use serde_json::{Value, json};

use super::schema::{Schemas, Variant};
use crate::route::template::{PathTemplate, Segment, Variable};
use crate::transcode::Plan;

/// An OpenAPI path and the parameters its template expressions name.
pub(super) struct OpenApiPath {
    /// E.g. `/v1/books/shelves/{name_1}/books/{name_2}`.
    pub(super) path: String,
    /// One `in: path` parameter per template expression.
    pub(super) parameters: Vec<Value>,
}

/// Writes `template` (with `plan`'s resolved variables) as an OpenAPI path.
pub(super) fn openapi_path(
    template: &PathTemplate,
    plan: &Plan,
    schemas: &mut Schemas<'_>,
    variant: Variant,
) -> OpenApiPath {
    let mut path = String::new();
    let mut parameters = Vec::new();
    let mut unnamed = 0;
    let mut index = 0;
    while index < template.segments.len() {
        path.push('/');
        let variable = template
            .variables
            .iter()
            .enumerate()
            .find(|(_, v)| v.start == index);
        if let Some((position, variable)) = variable {
            let field = plan.variables.get(position).map(|f| f.leaf());
            write_variable(
                template,
                variable,
                field,
                &mut path,
                &mut parameters,
                schemas,
                variant,
            );
            index = variable.end.max(index + 1);
            continue;
        }
        match &template.segments[index] {
            Segment::Literal(text) => path.push_str(text),
            wildcard => {
                unnamed += 1;
                let name = format!("segment_{unnamed}");
                path.push_str(&format!("{{{name}}}"));
                parameters.push(wildcard_parameter(
                    &name,
                    wildcard,
                    "An unnamed wildcard segment of the template.".into(),
                ));
            }
        }
        index += 1;
    }
    if let Some(verb) = &template.verb {
        path.push(':');
        path.push_str(verb);
    }
    OpenApiPath { path, parameters }
}

fn write_variable(
    template: &PathTemplate,
    variable: &Variable,
    field: Option<&prost_reflect::FieldDescriptor>,
    path: &mut String,
    parameters: &mut Vec<Value>,
    schemas: &mut Schemas<'_>,
    variant: Variant,
) {
    let dotted = variable.field_path.join(".");
    // `book.id` is a legal parameter name, but tools that fill templates
    // with format strings read the dot as attribute access: `book_id`.
    let name = variable.field_path.join("_");
    let segments = &template.segments[variable.start..variable.end];
    if let [Segment::Single] = segments {
        path.push_str(&format!("{{{name}}}"));
        let schema = match field {
            Some(field) => schemas.kind(&field.kind(), variant),
            None => json!({ "type": "string" }),
        };
        parameters.push(json!({
            "name": name, "in": "path", "required": true, "schema": schema,
            "description": format!("Sets the request field `{dotted}`."),
        }));
        return;
    }
    let shape: Vec<String> = segments
        .iter()
        .map(|s| match s {
            Segment::Literal(text) => text.clone(),
            Segment::Single => "*".into(),
            Segment::Multi => "**".into(),
        })
        .collect();
    let shape = shape.join("/");
    let wildcards = segments
        .iter()
        .filter(|s| !matches!(s, Segment::Literal(_)))
        .count();
    let mut written = Vec::new();
    let mut k = 0;
    for segment in segments {
        let text = match segment {
            Segment::Literal(text) => text.clone(),
            wildcard => {
                k += 1;
                let name = match wildcards {
                    1 => name.clone(),
                    _ => format!("{name}_{k}"),
                };
                let about = format!(
                    "Part {k} of the request field `{dotted}`, which the path sets to `{shape}` with each wildcard filled in."
                );
                parameters.push(wildcard_parameter(&name, wildcard, about));
                format!("{{{name}}}")
            }
        };
        written.push(text);
    }
    path.push_str(&written.join("/"));
}

fn wildcard_parameter(name: &str, segment: &Segment, about: String) -> Value {
    match segment {
        Segment::Multi => json!({
            "name": name, "in": "path", "required": true,
            "schema": { "type": "string" },
            "description": format!("{about} `**`: any number of segments; its slashes must be sent unescaped, since the gateway treats `%2F` as data."),
        }),
        _ => json!({
            "name": name, "in": "path", "required": true,
            "schema": { "type": "string", "pattern": "^[^/]+$" },
            "description": about,
        }),
    }
}
