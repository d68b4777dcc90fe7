//! protogate: a REST/JSON edge gateway for gRPC services.
//!
//! A request goes through these stages, each a module:
//!
//! 1. [`server`] accepts the connection (HTTP/1.1 or h2c) and bounds the
//!    request head; [`edge`] applies the tower layers (request decompression).
//! 2. [`pipeline`] runs the stages below, in order, on one screen.
//! 3. [`route`] normalises the path and finds the binding in the compiled
//!    table of `google.api.http` templates (404 / 405 otherwise).
//! 4. [`upstream::deadline`] fixes the request's one deadline: the route's
//!    timeout, shortened by a client's `grpc-timeout`. After authentication,
//!    [`ratelimit`] counts the caller against the binding's rate limits.
//! 5. [`transcode`] builds the gRPC message from the path variables, the
//!    body and the query string with reflected descriptors.
//! 6. [`upstream`] calls the service on a pooled HTTP/2 connection with the
//!    remaining budget as `grpc-timeout`; [`metadata`] decides what headers
//!    cross.
//! 7. [`transcode`] turns the answer into JSON (or raw `HttpBody` bytes);
//!    [`error`] turns any failure into an HTTP status and a
//!    `google.rpc.Status` JSON body.
//!
//! At load time, [`config`] reads routes.toml, [`descriptors`] compiles the
//! protos, and [`snapshot`] compiles both into the immutable [`snapshot::Snapshot`]
//! the request path reads.

pub mod admin;
pub mod auth;
pub mod backoff;
pub mod cache;
pub mod cli;
pub mod config;
pub mod descriptors;
pub mod edge;
pub mod error;
pub mod grpc_web;
pub mod headers;
pub mod idempotency;
pub mod limits;
pub mod logging;
pub mod metadata;
pub mod metrics;
pub mod openapi;
pub mod pipeline;
pub mod plan;
pub mod ratelimit;
pub mod response_cache;
pub mod route;
pub mod server;
pub mod snapshot;
pub mod stream;
pub mod trace;
pub mod transcode;
pub mod upstream;
pub mod workers;
