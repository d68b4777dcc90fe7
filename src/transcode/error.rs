//! Why a request could not be turned into a gRPC message, or an upstream
//! message into an answer. No HTTP here: [`crate::error`] maps these.

/// A transcoding failure.
#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    /// The body is not well-formed JSON.
    #[error("malformed JSON at line {line} column {column}: {message}")]
    MalformedJson {
        /// What the parser said.
        message: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
    },
    /// The JSON nests deeper than the configured limit.
    #[error("JSON nesting is deeper than the limit of {limit}")]
    JsonTooDeep {
        /// The limit.
        limit: usize,
    },
    /// A field value is of the wrong type, out of range, or otherwise invalid.
    #[error("invalid value for field '{field}': {reason}")]
    InvalidField {
        /// Dotted field path as the client named it.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A JSON body or the query string names a field the message does not have.
    #[error("unknown field '{field}'{context}")]
    UnknownField {
        /// The name the client sent.
        field: String,
        /// Where it was found, e.g. " in the query string".
        context: &'static str,
    },
    /// A JSON object gives one key twice (or one field under both its names).
    #[error(
        "duplicate key '{key}' in the JSON object at {at} of the request body; give each field once, under one name"
    )]
    DuplicateKey {
        /// The repeated key, as the client wrote it.
        key: String,
        /// Where the object is, e.g. `'nested.child'`.
        at: String,
        /// The repeated field's path, e.g. `nested.child.count` or
        /// `labels["k"]` for a map entry.
        field: String,
    },
    /// The query string cannot be decoded safely.
    #[error("invalid query string: {0}")]
    InvalidQuery(String),
    /// The body's content type is not one this binding accepts.
    #[error("unsupported content type {got:?}; this route accepts {expected}")]
    UnsupportedMediaType {
        /// The content type the client sent.
        got: String,
        /// What the binding accepts.
        expected: &'static str,
    },
    /// A `multipart/form-data` body that cannot be read as one (RFC 7578).
    #[error("malformed multipart/form-data body: {0}")]
    MalformedMultipart(String),
    /// A form part is larger than `max_multipart_part_bytes`.
    #[error(
        "multipart part '{part}' is larger than the limit of {limit} bytes per part (max_multipart_part_bytes)"
    )]
    PartTooLarge {
        /// The part's name, as the client gave it.
        part: String,
        /// The limit, in bytes.
        limit: usize,
    },
    /// A form has more parts than `max_multipart_parts`.
    #[error("the multipart body has more than the limit of {limit} parts (max_multipart_parts)")]
    TooManyParts {
        /// The limit.
        limit: usize,
    },
    /// The upstream's message does not decode as the method's output type.
    #[error("undecodable {message_type} message: {reason}")]
    UndecodableResponse {
        /// The expected message type.
        message_type: String,
        /// What the decoder said.
        reason: String,
    },
    /// The decoded answer could not be written as JSON (a gateway bug).
    #[error("cannot render the answer: {0}")]
    Render(String),
}
