//! The OpenAPI document and its page on the public listener:
//! `/openapi.json`, `/openapi.yaml` and `/docs`, unless `[openapi] serve =
//! false` or a binding takes the path (the binding wins). Each answer has
//! a strong ETag and `Cache-Control: public, no-cache`, so clients and
//! CDNs keep a copy and revalidate it (a reload changes the document).

use axum::body::Body;
use axum::response::Response;
use http::request::Parts;
use http::{HeaderValue, Method, StatusCode, header};

use crate::cache::validators::{etag, if_none_match};
use crate::openapi::{self, DOCS_PAGE, DOCS_PATH, JSON_PATH, YAML_PATH};
use crate::route::RouteError;
use crate::route::path::NormalizedPath;
use crate::snapshot::Snapshot;

const CACHE_CONTROL: HeaderValue = HeaderValue::from_static("public, no-cache");
const YAML: HeaderValue = HeaderValue::from_static("application/yaml");
const HTML: HeaderValue = HeaderValue::from_static("text/html; charset=utf-8");

/// The answer for one of the document's paths, or `None` to route the
/// request as usual.
pub(super) fn answer(
    snapshot: &Snapshot,
    parts: &Parts,
    path: &NormalizedPath,
) -> Option<Result<Response, RouteError>> {
    let path = path.as_str();
    if !snapshot.settings.openapi.serve
        || ![JSON_PATH, YAML_PATH, DOCS_PATH].contains(&path)
        || openapi::is_bound(&snapshot.routes, path)
    {
        return None;
    }
    if parts.method != Method::GET && parts.method != Method::HEAD {
        return Some(Err(RouteError::MethodNotAllowed {
            method: parts.method.clone(),
            path: path.to_string(),
            allowed: vec![Method::GET, Method::HEAD],
        }));
    }
    let (body, tag, content_type) = if path == DOCS_PATH {
        let page = bytes::Bytes::from_static(DOCS_PAGE.as_bytes());
        let tag = etag(&page);
        (page, tag, HTML)
    } else {
        let rendered = snapshot.openapi.get_or_render(
            &snapshot.plans,
            &snapshot.pool,
            &snapshot.settings.openapi,
        );
        match path == JSON_PATH {
            true => (
                rendered.json.clone(),
                rendered.json_etag.clone(),
                crate::headers::CONTENT_TYPE_JSON,
            ),
            false => (rendered.yaml.clone(), rendered.yaml_etag.clone(), YAML),
        }
    };
    let unchanged =
        (parts.headers.get(header::IF_NONE_MATCH)).is_some_and(|h| if_none_match(h, &tag));
    let mut response = match unchanged {
        true => Response::builder()
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty()),
        false => Response::builder()
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body)),
    }
    .unwrap_or_default();
    let headers = response.headers_mut();
    headers.insert(header::ETAG, tag);
    headers.insert(header::CACHE_CONTROL, CACHE_CONTROL);
    Some(Ok(response))
}
