//! The OpenAPI 3.1 document of the gateway's HTTP surface, built from the
//! compiled snapshot: every documented binding (additional bindings too)
//! with its path and query parameters, request body per `body` rule,
//! answer per `response_body`, the `google.rpc.Status` error on every
//! operation, and the security schemes of the auth providers. Types follow
//! the proto3 JSON mapping under each binding's JSON options; the .proto
//! comments are the descriptions. Served at `/openapi.json`,
//! `/openapi.yaml` (with `/docs` to read it) by `pipeline::published`, and
//! printed by `protogate openapi`.

mod comments;
pub mod hooks;
mod operation;
mod path;
mod query;
mod schema;
mod security;
mod yaml;

use std::collections::HashMap;
use std::sync::OnceLock;

use bytes::Bytes;
use http::HeaderValue;
use prost_reflect::DescriptorPool;
use serde_json::{Map, Value, json};

use crate::config::ConfigError;
use crate::config::openapi::OpenApiSection;
use crate::plan::Plans;
use crate::route::RouteTable;

/// Where the JSON document is served.
pub const JSON_PATH: &str = "/openapi.json";
/// Where the YAML document is served.
pub const YAML_PATH: &str = "/openapi.yaml";
/// Where the human-readable page is served.
pub const DOCS_PATH: &str = "/docs";
/// The page at [`DOCS_PATH`]: it fetches [`JSON_PATH`] and lists the
/// operations; written here, embedded, with no script or style from elsewhere.
pub const DOCS_PAGE: &str = include_str!("openapi/docs.html");

/// The HTTP methods a Path Item can hold.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// `[openapi]`, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Serve the document and the page on the public listener.
    pub serve: bool,
    /// `info.title`.
    pub title: String,
    /// `info.version`.
    pub version: String,
    /// `info.description`.
    pub description: Option<String>,
    /// `servers[].url`.
    pub servers: Vec<String>,
}

/// The document in both forms, with their validators.
#[derive(Debug)]
pub struct Rendered {
    /// `application/json`.
    pub json: Bytes,
    /// Strong ETag of [`Rendered::json`].
    pub json_etag: HeaderValue,
    /// `application/yaml`.
    pub yaml: Bytes,
    /// Strong ETag of [`Rendered::yaml`].
    pub yaml_etag: HeaderValue,
}

/// A snapshot's document, rendered by the first request that wants it (a
/// reload makes a new snapshot, so a new document).
#[derive(Debug, Default)]
pub struct Published {
    rendered: OnceLock<Rendered>,
}

// === impl Settings ===

impl Settings {
    /// Compiles `[openapi]`; a server URL must be absolute (`https://…`) or
    /// a path (`/api`).
    pub fn compile(section: &OpenApiSection, errors: &mut Vec<ConfigError>) -> Settings {
        let mut servers = Vec::new();
        for server in &section.servers {
            let url = server.get_ref();
            let absolute = url.parse::<http::Uri>().is_ok_and(|uri| {
                matches!(uri.scheme_str(), Some("http" | "https")) && uri.authority().is_some()
            });
            let relative = url.starts_with('/') && url.parse::<http::uri::PathAndQuery>().is_ok();
            if absolute || relative {
                servers.push(url.clone());
            } else {
                errors.push(
                    ConfigError::at(server.span(), format!("invalid OpenAPI server URL '{url}'"))
                        .hint("write an absolute URL (https://api.example.com) or a path (/api)"),
                );
            }
        }
        Settings {
            serve: section.serve,
            title: section.title.clone(),
            version: section.version.clone(),
            description: section.description.clone(),
            servers,
        }
    }
}

/// A warning for each of the document's paths that a binding takes: the
/// binding wins there, and the document is not served at that path.
pub fn shadowed_paths(routes: &RouteTable) -> Vec<String> {
    [JSON_PATH, YAML_PATH, DOCS_PATH]
        .into_iter()
        .filter(|path| is_bound(routes, path))
        .map(|path| format!("a binding takes {path}: it is served there instead of the OpenAPI document ({path} answers as the binding does)"))
        .collect()
}

/// Whether any binding, of any method, matches `path`.
pub fn is_bound(routes: &RouteTable, path: &str) -> bool {
    let Ok(path) = crate::route::path::normalize(path) else {
        return false;
    };
    !matches!(
        routes.find(&http::Method::GET, &path),
        Err(crate::route::RouteError::NotFound { .. })
    )
}

// === impl Published ===

impl Published {
    /// The rendered document, built now if this is the first ask.
    pub fn get_or_render(
        &self,
        plans: &Plans,
        pool: &DescriptorPool,
        settings: &Settings,
    ) -> &Rendered {
        self.rendered.get_or_init(|| render(plans, pool, settings))
    }
}

/// The document as JSON and YAML bytes with their ETags.
pub fn render(plans: &Plans, pool: &DescriptorPool, settings: &Settings) -> Rendered {
    let document = document(plans, pool, settings);
    let json = Bytes::from(serde_json::to_vec_pretty(&document).unwrap_or_default());
    let yaml = Bytes::from(yaml::to_yaml(&document));
    Rendered {
        json_etag: crate::cache::validators::etag(&json),
        yaml_etag: crate::cache::validators::etag(&yaml),
        json,
        yaml,
    }
}

/// The OpenAPI 3.1.0 document of every documented binding in `plans`.
pub fn document(plans: &Plans, pool: &DescriptorPool, settings: &Settings) -> Value {
    let comments = comments::Comments::of(pool);
    let mut schemas = schema::Schemas::new(pool, &comments);
    let mut schemes = security::Schemes::default();
    let mut paths = Map::new();
    let mut tags: Vec<Value> = Vec::new();
    let mut operation_ids: HashMap<String, usize> = HashMap::new();
    // OpenAPI 3.1 has a field for these methods only; a custom one
    // (`custom = { kind = "PURGE" }`) cannot be described.
    let describable = |plan: &&crate::plan::MethodPlan| {
        METHODS.contains(&plan.http_method.as_str().to_ascii_lowercase().as_str())
    };
    for plan in plans.iter().filter(|p| p.documented).filter(describable) {
        let method = &plan.transcode.method;
        let service = method.parent_service();
        if !tags.iter().any(|t| t["name"] == service.name()) {
            let mut tag = json!({ "name": service.name() });
            if let Some(text) = comments.get(service.parent_file().name(), service.path()) {
                tag["description"] = text.into();
            }
            tags.push(tag);
        }
        let id = format!("{}_{}", service.name(), method.name());
        let seen = operation_ids.entry(id.clone()).or_insert(0);
        *seen += 1;
        let id = match *seen {
            1 => id,
            n => format!("{id}_{n}"),
        };
        let mut builder = operation::Builder {
            schemas: &mut schemas,
            comments: &comments,
            schemes: &mut schemes,
        };
        let (path, operation) = builder.operation(plan, id);
        let item = paths.entry(path).or_insert_with(|| json!({}));
        item[plan.http_method.as_str().to_ascii_lowercase()] = operation;
    }
    let error = match pool.get_message_by_name("google.rpc.Status") {
        Some(status) => schemas.message(&status, schema::Variant::default()),
        None => json!({ "type": "object" }),
    };
    let mut components = json!({
        "schemas": schemas.into_components(),
        "responses": { "Error": {
            "description": "An error, shaped like google.rpc.Status: its code (google.rpc.Code), a message, and details such as google.rpc.ErrorInfo.",
            "content": { "application/json": { "schema": error } },
        } },
    });
    let schemes = schemes.into_map();
    if !schemes.is_empty() {
        components["securitySchemes"] = Value::Object(schemes);
    }
    let mut info = json!({ "title": settings.title, "version": settings.version });
    if let Some(description) = &settings.description {
        info["description"] = description.as_str().into();
    }
    let mut document = json!({ "openapi": "3.1.0", "info": info });
    if !settings.servers.is_empty() {
        let servers: Vec<Value> = settings
            .servers
            .iter()
            .map(|url| json!({ "url": url }))
            .collect();
        document["servers"] = Value::Array(servers);
    }
    document["tags"] = Value::Array(tags);
    document["paths"] = Value::Object(paths);
    document["components"] = components;
    document
}
