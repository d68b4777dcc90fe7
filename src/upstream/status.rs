//! Reads the gRPC status an upstream answered with (`grpc-status`,
//! `grpc-message`, `grpc-status-details-bin`) without trusting any of it.
//!
//! tonic's `Status::from_header_map` panics on details that are not base64,
//! and nothing an upstream sends may panic the gateway, so the three headers
//! are read here, each malformed value becoming an error to answer with.

use base64::Engine;
use base64::alphabet::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;
use http::HeaderMap;
use percent_encoding::percent_decode;
use prost::Message;
use tonic::Code;

use crate::headers::{GRPC_MESSAGE, GRPC_STATUS, GRPC_STATUS_DETAILS};

/// Base64 as gRPC's `-bin` metadata uses it: senders should omit the
/// padding, receivers must accept it either way (gRPC over HTTP/2 spec).
const BINARY_METADATA: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// `google.rpc.Status` as prost reads and writes it: here, only to check
/// that a details header holds one (rendering reads it again with the
/// descriptors); gRPC-Web answers write their own with it.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub(crate) code: i32,
    #[prost(string, tag = "2")]
    pub(crate) message: String,
    #[prost(message, repeated, tag = "3")]
    pub(crate) details: Vec<prost_types::Any>,
}

/// Why an upstream's status could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusError {
    /// There is no `grpc-status`.
    #[error("the response has no grpc-status")]
    Missing,
    /// `grpc-status` is not a decimal number.
    #[error("grpc-status {0:?} is not a number")]
    BadCode(String),
    /// The code and message are fine; `grpc-status-details-bin` is not.
    #[error("grpc-status-details-bin {reason}")]
    BadDetails {
        /// The status code the upstream sent.
        code: Code,
        /// Its message, decoded.
        message: String,
        /// What is wrong with the details.
        reason: String,
    },
}

/// Reads the status from a response's headers merged with its trailers.
pub fn read(metadata: &HeaderMap) -> Result<tonic::Status, StatusError> {
    let code = metadata
        .get(GRPC_STATUS)
        .map(|value| code(value.as_bytes()))
        .ok_or(StatusError::Missing)??;
    let message = metadata
        .get(GRPC_MESSAGE)
        .map(|value| message(value.as_bytes()))
        .unwrap_or_default();
    let details = match metadata.get(GRPC_STATUS_DETAILS) {
        Some(value) => match details(value.as_bytes()) {
            Ok(details) => details,
            Err(reason) => {
                return Err(StatusError::BadDetails {
                    code,
                    message,
                    reason,
                });
            }
        },
        None => Bytes::new(),
    };
    Ok(tonic::Status::with_details(code, message, details))
}

/// `1*DIGIT`; a number outside google.rpc.Code is UNKNOWN, as gRPC clients
/// read it.
fn code(value: &[u8]) -> Result<Code, StatusError> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(StatusError::BadCode(
            String::from_utf8_lossy(value).into_owned(),
        ));
    }
    let number = std::str::from_utf8(value)
        .ok()
        .and_then(|digits| digits.parse::<i32>().ok());
    Ok(number.map_or(Code::Unknown, Code::from_i32))
}

/// Percent-decoded UTF-8; a message that does not decode is kept as sent
/// (the spec forbids throwing it away).
fn message(value: &[u8]) -> String {
    match percent_decode(value).decode_utf8() {
        Ok(text) => text.into_owned(),
        Err(_) => String::from_utf8_lossy(value).into_owned(),
    }
}

/// Base64 of a serialized google.rpc.Status.
fn details(value: &[u8]) -> Result<Bytes, String> {
    let bytes = BINARY_METADATA
        .decode(value)
        .map_err(|e| format!("is not base64: {e}"))?;
    RpcStatus::decode(bytes.as_slice()).map_err(|e| format!("is not a google.rpc.Status: {e}"))?;
    Ok(bytes.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    fn metadata(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|&(name, value)| {
                (
                    http::HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                )
            })
            .collect()
    }

    #[test]
    fn reads_code_message_and_details_padded_or_not() {
        // google.rpc.Status{code: 5, message: "a"}.
        for details in ["CAUSAWE", "CAUSAWE="] {
            let status = read(&metadata(&[
                ("grpc-status", "5"),
                ("grpc-message", "caf%C3%A9"),
                ("grpc-status-details-bin", details),
            ]))
            .expect("valid");
            assert_eq!(status.code(), Code::NotFound);
            assert_eq!(status.message(), "café");
            assert_eq!(status.details(), b"\x08\x05\x12\x01a");
        }
    }

    #[test]
    fn bad_details_keep_the_code_and_message() {
        for details in ["not*base64!", "%%%", "/w"] {
            let error = read(&metadata(&[
                ("grpc-status", "7"),
                ("grpc-message", "denied"),
                ("grpc-status-details-bin", details),
            ]));
            assert!(
                matches!(
                    &error,
                    Err(StatusError::BadDetails { code: Code::PermissionDenied, message, .. })
                        if message == "denied"
                ),
                "{details}: {error:?}"
            );
        }
    }

    #[test]
    fn codes_are_digits_and_out_of_range_is_unknown() {
        let code_of = |value: &'static str| read(&metadata(&[("grpc-status", value)]));
        assert_eq!(code_of("42").map(|s| s.code()), Ok(Code::Unknown));
        assert_eq!(code_of("99999999999").map(|s| s.code()), Ok(Code::Unknown));
        for bad in ["", "-1", "x", "1 "] {
            assert!(
                matches!(code_of(bad), Err(StatusError::BadCode(_))),
                "{bad:?}"
            );
        }
        assert_eq!(read(&HeaderMap::new()).err(), Some(StatusError::Missing));
    }

    #[test]
    fn undecodable_message_is_kept_as_sent() {
        let status =
            read(&metadata(&[("grpc-status", "2"), ("grpc-message", "%FF%")])).expect("valid");
        assert_eq!(status.message(), "%FF%");
    }

    proptest! {
        /// The fuzz target's property, on every test run: any bytes in the
        /// three headers (details also as valid base64 of any bytes) are a
        /// status or an error, never a panic.
        #[test]
        fn any_header_bytes_are_read_or_refused(
            code in prop_oneof![Just(b"7".to_vec()), prop::collection::vec(any::<u8>(), 0..12)],
            message in prop::collection::vec(any::<u8>(), 0..64),
            details in prop::collection::vec(any::<u8>(), 0..64),
            encode_details in any::<bool>(),
        ) {
            let details = if encode_details {
                BINARY_METADATA.encode(&details).into_bytes()
            } else {
                details
            };
            let mut metadata = HeaderMap::new();
            for (name, value) in [(GRPC_STATUS, code), (GRPC_MESSAGE, message), (GRPC_STATUS_DETAILS, details)] {
                if let Ok(value) = HeaderValue::from_bytes(&value) {
                    metadata.insert(name, value);
                }
            }
            let _ = read(&metadata);
        }
    }
}
