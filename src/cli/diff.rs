//! `protogate check --diff OLD.toml` and `--against http://ADMIN`: what a
//! reload from the old configuration (a file, or the gateway running
//! behind that admin listener) to the one being checked would change —
//! routes and upstreams added, removed or changed.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::inspect;
use crate::snapshot::Compiled;

/// What the checked configuration is compared with.
#[derive(Debug)]
pub(super) enum Baseline {
    /// Another routes.toml.
    File(PathBuf),
    /// A running gateway's admin listener (its `/config`).
    Running(String),
}

/// Prints the changes from `baseline` to `new` on stdout.
pub(super) async fn print(new: &Compiled, baseline: &Baseline) -> Result<(), String> {
    let (old, from) = match baseline {
        Baseline::File(path) => {
            let compiled = super::load(path, false)
                .ok_or_else(|| format!("{} does not compile (see above)", path.display()))?;
            (view(&compiled), path.display().to_string())
        }
        Baseline::Running(url) => (fetch(url).await?, url.clone()),
    };
    let changes = inspect::diff(&old, &view(new));
    if changes.is_empty() {
        println!("a reload from {from} changes no route or upstream");
    } else {
        println!("a reload from {from} changes:");
        print!("{changes}");
    }
    Ok(())
}

/// The parts of a compiled configuration a reload compares.
fn view(compiled: &Compiled) -> Value {
    json!({
        "routes": inspect::routes(&compiled.plans),
        "upstreams": inspect::upstreams(&compiled.upstreams),
    })
}

/// The running gateway's `/config`.
async fn fetch(admin: &str) -> Result<Value, String> {
    let url = format!("{}/config", admin.trim_end_matches('/'));
    let answer = reqwest::Client::new()
        .get(&url)
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| format!("cannot fetch {url}: {e}"))?;
    if !answer.status().is_success() {
        return Err(format!("{url} answered {}", answer.status()));
    }
    let body = answer
        .bytes()
        .await
        .map_err(|e| format!("cannot read {url}: {e}"))?;
    serde_json::from_slice(&body)
        .map_err(|e| format!("{url} is not a protogate /config document: {e}"))
}
