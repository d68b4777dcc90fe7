//! The demo's WatchShelf through the shipped routes.toml: a watch starts
//! with the shelf's books, and a book created through the gateway arrives
//! on the open stream as NDJSON and as Server-Sent Events; a watch resumes
//! from a revision.

mod support;

use std::time::Duration;

use support::{Demo, client, demo};

impl Demo {
    async fn watch(&self, query: &str, accept: Option<&str>) -> Body {
        let mut request = client().get(format!("{}/v1/shelves/1:watch{query}", self.base));
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        let response = request.send().await.expect("send");
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["cache-control"],
            "no-store",
            "the route's public cache policy is not applied to a stream"
        );
        Body {
            response,
            buffer: Vec::new(),
        }
    }

    async fn create_book(&self, title: &str) -> serde_json::Value {
        let response = client()
            .post(format!("{}/v1/shelves/1/books", self.base))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({"title": title, "author": "Frank Herbert"}))
            .send()
            .await
            .expect("send");
        // The shipped routes.toml answers CreateBook 201 with its Location.
        assert_eq!(response.status(), 201);
        response.json().await.expect("json")
    }
}

/// How long a read waits before the test fails instead of hanging: far
/// beyond what a line takes, it only turns a lost event into a failure.
const PATIENCE: Duration = Duration::from_secs(10);

/// An open streamed body, read up to a separator at a time.
struct Body {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl Body {
    /// The next text up to `separator` (not included); waits for it to
    /// arrive, which is how these tests wait for the gateway.
    async fn next(&mut self, separator: &str) -> String {
        let separator = separator.as_bytes();
        loop {
            if let Some(at) = self
                .buffer
                .windows(separator.len())
                .position(|w| w == separator)
            {
                let piece: Vec<u8> = self.buffer.drain(..at + separator.len()).collect();
                return String::from_utf8(piece[..at].to_vec()).expect("utf-8");
            }
            let chunk = tokio::time::timeout(PATIENCE, self.response.chunk())
                .await
                .expect("the gateway wrote nothing for too long")
                .expect("read")
                .expect("the stream ended early");
            self.buffer.extend_from_slice(&chunk);
        }
    }

    async fn line(&mut self) -> serde_json::Value {
        serde_json::from_str(&self.next("\n").await).expect("an NDJSON line")
    }
}

#[tokio::test]
async fn a_watch_shows_the_shelf_then_a_book_created_through_the_gateway() {
    let demo = demo().await;
    let mut watch = demo.watch("", None).await;
    assert_eq!(
        watch.response.headers()["content-type"],
        "application/x-ndjson"
    );
    let first = watch.line().await;
    let second = watch.line().await;
    assert_eq!(first["kind"], "SNAPSHOT");
    assert_eq!(first["book"]["title"], "The Left Hand of Darkness");
    assert_eq!(second["kind"], "SNAPSHOT");
    assert_eq!(second["book"]["title"], "Kindred");
    let caught_up = watch.line().await;
    assert_eq!(caught_up["kind"], "CAUGHT_UP");
    assert!(caught_up.get("book").is_none(), "{caught_up}");
    let revision: i64 = caught_up["revision"]
        .as_str()
        .expect("int64 as a JSON string")
        .parse()
        .expect("a number");

    let created = demo.create_book("Dune").await;
    let event = watch.line().await;
    assert_eq!(event["kind"], "BOOK_CREATED");
    assert_eq!(event["revision"], (revision + 1).to_string());
    assert_eq!(event["book"], created);
}

#[tokio::test]
async fn a_watch_as_server_sent_events_names_each_event_by_kind_with_its_revision_as_id() {
    let demo = demo().await;
    let mut watch = demo.watch("", Some("text/event-stream")).await;
    assert_eq!(
        watch.response.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let first = watch.next("\n\n").await;
    assert!(
        first.starts_with(
            "id: 1\nevent: SNAPSHOT\ndata: {\"revision\":\"1\",\"kind\":\"SNAPSHOT\",\"book\":{"
        ),
        "{first}"
    );
    watch.next("\n\n").await;
    assert_eq!(
        watch.next("\n\n").await,
        "id: 1\nevent: CAUGHT_UP\ndata: {\"revision\":\"1\",\"kind\":\"CAUGHT_UP\"}"
    );

    demo.create_book("Dune").await;
    let created = watch.next("\n\n").await;
    assert!(
        created.starts_with("id: 2\nevent: BOOK_CREATED\ndata: "),
        "{created}"
    );
    assert!(created.contains("\"title\":\"Dune\""), "{created}");
}

#[tokio::test]
async fn a_watch_since_a_revision_replays_the_changes_after_it_instead_of_the_shelf() {
    let demo = demo().await;
    let mut first = demo.watch("", None).await;
    while first.line().await["kind"] != "CAUGHT_UP" {}
    demo.create_book("Dune").await;
    demo.create_book("Children of Dune").await;
    let dune = first.line().await;
    assert_eq!(dune["book"]["title"], "Dune");
    let since = dune["revision"].as_str().expect("a revision");

    let mut resumed = demo.watch(&format!("?sinceRevision={since}"), None).await;
    let replayed = resumed.line().await;
    assert_eq!(replayed["kind"], "BOOK_CREATED");
    assert_eq!(replayed["book"]["title"], "Children of Dune");
    assert_eq!(resumed.line().await["kind"], "CAUGHT_UP");

    let future = client()
        .get(format!("{}/v1/shelves/1:watch?sinceRevision=99", demo.base))
        .send()
        .await
        .expect("send");
    assert_eq!(
        future.status(),
        400,
        "OUT_OF_RANGE, before the stream began"
    );
}
