//! Loads protobuf descriptors without a code-generation step: `.proto` files
//! compiled at start-up in pure Rust (protox), or a descriptor-set file made
//! by protoc or buf.
//!
//! `google/api/{annotations,http,httpbody,field_behavior}.proto`, `google/rpc/*.proto` and the
//! well-known types are always available, so users do not vendor them, and the
//! `google.rpc` error detail types are always known when rendering errors.
//!
//! Descriptors go into the pool as encoded bytes, never through
//! `prost_types`: prost drops unknown fields, which loses the
//! `google.api.http` extension option.

use std::path::{Path, PathBuf};

use prost_reflect::DescriptorPool;
use protox::file::{
    ChainFileResolver, File, FileResolver, GoogleFileResolver, IncludeFileResolver,
};

/// Proto files every pool contains, embedded in the binary.
const BUILTIN_FILES: [(&str, &str); 7] = [
    (
        "google/api/http.proto",
        include_str!("../proto/google/api/http.proto"),
    ),
    (
        "google/api/annotations.proto",
        include_str!("../proto/google/api/annotations.proto"),
    ),
    (
        "google/api/field_behavior.proto",
        include_str!("../proto/google/api/field_behavior.proto"),
    ),
    (
        "google/api/httpbody.proto",
        include_str!("../proto/google/api/httpbody.proto"),
    ),
    (
        "google/rpc/status.proto",
        include_str!("../proto/google/rpc/status.proto"),
    ),
    (
        "google/rpc/code.proto",
        include_str!("../proto/google/rpc/code.proto"),
    ),
    (
        "google/rpc/error_details.proto",
        include_str!("../proto/google/rpc/error_details.proto"),
    ),
];

/// Where descriptors come from.
#[derive(Debug, Clone)]
pub enum DescriptorSource {
    /// `.proto` files, named relative to one of the include directories.
    Protos {
        /// File names, e.g. `bookstore/v1/bookstore.proto`.
        files: Vec<String>,
        /// Include directories.
        include: Vec<PathBuf>,
    },
    /// A binary `google.protobuf.FileDescriptorSet`.
    DescriptorSet(PathBuf),
}

/// Why descriptors could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DescriptorError {
    /// protox rejected a file (syntax, unresolved import, type error).
    #[error("{0}")]
    Compile(String),
    /// The descriptor-set file could not be read.
    #[error("cannot read descriptor set {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The descriptor set is not valid.
    #[error("invalid descriptor set {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Serves the embedded builtin files to protox.
struct BuiltinFiles;

impl FileResolver for BuiltinFiles {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        match BUILTIN_FILES.iter().find(|(file, _)| *file == name) {
            Some((file, source)) => File::from_source(file, source),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

/// Loads a descriptor pool from `source`, with the builtin files added.
pub fn load(source: &DescriptorSource) -> Result<DescriptorPool, DescriptorError> {
    match source {
        DescriptorSource::Protos { files, include } => compile(files, include),
        DescriptorSource::DescriptorSet(path) => {
            let bytes = std::fs::read(path).map_err(|e| DescriptorError::Read {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            let mut pool = compile(&[], &[])?;
            // Files already in the pool (the builtins) are skipped if repeated.
            pool.decode_file_descriptor_set(bytes.as_slice())
                .map_err(|e| DescriptorError::Invalid {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            Ok(pool)
        }
    }
}

fn compile(files: &[String], include: &[PathBuf]) -> Result<DescriptorPool, DescriptorError> {
    let mut resolver = ChainFileResolver::new();
    // User include paths first, so a user's own copy of a google/ file wins.
    for dir in include {
        resolver.add(IncludeFileResolver::new(dir.clone()));
    }
    resolver.add(BuiltinFiles);
    resolver.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    // Source info keeps the .proto comments: the OpenAPI document's descriptions.
    compiler.include_imports(true).include_source_info(true);
    let builtin = BUILTIN_FILES.iter().map(|(name, _)| Path::new(name));
    for file in files.iter().map(Path::new).chain(builtin) {
        compiler
            .open_file(file)
            .map_err(|e| DescriptorError::Compile(e.to_string()))?;
    }
    DescriptorPool::decode(compiler.encode_file_descriptor_set().as_slice())
        .map_err(|e| DescriptorError::Compile(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_annotation_survives_compilation() {
        let pool = load(&DescriptorSource::Protos {
            files: vec!["bookstore/v1/bookstore.proto".into()],
            include: vec![PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/proto"))],
        })
        .expect("the bookstore proto compiles");
        let http = pool
            .get_extension_by_name("google.api.http")
            .expect("builtin");
        let method = pool
            .get_service_by_name("bookstore.v1.Bookstore")
            .and_then(|s| s.methods().find(|m| m.name() == "GetBook"))
            .expect("GetBook exists");
        assert!(method.options().has_extension(&http));
        assert!(pool.get_message_by_name("google.rpc.RetryInfo").is_some());
    }

    #[test]
    fn builtins_resolve_without_include_paths() {
        let pool = load(&DescriptorSource::Protos {
            files: vec![],
            include: vec![],
        })
        .expect("builtins compile");
        assert!(pool.get_message_by_name("google.api.HttpBody").is_some());
        assert!(
            pool.get_message_by_name("google.protobuf.Duration")
                .is_some()
        );
    }
}
