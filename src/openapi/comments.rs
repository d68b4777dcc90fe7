//! The .proto comments, read from the descriptors' source info (protox keeps
//! it; a descriptor set keeps it when built with `--include_source_info`):
//! a declaration's leading comment becomes its description.

use std::collections::HashMap;

use prost_reflect::DescriptorPool;

/// Leading comments by (file, declaration path).
#[derive(Debug, Default)]
pub(super) struct Comments {
    by_place: HashMap<(String, Vec<i32>), String>,
}

impl Comments {
    /// Every leading comment in `pool`.
    pub(super) fn of(pool: &DescriptorPool) -> Comments {
        let mut by_place = HashMap::new();
        for file in pool.files() {
            let proto = file.file_descriptor_proto();
            let Some(info) = &proto.source_code_info else {
                continue;
            };
            for location in &info.location {
                let Some(text) = location.leading_comments.as_deref() else {
                    continue;
                };
                let text = tidy(text);
                if !text.is_empty() {
                    by_place.insert((file.name().to_string(), location.path.clone()), text);
                }
            }
        }
        Comments { by_place }
    }

    /// The comment above the declaration at `path` of `file`.
    pub(super) fn get(&self, file: &str, path: &[i32]) -> Option<&str> {
        // A borrowed lookup key would need a second map; comments are few.
        self.by_place
            .get(&(file.to_string(), path.to_vec()))
            .map(String::as_str)
    }
}

/// A comment without the one leading space each line has after `//`.
fn tidy(text: &str) -> String {
    text.lines()
        .map(|line| line.strip_prefix(' ').unwrap_or(line).trim_end())
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_string()
}

/// A summary: the comment's first sentence or line, whichever is shorter.
pub(super) fn summary(text: &str) -> String {
    let first_line = text.lines().next().unwrap_or("");
    match first_line.find(". ") {
        Some(end) => first_line[..=end].to_string(),
        None => first_line.to_string(),
    }
}
