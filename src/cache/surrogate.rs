//! Surrogate keys (`Surrogate-Key`, `Cache-Tag`) from a template over the
//! binding's path variables, e.g. `shelf-{shelf} book-{shelf}-{book}`.

use prost_reflect::MessageDescriptor;

use crate::route::template::PathTemplate;
use crate::transcode::FieldPath;

/// `shelf-{shelf} book-{shelf}-{book}` with each `{var}` resolved to a
/// template variable index.
#[derive(Debug, Clone)]
pub(super) struct SurrogateTemplate {
    parts: Vec<Part>,
}

#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Variable(usize),
}

// === impl SurrogateTemplate ===

impl SurrogateTemplate {
    /// Whether no key applies to this binding.
    pub(super) fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Parses `text` for one binding. Each space-separated key whose
    /// variables this binding's path does not bind is left out (another
    /// binding of the same method may bind them); a name that is no field of
    /// the request message at all is an error.
    pub(super) fn parse(
        text: &str,
        template: &PathTemplate,
        input: &MessageDescriptor,
    ) -> Result<SurrogateTemplate, String> {
        let mut parts = Vec::new();
        for key in text.split_whitespace() {
            let mut key_parts = Vec::new();
            let mut bound = true;
            let mut rest = key;
            while let Some(open) = rest.find('{') {
                if open > 0 {
                    key_parts.push(Part::Text(rest[..open].to_string()));
                }
                let close = rest[open..]
                    .find('}')
                    .ok_or_else(|| format!("unclosed '{{' in surrogate_keys {text:?}"))?
                    + open;
                let name = &rest[open + 1..close];
                if FieldPath::resolve(input, name).is_err() {
                    return Err(format!(
                        "surrogate_keys names {{{name}}}, which is not a field of {}",
                        input.full_name()
                    ));
                }
                match template
                    .variables
                    .iter()
                    .position(|v| v.field_path.join(".") == name)
                {
                    Some(index) => key_parts.push(Part::Variable(index)),
                    None => bound = false,
                }
                rest = &rest[close + 1..];
            }
            if !rest.is_empty() {
                key_parts.push(Part::Text(rest.to_string()));
            }
            if bound {
                if !parts.is_empty() {
                    parts.push(Part::Text(" ".into()));
                }
                parts.extend(key_parts);
            }
        }
        Ok(SurrogateTemplate { parts })
    }

    pub(super) fn render(&self, captures: &[(usize, String)]) -> String {
        // Room for typical keys, so the text is not regrown as it is written.
        let mut out = String::with_capacity(64);
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Variable(index) => {
                    if let Some((_, value)) = captures.iter().find(|(i, _)| i == index) {
                        // Keys are space-separated; a value must stay one key.
                        out.extend(value.chars().map(|c| {
                            if c.is_whitespace() || c.is_control() {
                                '_'
                            } else {
                                c
                            }
                        }));
                    }
                }
            }
        }
        out
    }
}
