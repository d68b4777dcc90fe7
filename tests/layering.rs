//! The dependency rules of docs/architecture.md, checked against the code:
//! every `crate::` path under src/ must name a module its module may import,
//! and only the edge tier may use axum. A new import that breaks a rule
//! fails here, with the file and line.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Module → the modules it may import (docs/architecture.md).
const RULES: &[(&str, &[&str])] = &[
    ("headers", &[]),
    ("backoff", &[]),
    ("descriptors", &[]),
    ("workers", &[]),
    ("logging", &[]),
    ("config", &["headers"]),
    ("route", &["headers"]),
    ("upstream", &["backoff", "workers", "headers"]),
    ("grpc_web", &["headers"]),
    ("limits", &["upstream"]),
    ("transcode", &["upstream", "headers"]),
    ("stream", &["transcode", "upstream", "headers"]),
    ("auth", &["config", "backoff", "headers"]),
    ("metadata", &["auth", "headers"]),
    ("ratelimit", &["auth", "config", "headers"]),
    ("cache", &["config", "route", "transcode", "headers"]),
    ("response_cache", &["headers"]),
    ("idempotency", &["headers"]),
    (
        "openapi",
        &[
            "config",
            "plan",
            "route",
            "auth",
            "transcode",
            "cache",
            "stream",
            "ratelimit",
            "idempotency",
            "headers",
        ],
    ),
    (
        "plan",
        &[
            "route",
            "auth",
            "transcode",
            "cache",
            "stream",
            "upstream",
            "ratelimit",
            "idempotency",
        ],
    ),
    (
        "snapshot",
        &[
            "config",
            "descriptors",
            "plan",
            "route",
            "auth",
            "transcode",
            "cache",
            "stream",
            "upstream",
            "limits",
            "metadata",
            "ratelimit",
            "response_cache",
            "idempotency",
            "server",
            "edge",
            "trace",
            "openapi",
            "headers",
        ],
    ),
    (
        "error",
        &[
            "route",
            "limits",
            "auth",
            "transcode",
            "stream",
            "upstream",
            "response_cache",
            "grpc_web",
            "ratelimit",
            "idempotency",
            "headers",
        ],
    ),
    ("server", &["limits", "metadata", "workers", "headers"]),
    ("edge", &["error", "cache", "stream", "headers"]),
    (
        "pipeline",
        &[
            "snapshot",
            "grpc_web",
            "plan",
            "route",
            "limits",
            "auth",
            "transcode",
            "stream",
            "upstream",
            "metadata",
            "ratelimit",
            "cache",
            "response_cache",
            "idempotency",
            "edge",
            "error",
            "metrics",
            "trace",
            "openapi",
            "headers",
        ],
    ),
    ("trace", &["headers"]),
    (
        "metrics",
        &[
            "logging",
            "auth",
            "response_cache",
            "snapshot",
            "upstream",
            "idempotency",
        ],
    ),
    (
        "admin",
        &[
            "pipeline",
            "snapshot",
            "response_cache",
            "metrics",
            "headers",
        ],
    ),
];

/// The modules that may use axum: the HTTP edge.
const EDGE_TIER: &[&str] = &[
    "server", "edge", "pipeline", "error", "admin", "cli", "main",
];

/// Modules free to import anything: the command line and the crate roots.
const UNRESTRICTED: &[&str] = &["cli", "main", "lib"];

#[test]
fn every_import_follows_the_dependency_rules() {
    let mut broken = Vec::new();
    for file in rust_files(&src_dir()) {
        let module = top_module(&file);
        if UNRESTRICTED.contains(&module.as_str()) || is_unit_test_file(&file) {
            continue;
        }
        let Some((_, allowed)) = RULES.iter().find(|(name, _)| *name == module) else {
            broken.push(format!(
                "{}: module '{module}' has no row in the rules; add one to docs/architecture.md and this test",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("read source");
        for (number, line) in code_lines(&text) {
            for imported in crate_paths(&line) {
                if imported != module && !allowed.contains(&imported.as_str()) {
                    broken.push(format!(
                        "{}:{number}: '{module}' may not import '{imported}': {}",
                        file.display(),
                        line.trim()
                    ));
                }
            }
            if line.contains("axum::") && !EDGE_TIER.contains(&module.as_str()) {
                broken.push(format!(
                    "{}:{number}: only the edge tier uses axum: {}",
                    file.display(),
                    line.trim()
                ));
            }
        }
    }
    assert!(broken.is_empty(), "layering broken:\n{}", broken.join("\n"));
}

#[test]
fn the_rules_catch_a_broken_import() {
    // The checker itself must see imports in each form the code uses.
    let line = "use crate::{auth, snapshot::Snapshot};";
    assert_eq!(crate_paths(line), ["auth", "snapshot"]);
    assert_eq!(
        crate_paths("let x = crate::error::GatewayError::Internal;"),
        ["error"]
    );
    let code: Vec<_> =
        code_lines("//! see [`crate::error`]\nuse crate::route::RouteTable;\n").collect();
    assert_eq!(code.len(), 1, "doc comments are not imports");
    let spread = "use crate::{\n    auth,\n    cache::Policy,\n};\n";
    let code: Vec<_> = code_lines(spread).collect();
    assert_eq!(crate_paths(&code[0].1), ["auth", "cache"]);
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Whether `file` is `foo/tests.rs` that `foo.rs` declares as its
/// `#[cfg(test)] mod tests;`: unit tests moved out of their module, which
/// may use anything, as inline ones may.
fn is_unit_test_file(file: &Path) -> bool {
    if file.file_name().is_none_or(|name| name != "tests.rs") {
        return false;
    }
    let Some(parent) = file.parent() else {
        return false;
    };
    let declaring = parent.with_extension("rs");
    std::fs::read_to_string(declaring).is_ok_and(|text| text.contains("#[cfg(test)]\nmod tests;"))
}

/// `src/route/matcher.rs` → `route`; `src/pipeline.rs` → `pipeline`.
fn top_module(file: &Path) -> String {
    let relative = file.strip_prefix(src_dir()).expect("under src");
    let first = relative.components().next().expect("a component");
    first
        .as_os_str()
        .to_string_lossy()
        .trim_end_matches(".rs")
        .to_string()
}

/// Lines of code (1-based numbers) without `//` comments, up to the
/// file's unit tests (which may use anything); a `crate::{` group that
/// rustfmt spread over several lines is joined into its first.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, String)> + '_ {
    let mut lines = text
        .lines()
        .enumerate()
        .take_while(|(_, line)| line.trim() != "#[cfg(test)]");
    std::iter::from_fn(move || {
        loop {
            let (i, line) = lines.next()?;
            let mut code = line.split("//").next().unwrap_or("").to_string();
            if code.trim().is_empty() {
                continue;
            }
            while code.contains("crate::{") && !code.contains('}') {
                let Some((_, more)) = lines.next() else { break };
                code.push_str(more.split("//").next().unwrap_or(""));
            }
            return Some((i + 1, code));
        }
    })
}

/// The top-level modules a line names through `crate::`.
fn crate_paths(line: &str) -> Vec<String> {
    let mut found = BTreeSet::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let inner = group.split('}').next().unwrap_or("");
            for item in inner.split(',') {
                let name = item.trim().split("::").next().unwrap_or("").trim();
                if !name.is_empty() && name != "self" {
                    found.insert(name.to_string());
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found.into_iter().collect()
}
