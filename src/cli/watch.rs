//! `serve --watch`: reload when routes.toml, the protos or the files it
//! names (keys, secrets, certificates, descriptor sets) change on disk.
//! Editors save in bursts (write, rename, chmod), so events are debounced:
//! the reload runs once things have been quiet for [`QUIET`].

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::config::Loaded;
use crate::pipeline::Gateway;
use crate::server::tls::ServerTls;

/// How long the files must be left alone before a reload.
const QUIET: Duration = Duration::from_millis(300);

/// Starts watching what `loaded` reads; each burst of changes reloads
/// `path` into `gateway` (as SIGHUP does). The watcher lives as long as
/// the returned value.
pub(super) fn spawn(
    gateway: Arc<Gateway>,
    path: PathBuf,
    listener_tls: Option<Arc<ServerTls>>,
    loaded: &Loaded,
) -> Result<notify::RecommendedWatcher, String> {
    let (events, mut changes) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = events.send(());
        }
    })
    .map_err(|e| format!("cannot watch files: {e}"))?;
    for dir in watched_dirs(loaded) {
        watcher
            .watch(&dir, RecursiveMode::Recursive)
            .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    }
    tokio::spawn(async move {
        while changes.recv().await.is_some() {
            // Quiet for QUIET after the last event of the burst.
            while let Ok(Some(())) = tokio::time::timeout(QUIET, changes.recv()).await {}
            tracing::info!(config = %path.display(), "files changed on disk; reloading");
            super::reload(&gateway, listener_tls.as_deref(), &path).await;
        }
    });
    Ok(watcher)
}

/// The directories holding routes.toml and every file it names. Directories
/// rather than files: an editor that saves by renaming replaces the file,
/// and a watch on the old one would go quiet.
fn watched_dirs(loaded: &Loaded) -> BTreeSet<PathBuf> {
    let file = &loaded.file;
    let base = &loaded.base_dir;
    let mut files: Vec<&Path> = Vec::new();
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::from([base.clone()]);
    let proto = file.proto.get_ref();
    for include in &proto.include {
        dirs.insert(base.join(include.get_ref()));
    }
    files.extend(proto.descriptor_set.as_ref().map(|p| p.get_ref().as_path()));
    for provider in file.auth.providers.values() {
        let p = provider.get_ref();
        for path in [&p.jwks_file, &p.pem_file, &p.secret_file]
            .into_iter()
            .flatten()
        {
            files.push(path.get_ref());
        }
    }
    if let Some(keys) = &file.auth.api_keys {
        files.extend(
            keys.get_ref()
                .keys_file
                .as_ref()
                .map(|p| p.get_ref().as_path()),
        );
    }
    if let Some(tls) = &file.server.tls {
        files.push(tls.get_ref().cert.get_ref());
        files.push(tls.get_ref().key.get_ref());
    }
    for upstream in file.upstreams.values() {
        if let Some(tls) = &upstream.get_ref().tls {
            let t = tls.get_ref();
            for path in [&t.ca, &t.client_cert, &t.client_key].into_iter().flatten() {
                files.push(path.get_ref());
            }
        }
    }
    for name in files {
        if let Some(dir) = base.join(name).parent() {
            dirs.insert(dir.to_path_buf());
        }
    }
    // A directory inside another is already watched recursively.
    let all = dirs.clone();
    dirs.retain(|d| !all.iter().any(|o| o != d && d.starts_with(o)));
    dirs
}
