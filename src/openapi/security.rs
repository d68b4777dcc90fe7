//! Security schemes from the auth providers a binding accepts, and each
//! operation's requirements: any one of its ways in (OpenAPI's list of
//! alternatives), with the route's required scopes on each JWT way.

use serde_json::{Map, Value, json};

use crate::auth::{Policy, Source, Way};

/// The scheme name of API keys (`[auth.api_keys]`).
const API_KEY_SCHEME: &str = "api_key";

/// The security schemes the operations use, by name.
#[derive(Default)]
pub(super) struct Schemes {
    schemes: Map<String, Value>,
}

impl Schemes {
    /// The schemes named so far.
    pub(super) fn into_map(self) -> Map<String, Value> {
        self.schemes
    }

    /// An operation's `security`: `[]` for a public route, else one
    /// requirement per way in (`{}` among them when a credential is optional).
    pub(super) fn requirements(&mut self, policy: &Policy) -> Value {
        if policy.ways.iter().all(|w| matches!(w, Way::Public)) {
            return json!([]);
        }
        let mut alternatives: Vec<Value> = Vec::new();
        for way in &policy.ways {
            let requirement = match way {
                Way::Public => json!({}),
                Way::Jwt(provider, source) => {
                    self.schemes
                        .entry(provider.name.clone())
                        .or_insert_with(|| jwt_scheme(&provider.name, source));
                    let mut requirement = Map::new();
                    requirement.insert(provider.name.clone(), json!(policy.scopes));
                    Value::Object(requirement)
                }
                Way::ApiKey(_, source) => {
                    self.schemes
                        .entry(API_KEY_SCHEME.to_string())
                        .or_insert_with(|| {
                            api_key_scheme(source, "An API key from `[auth.api_keys]`.")
                        });
                    json!({ API_KEY_SCHEME: [] })
                }
            };
            if !alternatives.contains(&requirement) {
                alternatives.push(requirement);
            }
        }
        Value::Array(alternatives)
    }
}

fn jwt_scheme(provider: &str, source: &Source) -> Value {
    let about = format!("A JWT from the auth provider `{provider}`.");
    match source {
        Source::Bearer => json!({
            "type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": about,
        }),
        other => api_key_scheme(other, &about),
    }
}

/// A credential sent as a named header, query parameter or cookie.
fn api_key_scheme(source: &Source, about: &str) -> Value {
    let (place, name) = match source {
        Source::Bearer => {
            return json!({ "type": "http", "scheme": "bearer", "description": about });
        }
        Source::Header(name) => ("header", name.as_str().to_string()),
        Source::Query(name) => ("query", name.clone()),
        Source::Cookie(name) => ("cookie", name.clone()),
    };
    json!({ "type": "apiKey", "in": place, "name": name, "description": about })
}
