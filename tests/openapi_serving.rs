//! How the OpenAPI document is published: `/openapi.json` and
//! `/openapi.yaml` with validators and revalidation, rebuilt by a reload,
//! valid against the OpenAPI 3.1 schema (openapi-spec-validator, from
//! PyPI, installed by .ci/run), printed by `protogate openapi`, switched
//! off by `[openapi] serve = false`, yielding to a binding on its path, and
//! read by the `/docs` page in headless Chromium.

#[allow(dead_code)]
#[path = "browser/chromium.rs"]
mod chromium;
#[path = "openapi/fixtures.rs"]
mod fixtures;
mod support;

use std::process::Command;

use serde_json::Value;
use support::{bookstore_toml, client, spawn_bookstore, spawn_gateway};

/// Runs python3 with `script`; the test fails with its output if it fails.
fn python(script: &str, args: &[&std::path::Path]) -> String {
    let output = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs (.ci/run installs its packages)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "python3 failed:\n{text}");
    text
}

/// Validates both documents with openapi-spec-validator and checks the
/// YAML reads as the same document as the JSON.
const VALIDATE: &str = r#"
import json, sys, yaml
from openapi_spec_validator import validate
from openapi_spec_validator.validation import OpenAPIV31SpecValidator
with open(sys.argv[1]) as f: doc = json.load(f)
with open(sys.argv[2]) as f: from_yaml = yaml.safe_load(f)
validate(doc, cls=OpenAPIV31SpecValidator)
validate(from_yaml, cls=OpenAPIV31SpecValidator)
assert from_yaml == doc, "the YAML document differs from the JSON one"
print("valid", len(doc["paths"]))
"#;

async fn validate_served(base: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (json_path, yaml_path) = (
        dir.path().join("openapi.json"),
        dir.path().join("openapi.yaml"),
    );
    for (url, path) in [("/openapi.json", &json_path), ("/openapi.yaml", &yaml_path)] {
        let body = client()
            .get(format!("{base}{url}"))
            .send()
            .await
            .expect("GET")
            .bytes()
            .await
            .expect("body");
        std::fs::write(path, body).expect("write");
    }
    let out = python(VALIDATE, &[&json_path, &yaml_path]);
    assert!(out.starts_with("valid"), "{out}");
}

#[tokio::test]
async fn the_demo_and_every_rule_documents_validate_against_openapi_3_1() {
    let demo = fixtures::demo().await;
    validate_served(&demo.base).await;
    let scripted = support::spawn_scripted(support::pool(), support::Reply::Echo).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("t.secret");
    std::fs::write(&secret, "s".repeat(64)).expect("secret");
    let gateway = spawn_gateway(&fixtures::every_rule_toml(scripted.addr, &secret)).await;
    validate_served(&gateway.base).await;
}

#[tokio::test]
async fn the_documents_carry_validators_and_answer_304_to_a_matching_if_none_match() {
    let demo = fixtures::demo().await;
    for (path, media) in [
        ("/openapi.json", "application/json"),
        ("/openapi.yaml", "application/yaml"),
    ] {
        let first = client()
            .get(format!("{}{path}", demo.base))
            .send()
            .await
            .expect("GET");
        assert_eq!(first.status(), 200);
        assert_eq!(first.headers()["content-type"], media);
        assert_eq!(first.headers()["cache-control"], "public, no-cache");
        let etag = first.headers()["etag"].clone();
        let again = client()
            .get(format!("{}{path}", demo.base))
            .header("if-none-match", etag.clone())
            .send()
            .await
            .expect("GET");
        assert_eq!(again.status(), 304, "{path}");
        assert_eq!(again.headers()["etag"], etag);
    }
    let post = client()
        .post(format!("{}/openapi.json", demo.base))
        .send()
        .await
        .expect("POST");
    assert_eq!(post.status(), 405);
    assert_eq!(post.headers()["allow"], "GET, HEAD");
}

#[tokio::test]
async fn a_reload_rebuilds_the_document() {
    let demo = fixtures::demo().await;
    let before: Value = client()
        .get(format!("{}/openapi.json", demo.base))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON");
    assert!(before["paths"]["/v1/shelves"].is_object());
    let (bookstore, _) = spawn_bookstore().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("routes.toml");
    let hidden = bookstore_toml(bookstore, "openapi = false\n[openapi]\ntitle = \"After\"\n")
        .replace("{proto}", support::PROTO_DIR);
    std::fs::write(&path, hidden).expect("write");
    demo.gateway
        .gateway
        .replace(support::compile_snapshot(&path).await);
    let after: Value = client()
        .get(format!("{}/openapi.json", demo.base))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON");
    assert_eq!(after["info"]["title"], "After");
    assert_eq!(
        after["paths"],
        serde_json::json!({}),
        "the route hides its methods now"
    );
}

#[tokio::test]
async fn serve_false_turns_the_paths_off_and_a_binding_on_a_path_wins() {
    let (bookstore, _) = spawn_bookstore().await;
    let off = spawn_gateway(&bookstore_toml(bookstore, "[openapi]\nserve = false\n")).await;
    for path in ["/openapi.json", "/openapi.yaml", "/docs"] {
        let response = client()
            .get(format!("{}{path}", off.base))
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), 404, "{path}");
    }
    let shadowed = spawn_gateway(&bookstore_toml(
        bookstore,
        "[routes.methods.ListShelves]\nhttp = { get = \"/docs\" }\n",
    ))
    .await;
    let docs: Value = client()
        .get(format!("{}/docs", shadowed.base))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("the binding's JSON");
    assert!(docs["shelves"].is_array(), "{docs}");
    let spec: Value = client()
        .get(format!("{}/openapi.json", shadowed.base))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON");
    assert!(spec["paths"]["/docs"]["get"].is_object());
}

#[test]
fn protogate_openapi_prints_the_document_and_check_warns_of_a_shadowed_path() {
    let repo = env!("CARGO_MANIFEST_DIR");
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_protogate"))
            .args(args)
            .current_dir(repo)
            .output()
            .expect("runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8")
    };
    let json: Value =
        serde_json::from_str(&run(&["openapi", "--config", "routes.toml"])).expect("JSON");
    assert_eq!(json["openapi"], "3.1.0");
    assert!(json["paths"]["/v1/shelves/{shelf}/books/{book}"]["get"].is_object());
    let yaml = run(&["openapi", "--config", "routes.toml", "--format", "yaml"]);
    assert!(yaml.starts_with("\"openapi\": \"3.1.0\"\n"), "{yaml}");

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("routes.toml");
    let toml = bookstore_toml(
        "127.0.0.1:9".parse().expect("addr"),
        "[routes.methods.ListShelves]\nhttp = { get = \"/openapi.yaml\" }\n",
    );
    std::fs::write(&path, toml.replace("{proto}", support::PROTO_DIR)).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_protogate"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("a binding takes /openapi.yaml"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_docs_page_lists_every_operation_in_a_browser() {
    let demo = fixtures::demo().await;
    let page = client()
        .get(format!("{}/docs", demo.base))
        .send()
        .await
        .expect("GET");
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert!(
        page.text()
            .await
            .expect("text")
            .contains("fetch(\"openapi.json\"")
    );
    let dom = chromium::dump_dom(
        &format!("{}/docs", demo.base),
        &["--virtual-time-budget=10000"],
    )
    .await;
    let doc: Value = client()
        .get(format!("{}/openapi.json", demo.base))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON");
    let mut count = 0;
    for item in doc["paths"].as_object().expect("object").values() {
        for operation in item.as_object().expect("object").values() {
            let id = operation["operationId"].as_str().expect("string");
            assert!(
                dom.contains(&format!("data-operation=\"{id}\"")),
                "{id} is not on the page:\n{dom}"
            );
            count += 1;
        }
    }
    assert_eq!(count, 16, "every Bookstore binding");
    assert!(dom.contains("<h1>protogate demo Bookstore</h1>"), "{dom}");
    assert!(dom.contains("/v1/shelves/{shelf}/books/{book}:publish"));
}
