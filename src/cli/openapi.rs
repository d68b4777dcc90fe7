//! `protogate openapi`: prints the OpenAPI document routes.toml describes,
//! as the gateway would serve it, without dialling any upstream.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use clap::ValueEnum;

/// The printed form.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DocumentFormat {
    /// `/openapi.json`.
    Json,
    /// `/openapi.yaml`.
    Yaml,
}

/// Prints the document of the config at `path`; exit 1 if it does not compile.
pub(super) fn print(path: &Path, format: DocumentFormat) -> ExitCode {
    let Some(compiled) = super::load(path, false) else {
        return ExitCode::FAILURE;
    };
    let rendered =
        crate::openapi::render(&compiled.plans, &compiled.pool, &compiled.settings.openapi);
    let bytes = match format {
        DocumentFormat::Json => rendered.json,
        DocumentFormat::Yaml => rendered.yaml,
    };
    let mut out = std::io::stdout().lock();
    let written = out.write_all(&bytes).and_then(|()| match format {
        DocumentFormat::Json => out.write_all(b"\n"),
        DocumentFormat::Yaml => Ok(()),
    });
    match written.and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot write the document: {e}");
            ExitCode::FAILURE
        }
    }
}
