//! Loads the descriptors `[proto]` names: .proto files compiled in-process,
//! or a descriptor set; a failure points at the file routes.toml names.

use prost_reflect::DescriptorPool;

use crate::config::{ConfigError, Loaded};
use crate::descriptors::{self, DescriptorError, DescriptorSource};

/// The descriptor pool of `[proto]`, or the one mistake that stops compiling.
pub(super) fn load(loaded: &Loaded) -> Result<DescriptorPool, ConfigError> {
    let proto = &loaded.file.proto;
    let section = proto.get_ref();
    let source = match (&section.descriptor_set, section.files.is_empty()) {
        (Some(set), false) => {
            return Err(ConfigError::at(
                set.span(),
                "give either proto.files or proto.descriptor_set, not both",
            )
            .hint("remove descriptor_set to compile the .proto files, or remove files to load the descriptor set"));
        }
        (Some(set), true) => DescriptorSource::DescriptorSet(loaded.base_dir.join(set.get_ref())),
        (None, _) => DescriptorSource::Protos {
            files: section.files.iter().map(|f| f.get_ref().clone()).collect(),
            include: if section.include.is_empty() {
                vec![loaded.base_dir.clone()]
            } else {
                section
                    .include
                    .iter()
                    .map(|i| loaded.base_dir.join(i.get_ref()))
                    .collect()
            },
        },
    };
    descriptors::load(&source).map_err(|e| match (&source, &e) {
        (DescriptorSource::Protos { include, .. }, DescriptorError::Compile(message)) => {
            // Point at the file the message names, when it names one of ours.
            let span = section
                .files
                .iter()
                .find(|f| message.contains(f.get_ref().as_str()))
                .map_or(proto.span(), |f| f.span());
            let hint = if message.contains("not in any include path") || message.contains("not found") {
                let searched: Vec<String> =
                    include.iter().map(|d| d.display().to_string()).collect();
                format!(
                    "files are named relative to an include path, and include paths relative to routes.toml; searched {}",
                    searched.join(", ")
                )
            } else {
                "fix the .proto file; it must compile with protoc".to_string()
            };
            ConfigError::at(span, format!("cannot load descriptors: {e}")).hint(hint)
        }
        _ => ConfigError::at(
            section
                .descriptor_set
                .as_ref()
                .map_or(proto.span(), |s| s.span()),
            format!("cannot load descriptors: {e}"),
        )
        .hint("descriptor_set is relative to routes.toml; build one with `buf build -o FILE` or `protoc --include_imports --descriptor_set_out=FILE`"),
    })
}
