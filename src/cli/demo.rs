//! The example Bookstore gRPC service behind `protogate demo` and the tests:
//! in-memory, in-process, on loopback. Its errors carry google.rpc details
//! (ResourceInfo, BadRequest) so the demo shows the gateway rendering them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use prost::Message;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status};

/// Types generated from the protos at build time.
#[allow(missing_docs, unreachable_pub, clippy::all)]
mod service;
mod watch;

pub use watch::ShelfEvents;

pub mod pb {
    /// google.* packages used by the Bookstore.
    pub mod google {
        /// google.api.
        pub mod api {
            tonic::include_proto!("google.api");
        }
        /// google.rpc.
        pub mod rpc {
            tonic::include_proto!("google.rpc");
        }
    }
    /// bookstore.v1.
    pub mod bookstore {
        /// bookstore.v1.
        pub mod v1 {
            tonic::include_proto!("bookstore.v1");
        }
    }
}

use pb::bookstore::v1::bookstore_server::{Bookstore, BookstoreServer};
use pb::bookstore::v1::*;
use pb::google::api::HttpBody;

/// The in-memory Bookstore.
#[derive(Debug, Clone, Default)]
pub struct Store {
    inner: Arc<Mutex<Data>>,
}

#[derive(Debug, Default)]
struct Data {
    shelves: BTreeMap<i64, Shelf>,
    books: BTreeMap<(i64, i64), Book>,
    covers: BTreeMap<(i64, i64), HttpBody>,
    /// Each shelf's changes, for WatchShelf; made on the first write or
    /// watch, dropped with the shelf (which ends its watches).
    logs: BTreeMap<i64, watch::ShelfLog>,
    next_id: i64,
}

// === impl Store ===

impl Store {
    /// A store with two shelves and a few books.
    pub fn with_sample_data() -> Store {
        let mut data = Data {
            next_id: 100,
            ..Data::default()
        };
        for (id, theme) in [(1, "Fiction"), (2, "Computing")] {
            data.shelves.insert(
                id,
                Shelf {
                    id,
                    theme: theme.into(),
                    book_count: 0,
                },
            );
        }
        let books = [
            (
                1,
                1,
                "The Left Hand of Darkness",
                "Ursula K. Le Guin",
                Genre::Fiction,
                304,
                -55_000_000,
            ),
            (
                1,
                2,
                "Kindred",
                "Octavia E. Butler",
                Genre::Fiction,
                264,
                265_000_000,
            ),
            (
                2,
                3,
                "Designing Data-Intensive Applications",
                "Martin Kleppmann",
                Genre::Nonfiction,
                616,
                1_490_000_000,
            ),
            (
                2,
                4,
                "The Structure and Interpretation of Computer Programs",
                "Abelson, Sussman",
                Genre::Science,
                657,
                473_000_000,
            ),
        ];
        for (shelf, id, title, author, genre, pages, published) in books {
            let book = Book {
                name: format!("shelves/{shelf}/books/{id}"),
                id,
                title: title.into(),
                author: author.into(),
                isbn: format!("978-0-00-00000{id}-0"),
                genre: genre as i32,
                page_count: pages,
                tags: vec!["classic".into()],
                publish_time: Some(prost_types::Timestamp {
                    seconds: published,
                    nanos: 0,
                }),
                description: String::new(),
                rating: 4.5,
                in_stock: id % 2 == 1,
            };
            data.books.insert((shelf, id), book);
        }
        let store = Store {
            inner: Arc::new(Mutex::new(data)),
        };
        store.recount();
        store
    }

    fn data(&self) -> std::sync::MutexGuard<'_, Data> {
        // A panic while holding the lock cannot leave the maps half-updated
        // in a way that matters for a demo; keep serving.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn recount(&self) {
        let mut data = self.data();
        let counts: BTreeMap<i64, i32> =
            data.books.keys().fold(BTreeMap::new(), |mut m, (s, _)| {
                *m.entry(*s).or_default() += 1;
                m
            });
        for (id, shelf) in data.shelves.iter_mut() {
            shelf.book_count = counts.get(id).copied().unwrap_or(0);
        }
    }

    fn book(&self, shelf: i64, book: i64) -> Result<Book, Status> {
        self.shelf(shelf)?;
        self.data()
            .books
            .get(&(shelf, book))
            .cloned()
            .ok_or_else(|| not_found("book", &format!("shelves/{shelf}/books/{book}")))
    }

    fn shelf(&self, shelf: i64) -> Result<Shelf, Status> {
        self.data()
            .shelves
            .get(&shelf)
            .cloned()
            .ok_or_else(|| not_found("shelf", &format!("shelves/{shelf}")))
    }
}

// === impl Data ===

impl Data {
    /// Records a change to a book of `shelf` for its watchers; called
    /// under the lock with the write itself, so watchers see changes in the
    /// order they were made.
    fn changed(&mut self, shelf: i64, kind: shelf_event::Kind, book: &Book) {
        self.logs
            .entry(shelf)
            .or_default()
            .record(kind, book.clone());
    }

    /// Starts a watch of `shelf` (see [`watch::ShelfLog::watch`]).
    fn watch(&mut self, shelf: i64, since_revision: i64) -> Result<watch::Watch, Status> {
        if !self.shelves.contains_key(&shelf) {
            return Err(not_found("shelf", &format!("shelves/{shelf}")));
        }
        let books = self
            .books
            .range((shelf, i64::MIN)..=(shelf, i64::MAX))
            .map(|(_, book)| book.clone());
        self.logs
            .entry(shelf)
            .or_default()
            .watch(since_revision, books)
    }
}

/// A NOT_FOUND status with a google.rpc.ResourceInfo detail.
fn not_found(kind: &str, name: &str) -> Status {
    let info = pb::google::rpc::ResourceInfo {
        resource_type: kind.into(),
        resource_name: name.into(),
        owner: String::new(),
        description: format!("no {kind} named {name}"),
    };
    status_with_detail(
        Code::NotFound,
        format!("{kind} {name} not found"),
        "google.rpc.ResourceInfo",
        info.encode_to_vec(),
    )
}

fn invalid(field: &str, description: &str) -> Status {
    let bad = pb::google::rpc::BadRequest {
        field_violations: vec![pb::google::rpc::bad_request::FieldViolation {
            field: field.into(),
            description: description.into(),
            ..Default::default()
        }],
    };
    status_with_detail(
        Code::InvalidArgument,
        format!("{field}: {description}"),
        "google.rpc.BadRequest",
        bad.encode_to_vec(),
    )
}

fn status_with_detail(code: Code, message: String, type_name: &str, value: Vec<u8>) -> Status {
    let status = pb::google::rpc::Status {
        code: code as i32,
        message: message.clone(),
        details: vec![prost_types::Any {
            type_url: format!("type.googleapis.com/{type_name}"),
            value,
        }],
    };
    Status::with_details(code, message, status.encode_to_vec().into())
}

fn parse_name(name: &str) -> Result<(i64, i64), Status> {
    let parts: Vec<&str> = name.split('/').collect();
    match parts.as_slice() {
        ["shelves", shelf, "books", book] => match (shelf.parse(), book.parse()) {
            (Ok(s), Ok(b)) => Ok((s, b)),
            _ => Err(invalid("name", "shelf and book ids must be integers")),
        },
        _ => Err(invalid(
            "name",
            "must look like shelves/{shelf}/books/{book}",
        )),
    }
}

/// The accepted connections, with Nagle's algorithm off as gRPC servers
/// have it (tonic's `serve` does; its `serve_with_incoming` leaves the
/// socket as it is): with it on, a small answer written in two pieces waits
/// for the gateway's delayed ACK, up to 40 ms.
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Serves the Bookstore on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, store: Store) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(BookstoreServer::new(store))
        .serve_with_incoming(incoming(listener))
        .await
}

/// Serves the Bookstore on `listener` until `shutdown` resolves, then stops
/// gracefully: GOAWAY to every client, and the calls in flight finish.
pub async fn serve_until(
    listener: TcpListener,
    store: Store,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(BookstoreServer::new(store))
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await
}

/// Binds `addr` and serves the Bookstore with sample data in a background task.
pub async fn spawn(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = serve(listener, Store::with_sample_data()).await {
            tracing::error!(error = %e, "demo Bookstore stopped");
        }
    });
    Ok(local)
}
