//! The gateways the OpenAPI tests read documents from: the demo (the
//! repository's routes.toml in front of a fresh demo Bookstore) and a test
//! config that exercises every type, rule and auth way the document maps.

#![allow(dead_code, unreachable_pub)]
use std::path::Path;

use crate::support::PROTO_DIR;
pub use crate::support::demo;

/// SHA-256 of the API key `k1`, as `[auth.api_keys]` stores it.
const KEY_DIGEST: &str = "1f6ba3b5a1d4cee0d7b1b6d0e4b1d15cc8b1e0e37d8b7b2b7c5f6b5d4f3c2b1a";

/// A routes.toml for the Everything, Streaming and Widgets services on
/// `upstream`: JSON options per method, a pinned stream format, JWT and
/// API-key routes with scopes, and a hidden method.
pub fn every_rule_toml(upstream: std::net::SocketAddr, secret_file: &Path) -> String {
    format!(
        r#"
[server]
access_log = false

[proto]
files = ["testing/v1/everything.proto", "testing/v1/streaming.proto", "testing/v1/documented.proto"]
include = ["{PROTO_DIR}"]

[upstreams.echo]
endpoints = ["http://{upstream}"]

[openapi]
title = "Every rule"
version = "1.2.3"
description = "The OpenAPI tests' API."
servers = ["https://api.example.com", "/"]

[auth.providers.t]
issuer = "i"
algorithms = ["HS256"]
secret_file = "{secret}"

[auth.api_keys]
source = {{ header = "x-api-key" }}
keys = [{{ consumer = "partner", sha256 = "{KEY_DIGEST}" }}]

[[routes]]
service = "testing.v1.EverythingService"
upstream = "echo"
auth = "none"

[routes.methods.EchoQuery]
json = {{ use_proto_names = true, enums_as_numbers = true }}

[routes.methods.Unannotated]
http = {{ post = "/v1/unannotated", body = "*" }}

[[routes]]
service = "testing.v1.Streaming"
upstream = "echo"
auth = "none"

[routes.methods.Ticks]
stream_format = "sse"

[[routes]]
service = "testing.v1.Widgets"
upstream = "echo"
auth = "t"
scopes = ["widgets.write"]

[routes.methods.GetWidget]
auth = ["t", "api_key"]
scopes = []

[routes.methods.FetchWidget]
auth = "api_key"
scopes = []

[routes.methods.PurgeWidgets]
openapi = false
"#,
        secret = secret_file.display()
    )
}
