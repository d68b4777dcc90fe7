//! One binding as an OpenAPI operation: its parameters, its request body
//! per the `body` rule, its success answer per `response_body` (raw bytes
//! for `google.api.HttpBody`, a stream's media types for a streaming
//! method), the error answer, and who may call it.

use serde_json::{Map, Value, json};

use super::comments::{Comments, summary};
use super::hooks;
use super::path::{OpenApiPath, openapi_path};
use super::query;
use super::schema::{Schemas, Variant};
use super::security::Schemes;
use crate::plan::MethodPlan;
use crate::stream::Format;
use crate::transcode::BodyRule;

/// A client stream's request body.
const STREAM_IN: &str = "A stream of request messages: one JSON message per line (NDJSON), each described by the schema.";

/// A server stream's answer, in each format.
const STREAM_OUT: &str = "A stream of messages, in the format the client's Accept asks for. \
`application/x-ndjson`: one JSON message per line, each described by the schema; an error after \
the first message is a last line `{\"error\": google.rpc.Status}`. `text/event-stream`: each \
message is the `data:` of one event; an error is an `error` event. `application/json`: one array \
of the messages; an error after the first is told by the `grpc-status` trailer.";

/// What an operation is built with.
pub(super) struct Builder<'s, 'a> {
    pub(super) schemas: &'s mut Schemas<'a>,
    pub(super) comments: &'a Comments,
    pub(super) schemes: &'s mut Schemes,
}

impl Builder<'_, '_> {
    /// `plan` as (OpenAPI path, operation).
    pub(super) fn operation(&mut self, plan: &MethodPlan, operation_id: String) -> (String, Value) {
        let transcode = &plan.transcode;
        let method = &transcode.method;
        let variant = Variant {
            proto_names: transcode.json.render.proto_names,
            enums_as_numbers: transcode.json.render.enum_numbers,
            input: false,
        };
        let OpenApiPath {
            path,
            mut parameters,
        } = openapi_path(&plan.template, transcode, self.schemas, variant);
        parameters.extend(query::parameters(transcode, self.schemas, variant));
        parameters.extend(hooks::extra_parameters(plan));

        let mut operation = Map::new();
        operation.insert("tags".into(), json!([method.parent_service().name()]));
        operation.insert("operationId".into(), operation_id.into());
        if let Some(text) = self
            .comments
            .get(method.parent_file().name(), method.path())
        {
            operation.insert("summary".into(), summary(text).into());
            operation.insert("description".into(), text.into());
        }
        if !parameters.is_empty() {
            operation.insert("parameters".into(), Value::Array(parameters));
        }
        if let Some(body) = self.request_body(plan, variant) {
            operation.insert("requestBody".into(), body);
        }
        operation.insert("responses".into(), self.responses(plan, variant));
        operation.insert("security".into(), self.schemes.requirements(&plan.auth));
        let options = method.method_descriptor_proto().options.as_ref();
        if options.and_then(|o| o.deprecated).unwrap_or(false) {
            operation.insert("deprecated".into(), true.into());
        }
        operation.insert("x-grpc-method".into(), method.full_name().into());
        (path, Value::Object(operation))
    }

    fn request_body(&mut self, plan: &MethodPlan, variant: Variant) -> Option<Value> {
        let transcode = &plan.transcode;
        let input = Variant {
            input: true,
            ..variant
        };
        if transcode.takes_http_body() {
            return Some(json!({
                "description": "Raw bytes, passed on with their Content-Type (google.api.HttpBody).",
                "content": { "*/*": {} },
            }));
        }
        let schema = match &transcode.body {
            BodyRule::None => return None,
            BodyRule::Whole => self.schemas.message(&transcode.method.input(), input),
            BodyRule::Field(field) => self.schemas.field(field.leaf(), input),
        };
        if plan.stream.as_ref().is_some_and(|s| s.client_streaming) {
            return Some(json!({
                "description": STREAM_IN,
                "content": { "application/x-ndjson": { "schema": schema } },
            }));
        }
        Some(json!({ "content": { "application/json": { "schema": schema } } }))
    }

    fn responses(&mut self, plan: &MethodPlan, variant: Variant) -> Value {
        let success = hooks::success_status(plan);
        let mut answer = Map::new();
        let streams = plan.stream.as_ref().is_some_and(|s| s.server_streaming);
        let about = match streams && !plan.transcode.answers_http_body() {
            true => STREAM_OUT,
            false => "Success.",
        };
        answer.insert("description".into(), about.into());
        if success.has_body {
            answer.insert("content".into(), self.success_content(plan, variant));
        }
        let mut headers = Map::new();
        if let Some(location) = &success.location {
            headers.insert(
                "Location".into(),
                json!({ "description": location, "schema": { "type": "string" } }),
            );
        }
        headers.extend(hooks::extra_headers(plan));
        if !headers.is_empty() {
            answer.insert("headers".into(), Value::Object(headers));
        }
        let mut responses = Map::new();
        responses.insert(success.status.to_string(), Value::Object(answer));
        responses.extend(hooks::extra_responses(plan));
        responses.insert(
            "default".into(),
            json!({ "$ref": "#/components/responses/Error" }),
        );
        Value::Object(responses)
    }

    fn success_content(&mut self, plan: &MethodPlan, variant: Variant) -> Value {
        let transcode = &plan.transcode;
        if transcode.answers_http_body() {
            return json!({ "*/*": {} });
        }
        let schema = match &transcode.response_body {
            Some(field) => self.schemas.field(field.leaf(), variant),
            None => self.schemas.message(&transcode.method.output(), variant),
        };
        let Some(stream) = plan.stream.as_ref().filter(|s| s.server_streaming) else {
            return json!({ "application/json": { "schema": schema } });
        };
        let formats = match stream.format {
            Some(pinned) => vec![pinned],
            None => vec![Format::Ndjson, Format::Sse, Format::JsonArray],
        };
        let mut content = Map::new();
        for format in formats {
            let media = match format {
                Format::Ndjson => json!({ "schema": schema }),
                Format::Sse => json!({ "schema": { "type": "string" } }),
                Format::JsonArray => json!({ "schema": { "type": "array", "items": schema } }),
            };
            content.insert(format.media_type().into(), media);
        }
        Value::Object(content)
    }
}
