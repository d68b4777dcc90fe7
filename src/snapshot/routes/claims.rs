//! Who bound what first: each (HTTP method, template shape) is claimed by
//! one binding; a second claim is a conflict, or the same service routed
//! by two `[[routes]]` entries, reported once per entry.

use std::ops::Range;

use super::{Entry, MethodPieces, RouteCompiler};
use crate::config::ConfigError;
use crate::snapshot::bindings::Binding;

/// Who first claimed a (method, template shape): where, which gRPC method,
/// and the index of its `[[routes]]` entry.
pub(super) struct Claim {
    pub(super) span: Range<usize>,
    pub(super) grpc_method: String,
    pub(super) entry: usize,
}

impl RouteCompiler<'_> {
    /// Claims (method, template shape) for this binding; false when another
    /// binding has it (reported, or noted as the same method routed twice).
    pub(super) fn claim(
        &mut self,
        entry: &mut Entry<'_>,
        pieces: &MethodPieces,
        binding: &Binding,
        span: &Range<usize>,
    ) -> bool {
        let method = &pieces.method;
        let key = (binding.http_method.to_string(), binding.template.shape());
        let Some(claim) = self.claimed.get(&key) else {
            self.claimed.insert(
                key,
                Claim {
                    span: span.clone(),
                    grpc_method: method.full_name().to_string(),
                    entry: entry.index,
                },
            );
            return true;
        };
        if claim.grpc_method == method.full_name() && claim.entry != entry.index {
            let names = entry.routed_twice.entry(claim.entry).or_default();
            if !names.iter().any(|n| n == method.name()) {
                names.push(method.name().to_string());
            }
            return false;
        }
        let (line, _) = self.loaded.source.line_col(claim.span.start);
        self.errors.push(
            ConfigError::at(
                span.clone(),
                format!(
                    "{} {} of {} is already bound to {} (line {line})",
                    key.0,
                    binding.template,
                    method.full_name(),
                    claim.grpc_method
                ),
            )
            .hint("two routes cannot claim the same method and path template; change one or set expose = false"),
        );
        false
    }

    pub(super) fn report_routed_twice(&mut self, entry: &Entry<'_>) {
        let service_name = entry.section.service.get_ref();
        for (earlier, names) in &entry.routed_twice {
            let (line, _) = self.loaded.source.line_col(
                self.loaded.file.routes[*earlier]
                    .get_ref()
                    .service
                    .span()
                    .start,
            );
            let splits = entry.section.methods.values().any(|m| !m.get_ref().expose);
            let what = if entry.bound == 0 && !splits {
                format!("service '{service_name}' is")
            } else if names.len() == 1 {
                format!("method {} of '{service_name}' is", names[0])
            } else {
                format!("methods {} of '{service_name}' are", names.join(", "))
            };
            self.errors.push(
                ConfigError::at(
                    entry.section.service.span(),
                    format!("{what} already routed by the [[routes]] entry at line {line}"),
                )
                .hint("list each service once; to split its methods between entries, set expose = false on the ones the other entry serves"),
            );
        }
    }
}
