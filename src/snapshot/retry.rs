//! Compiles a binding's retry policy: an explicit `retry = {...}` (method
//! over route), else UNAVAILABLE for methods that are idempotent — an HTTP
//! GET or HEAD binding, or a proto method whose `idempotency_level` is
//! IDEMPOTENT or NO_SIDE_EFFECTS — else only the retries that are always
//! safe (calls the upstream provably did not process).

use http::Method;
use prost_reflect::{MethodDescriptor, Value};
use toml::Spanned;

use crate::config::ConfigError;
use crate::config::diagnostic::suggest;
use crate::config::upstream::RetrySection;
use crate::upstream::RetryPolicy;
use crate::upstream::retry::CodeSet;

/// Most attempts a route may ask for: more only multiplies load.
const MAX_ATTEMPTS: u32 = 10;

/// A method's retry policy before its HTTP bindings are known.
#[derive(Debug, Clone, Copy)]
pub(super) struct MethodRetry {
    policy: RetryPolicy,
    /// Set in routes.toml: the HTTP method does not change it.
    explicit: bool,
}

impl MethodRetry {
    /// The policy of one HTTP binding of the method.
    pub(super) fn for_binding(self, http_method: &Method) -> RetryPolicy {
        let safe_http = matches!(*http_method, Method::GET | Method::HEAD);
        if !self.explicit && safe_http {
            RetryPolicy::IDEMPOTENT
        } else {
            self.policy
        }
    }
}

/// Compiles the `retry` setting that applies to `method` (the method's
/// own, else the route's), reporting each mistake.
pub(super) fn compile(
    section: Option<&Spanned<RetrySection>>,
    method: &MethodDescriptor,
    errors: &mut Vec<ConfigError>,
) -> MethodRetry {
    let Some(section) = section else {
        let policy = if is_idempotent(method) {
            RetryPolicy::IDEMPOTENT
        } else {
            RetryPolicy::SAFE_ONLY
        };
        return MethodRetry {
            policy,
            explicit: false,
        };
    };
    let retry = section.get_ref();
    let mut on = CodeSet::EMPTY;
    for name in &retry.on {
        match code_named(name.get_ref()) {
            Some(code) => on = on.with(code),
            None => {
                let known: Vec<String> = CODES.iter().map(|(n, _)| n.to_string()).collect();
                errors.push(
                    ConfigError::at(
                        name.span(),
                        format!("unknown gRPC code {:?}", name.get_ref()),
                    )
                    .hint(suggest(name.get_ref(), &known, "gRPC codes")),
                );
            }
        }
    }
    let attempts = match &retry.attempts {
        Some(a) if *a.get_ref() == 0 || *a.get_ref() > MAX_ATTEMPTS => {
            errors.push(
                ConfigError::at(a.span(), format!("attempts must be 1 to {MAX_ATTEMPTS}"))
                    .hint("it counts the first attempt; 1 turns retries off"),
            );
            RetryPolicy::SAFE_ONLY.attempts
        }
        Some(a) => *a.get_ref(),
        None => RetryPolicy::SAFE_ONLY.attempts,
    };
    MethodRetry {
        policy: RetryPolicy { attempts, on },
        explicit: true,
    }
}

/// google.protobuf.MethodOptions.idempotency_level: NO_SIDE_EFFECTS (1)
/// or IDEMPOTENT (2).
fn is_idempotent(method: &MethodDescriptor) -> bool {
    let options = method.options();
    options
        .get_field_by_name("idempotency_level")
        .is_some_and(|level| matches!(level.as_ref(), Value::EnumNumber(1 | 2)))
}

/// The codes a route may list, by their snake_case names.
const CODES: [(&str, tonic::Code); 16] = [
    ("cancelled", tonic::Code::Cancelled),
    ("unknown", tonic::Code::Unknown),
    ("invalid_argument", tonic::Code::InvalidArgument),
    ("deadline_exceeded", tonic::Code::DeadlineExceeded),
    ("not_found", tonic::Code::NotFound),
    ("already_exists", tonic::Code::AlreadyExists),
    ("permission_denied", tonic::Code::PermissionDenied),
    ("resource_exhausted", tonic::Code::ResourceExhausted),
    ("failed_precondition", tonic::Code::FailedPrecondition),
    ("aborted", tonic::Code::Aborted),
    ("out_of_range", tonic::Code::OutOfRange),
    ("unimplemented", tonic::Code::Unimplemented),
    ("internal", tonic::Code::Internal),
    ("unavailable", tonic::Code::Unavailable),
    ("data_loss", tonic::Code::DataLoss),
    ("unauthenticated", tonic::Code::Unauthenticated),
];

/// The code for a snake_case name such as `unavailable`.
fn code_named(name: &str) -> Option<tonic::Code> {
    CODES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, code)| *code)
}
