//! Turns a matched HTTP request into an encoded gRPC request message, and a
//! gRPC response (or status) back into an HTTP answer, with reflected
//! descriptors and the proto3 JSON mapping. Each binding's
//! [`Plan`] is compiled at load time; this module reads nothing else of it.

pub mod assign;
pub mod body_json;
pub mod error;
pub mod field_mask;
pub mod field_path;
pub mod json_wire;
pub mod multipart;
pub mod plan;
pub mod query;
pub mod request;
pub mod response;
pub mod stable_json;
pub mod status;
pub mod success;
pub mod text;
pub mod wire_json;

pub use error::TranscodeError;
pub use field_path::FieldPath;
pub use multipart::MultipartLimits;
pub use plan::{BodyRule, JsonMapping, Plan};
pub use request::request;
pub use response::{HttpReply, response};
pub use status::{UpstreamStatus, upstream_status};
pub use success::{LocationTemplate, Success};

/// Full name of google.api.HttpBody, which passes raw bytes both ways.
pub const HTTP_BODY: &str = "google.api.HttpBody";
