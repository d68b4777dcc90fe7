//! The OpenAPI 3.1 document, fetched from the running gateway: for the demo
//! (the repository's routes.toml and the Bookstore) and for a config that
//! exercises every type, body rule, response rule, stream, auth way and
//! proto annotation the document maps.

#[path = "openapi/fixtures.rs"]
mod fixtures;
mod support;

use serde_json::{Value, json};

use support::{Reply, client, spawn_gateway, spawn_scripted};

async fn document(base: &str) -> Value {
    let response = client()
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 200);
    response.json().await.expect("JSON")
}

/// The document of [`fixtures::every_rule_toml`], from a running gateway.
async fn every_rule_document() -> Value {
    let scripted = spawn_scripted(support::pool(), Reply::Echo).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("t.secret");
    std::fs::write(&secret, "s".repeat(64)).expect("secret");
    let gateway = spawn_gateway(&fixtures::every_rule_toml(scripted.addr, &secret)).await;
    document(&gateway.base).await
}

fn schema<'a>(doc: &'a Value, name: &str) -> &'a Value {
    let found = &doc["components"]["schemas"][name];
    assert!(found.is_object(), "no component {name}");
    found
}

fn parameter<'a>(operation: &'a Value, name: &str) -> &'a Value {
    operation["parameters"]
        .as_array()
        .and_then(|list| list.iter().find(|p| p["name"] == name))
        .unwrap_or_else(|| panic!("no parameter {name} in {operation:#}"))
}

#[tokio::test]
async fn the_demo_document_has_every_bookstore_binding_with_its_parameters_and_security() {
    let demo = fixtures::demo().await;
    let doc = document(&demo.base).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = &doc["paths"];

    let get_book = &paths["/v1/shelves/{shelf}/books/{book}"]["get"];
    assert_eq!(get_book["operationId"], "Bookstore_GetBook");
    assert_eq!(get_book["security"], json!([]), "reads are public");
    assert_eq!(parameter(get_book, "shelf")["in"], "path");
    assert_eq!(
        parameter(get_book, "shelf")["schema"]["type"],
        "string",
        "int64 as a string"
    );
    // The additional binding {name=shelves/*/books/*}: one parameter per wildcard.
    let by_name = &paths["/v1/books/shelves/{name_1}/books/{name_2}"]["get"];
    assert_eq!(by_name["operationId"], "Bookstore_GetBook_2");
    assert!(
        parameter(by_name, "name_2")["description"]
            .as_str()
            .expect("string")
            .contains("shelves/*/books/*")
    );

    let create = &paths["/v1/shelves"]["post"];
    assert_eq!(create["security"], json!([{ "demo": ["bookstore.write"] }]));
    assert_eq!(
        create["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/bookstore.v1.Shelf"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["demo"],
        json!({ "type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": "A JWT from the auth provider `demo`." })
    );
    // Nested path variable, body field, and the rest of the message in the query.
    let update = &paths["/v1/shelves/{shelf}/books/{book_id}"]["patch"];
    assert_eq!(
        parameter(update, "book_id")["description"],
        "Sets the request field `book.id`."
    );
    assert_eq!(
        parameter(update, "updateMask")["schema"]["type"],
        "string",
        "FieldMask"
    );
    assert_eq!(
        update["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/bookstore.v1.Book"
    );

    let search = &paths["/v1/books:search"]["get"];
    let genres = parameter(search, "genres");
    assert_eq!(genres["schema"]["type"], "array");
    assert_eq!(genres["explode"], true);
    assert_eq!(
        genres["schema"]["items"]["$ref"],
        "#/components/schemas/bookstore.v1.Genre"
    );
    assert_eq!(
        parameter(search, "publishedAfter")["schema"]["format"],
        "date-time"
    );
    assert_eq!(
        search["summary"],
        "Every field comes from the query string."
    );

    let publish = &paths["/v1/shelves/{shelf}/books/{book}:publish"]["post"];
    assert_eq!(
        publish["summary"],
        "A custom verb: marks a book as published now."
    );
    let author = &paths["/v1/shelves/{shelf}/books/{book}/author"]["get"];
    assert_eq!(
        author["responses"]["200"]["content"]["application/json"]["schema"]["type"],
        "string"
    );
    let cover = &paths["/v1/shelves/{shelf}/books/{book}/cover"];
    assert_eq!(
        cover["get"]["responses"]["200"]["content"],
        json!({ "*/*": {} })
    );
    assert_eq!(cover["put"]["requestBody"]["content"], json!({ "*/*": {} }));
    let watch = &paths["/v1/shelves/{shelf}:watch"]["get"]["responses"]["200"]["content"];
    assert_eq!(
        watch["application/x-ndjson"]["schema"]["$ref"],
        "#/components/schemas/bookstore.v1.ShelfEvent"
    );
    assert!(
        watch["text/event-stream"].is_object()
            && watch["application/json"]["schema"]["type"] == "array"
    );
    for (path, item) in paths.as_object().expect("object") {
        for (method, operation) in item.as_object().expect("object") {
            assert_eq!(
                operation["responses"]["default"]["$ref"], "#/components/responses/Error",
                "{method} {path} documents the error answer"
            );
        }
    }

    let book = schema(&doc, "bookstore.v1.Book");
    assert_eq!(
        book["properties"]["id"],
        json!({
            "type": "string", "format": "int64", "pattern": "^-?[0-9]+$",
            "description": "A 64-bit integer, written as a decimal string; a JSON number is accepted too.",
        })
    );
    assert_eq!(
        book["properties"]["publishTime"],
        json!({ "type": "string", "format": "date-time" })
    );
    assert_eq!(
        book["properties"]["genre"]["$ref"],
        "#/components/schemas/bookstore.v1.Genre"
    );
    assert_eq!(
        schema(&doc, "bookstore.v1.Genre")["enum"][1],
        "GENRE_FICTION"
    );
    let event = schema(&doc, "bookstore.v1.ShelfEvent");
    assert!(
        event["properties"]["revision"]["description"]
            .as_str()
            .expect("string")
            .starts_with("The shelf's revision after this change")
    );
    let status = schema(&doc, "google.rpc.Status");
    assert_eq!(
        status["properties"]["details"]["items"]["required"],
        json!(["@type"])
    );
}

#[tokio::test]
async fn every_proto3_json_type_has_its_json_schema() {
    let doc = every_rule_document().await;
    let everything = &schema(&doc, "testing.v1.Everything")["properties"];
    let expect = |field: &str, want: Value| assert_eq!(everything[field], want, "{field}");
    expect(
        "int32Value",
        json!({ "type": "integer", "format": "int32", "minimum": i32::MIN, "maximum": i32::MAX }),
    );
    expect(
        "uint32Value",
        json!({ "type": "integer", "minimum": 0, "maximum": u32::MAX }),
    );
    assert_eq!(everything["uint64Value"]["format"], "uint64");
    assert_eq!(everything["fixed64Value"]["pattern"], "^[0-9]+$");
    assert_eq!(everything["sint64Value"]["type"], "string");
    assert_eq!(
        everything["doubleValue"]["anyOf"][1]["enum"],
        json!(["NaN", "Infinity", "-Infinity"])
    );
    expect(
        "bytesValue",
        json!({ "type": "string", "format": "byte", "contentEncoding": "base64" }),
    );
    expect("boolValue", json!({ "type": "boolean" }));
    expect(
        "enumValue",
        json!({ "$ref": "#/components/schemas/testing.v1.Color" }),
    );
    assert_eq!(
        everything["nested"]["$ref"],
        "#/components/schemas/testing.v1.Nested"
    );
    assert_eq!(everything["repeatedInt64"]["items"]["type"], "string");
    assert_eq!(
        everything["stringInt64Map"]["additionalProperties"]["type"],
        "string"
    );
    assert_eq!(
        everything["intMap"]["propertyNames"]["pattern"],
        "^-?[0-9]+$"
    );
    assert_eq!(
        everything["boolEnumMap"]["propertyNames"]["enum"],
        json!(["true", "false"])
    );
    assert_eq!(
        everything["duration"]["pattern"],
        "^-?[0-9]+(\\.[0-9]{1,9})?s$"
    );
    assert_eq!(everything["fieldMask"]["type"], "string");
    assert_eq!(everything["structValue"]["type"], "object");
    assert_eq!(everything["listValue"]["type"], "array");
    assert_eq!(everything["any"]["required"], json!(["@type"]));
    assert_eq!(everything["empty"]["maxProperties"], 0);
    assert_eq!(
        everything["int64Wrapper"]["type"],
        json!(["string", "null"])
    );
    assert_eq!(
        everything["boolWrapper"]["type"],
        json!(["boolean", "null"])
    );
    assert_eq!(
        everything["doubleWrapper"]["anyOf"][1],
        json!({ "type": "null" })
    );
    assert!(
        everything["choiceInt"]["description"]
            .as_str()
            .expect("string")
            .contains("At most one field of `choice`")
    );
    assert!(
        schema(&doc, "testing.v1.Everything")["not"]["anyOf"]
            .as_array()
            .expect("array")
            .contains(&json!({ "required": ["choiceString", "choiceInt"] }))
    );
    // Recursion goes through the component.
    assert_eq!(
        schema(&doc, "testing.v1.Nested")["properties"]["child"]["$ref"],
        "#/components/schemas/testing.v1.Nested"
    );

    // A method with proto names and enums as numbers gets its own components.
    let echo_query = &doc["paths"]["/v1/echo"]["get"];
    assert_eq!(
        echo_query["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/testing.v1.Everything-ProtoNames-EnumNumbers"
    );
    let numbered = &schema(&doc, "testing.v1.Everything-ProtoNames-EnumNumbers")["properties"];
    assert_eq!(
        numbered["enum_value"]["$ref"],
        "#/components/schemas/testing.v1.Color-Numbers"
    );
    assert_eq!(
        schema(&doc, "testing.v1.Color-Numbers")["enum"],
        json!([0, 1, 2, 3])
    );
    // Its query parameters: proto names, nested with dots, no maps, no Struct.
    assert_eq!(
        parameter(echo_query, "nested.label")["schema"]["type"],
        "string",
        "{echo_query:#}"
    );
    assert_eq!(
        parameter(echo_query, "repeated_timestamp")["schema"]["items"]["format"],
        "date-time"
    );
    assert_eq!(
        parameter(echo_query, "int64_wrapper")["schema"]["type"],
        json!(["string"])
    );
    let names: Vec<&str> = echo_query["parameters"]
        .as_array()
        .expect("array")
        .iter()
        .map(|p| p["name"].as_str().expect("string"))
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with("string_map")
            || n.starts_with("struct_value")
            || n.starts_with("nested.children")),
        "{names:?}"
    );
    // A recursive message is listed once, not again inside itself.
    assert!(!names.contains(&"nested.child.label"), "{names:?}");
}

#[tokio::test]
async fn bindings_bodies_streams_and_auth_follow_the_routes() {
    let doc = every_rule_document().await;
    let paths = &doc["paths"];
    assert_eq!(
        doc["info"],
        json!({ "title": "Every rule", "version": "1.2.3", "description": "The OpenAPI tests' API." })
    );
    assert_eq!(
        doc["servers"],
        json!([{ "url": "https://api.example.com" }, { "url": "/" }])
    );
    // body "*": nothing in the query; body "nested" with response_body "nested".
    assert!(paths["/v1/echo"]["post"].get("parameters").is_none());
    let nested = &paths["/v1/echo/{string_value}/nested"]["put"];
    assert_eq!(
        nested["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/testing.v1.Nested"
    );
    assert_eq!(
        nested["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/testing.v1.Nested"
    );
    // `**` is one parameter; an enum in the path; a custom method.
    let multi = &paths["/v1/resources/rooms/{resource_1}/items/{resource_2}"]["get"];
    assert!(
        parameter(multi, "resource_2")["description"]
            .as_str()
            .expect("string")
            .contains("any number of segments")
    );
    assert_eq!(
        paths["/v1/echo/{enum_value}:byEnum"]["get"]["parameters"][0]["schema"]["$ref"],
        "#/components/schemas/testing.v1.Color"
    );
    assert!(paths["/v1/nothing"]["options"].is_object());
    assert!(
        paths["/v1/unannotated"]["post"].is_object(),
        "a routes.toml binding"
    );
    // Streams: a pinned format, NDJSON requests, raw bytes both ways.
    let ticks = &paths["/v1/ticks"]["get"]["responses"]["200"]["content"];
    assert_eq!(
        ticks
            .as_object()
            .expect("object")
            .keys()
            .collect::<Vec<_>>(),
        ["text/event-stream"]
    );
    assert!(
        paths["/v1/sums/{label}"]["post"]["requestBody"]["content"]["application/x-ndjson"]
            .is_object()
    );
    assert_eq!(
        paths["/v1/download"]["get"]["responses"]["200"]["content"],
        json!({ "*/*": {} })
    );
    assert_eq!(
        paths["/v1/upload"]["post"]["requestBody"]["content"],
        json!({ "*/*": {} })
    );

    // Widgets: JWT with scopes, JWT or API key, API key only, hidden.
    let create = &paths["/v1/widgets"]["post"];
    assert_eq!(create["security"], json!([{ "t": ["widgets.write"] }]));
    assert_eq!(create["summary"], "Creates a widget.");
    assert!(
        create["description"]
            .as_str()
            .expect("string")
            .contains("A second paragraph")
    );
    assert_eq!(
        paths["/v1/widgets/{name}"]["get"]["security"],
        json!([{ "t": [] }, { "api_key": [] }])
    );
    let fetch = &paths["/v1/fetch/widgets/{name_1}/revisions/{name_2}"]["get"];
    assert_eq!(fetch["security"], json!([{ "api_key": [] }]));
    assert_eq!(fetch["deprecated"], true);
    assert!(
        paths.get("/v1/widgets:purge").is_none(),
        "openapi = false hides it"
    );
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["api_key"]["in"], "header");
    assert_eq!(schemes["api_key"]["name"], "x-api-key");
    assert_eq!(schemes["t"]["bearerFormat"], "JWT");
    assert_eq!(
        doc["tags"][2],
        json!({ "name": "Widgets", "description": "Manages widgets." })
    );

    // field_behavior and deprecation; REQUIRED only in the request variant.
    let widget = schema(&doc, "testing.v1.Widget");
    assert!(
        widget.get("required").is_none(),
        "answers omit default values"
    );
    assert_eq!(widget["properties"]["name"]["readOnly"], true);
    assert_eq!(widget["properties"]["createTime"]["readOnly"], true);
    assert_eq!(widget["properties"]["secret"]["writeOnly"], true);
    assert!(
        widget["properties"]["kind"]["description"]
            .as_str()
            .expect("string")
            .contains("Immutable")
    );
    assert_eq!(widget["properties"]["title"]["deprecated"], true);
    assert_eq!(widget["description"], "A thing with a name.");
    let input = &create["requestBody"]["content"]["application/json"]["schema"]["$ref"];
    assert_eq!(input, "#/components/schemas/testing.v1.Widget-Input");
    assert_eq!(
        schema(&doc, "testing.v1.Widget-Input")["required"],
        json!(["displayName"])
    );
    assert_eq!(
        create["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/testing.v1.Widget"
    );
    let state = schema(&doc, "testing.v1.WidgetState")["description"]
        .as_str()
        .expect("string");
    assert!(
        state.contains("Deprecated values: `ENABLED`.") && state.contains("`ACTIVE` (1): In use."),
        "{state}"
    );
}

/// The demo's CreateBook answers 201 with Location and takes Idempotency-Key;
/// its SearchBooks is rate limited: the document says so, as the gateway
/// answers.
#[tokio::test]
async fn rest_answers_idempotency_keys_and_rate_limits_are_documented() {
    let demo = fixtures::demo().await;
    let doc = document(&demo.base).await;
    let paths = &doc["paths"];

    let create_book = &paths["/v1/shelves/{shelf}/books"]["post"];
    let responses = &create_book["responses"];
    assert!(responses["200"].is_null(), "201, not 200: {responses:#}");
    let created = &responses["201"];
    assert!(
        created["headers"]["Location"]["description"]
            .as_str()
            .expect("a Location header")
            .contains("/v1/{+name}")
    );
    assert!(created["content"]["application/json"].is_object());
    let key = parameter(create_book, "Idempotency-Key");
    assert_eq!(key["in"], "header");
    assert_eq!(key["required"], false);
    for status in ["409", "422"] {
        assert_eq!(
            responses[status]["content"]["application/json"]["schema"]["$ref"],
            "#/components/responses/Error/content/application~1json/schema"
        );
    }
    assert!(created["headers"]["Idempotency-Replayed"].is_object());

    let search = &paths["/v1/books:search"]["get"];
    let limited = &search["responses"]["429"];
    assert!(limited["headers"]["Retry-After"].is_object());
    let policy = limited["headers"]["RateLimit-Policy"]["description"]
        .as_str()
        .expect("RateLimit-Policy");
    assert!(
        policy.contains("`search`: 10 requests per 1m by ip (burst 5)"),
        "{policy}"
    );
    assert!(search["responses"]["200"]["headers"]["RateLimit"].is_object());

    // Neither appears where the routes do not ask for it.
    let get_book = &paths["/v1/shelves/{shelf}/books/{book}"]["get"];
    assert!(get_book["responses"]["429"].is_null());
    assert!(
        get_book["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .all(|p| p["name"] != "Idempotency-Key")
    );
}
