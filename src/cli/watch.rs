//! `serve --watch`: reload when routes.toml, the protos or a file it names
//! (certificates, keys, secrets, key lists, JWKS files) changes on disk.
//! Changes are debounced: an editor's save or a deploy tool's writes come
//! as bursts, and one reload after the burst is what is meant.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

use crate::config::{self, file::RoutesFile};
use crate::pipeline::Gateway;
use crate::server::tls::ServerTls;

/// Events queued between the watcher's thread and the reloading task;
/// beyond it events are dropped, which is harmless: one is enough.
const QUEUE: usize = 64;

/// What to watch: files by their directory (editors and Kubernetes
/// ConfigMaps replace a file by renaming another over it, which a watch
/// on the file itself would miss), and proto include trees whole.
#[derive(Debug, Default, PartialEq, Eq)]
struct WatchSet {
    files: BTreeSet<PathBuf>,
    trees: BTreeSet<PathBuf>,
}

/// Starts watching the files of `path` and reloading `gateway` when they
/// change, `debounce` after the last change of a burst.
pub(super) fn spawn(
    gateway: Arc<Gateway>,
    path: PathBuf,
    listener_tls: Option<Arc<ServerTls>>,
    debounce: Duration,
) -> Result<(), String> {
    let (events, mut changed) = mpsc::channel::<()>(QUEUE);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = events.try_send(());
        }
    })
    .map_err(|e| format!("cannot watch files: {e}"))?;
    let mut watching = watch_set(&path);
    apply(&mut watcher, &WatchSet::default(), &watching);
    tokio::spawn(async move {
        while changed.recv().await.is_some() {
            // Wait for a quiet `debounce`: every event restarts it.
            while let Ok(Some(())) = tokio::time::timeout(debounce, changed.recv()).await {}
            tracing::info!("files changed on disk; reloading");
            if super::reload(&gateway, listener_tls.as_deref(), &path).await {
                // The new config may name other files.
                let next = watch_set(&path);
                apply(&mut watcher, &watching, &next);
                watching = next;
            }
        }
    });
    Ok(())
}

/// Moves the watches from `old` to `new`, logging (not failing on) a
/// path that cannot be watched.
fn apply(watcher: &mut RecommendedWatcher, old: &WatchSet, new: &WatchSet) {
    let dirs = |set: &WatchSet| -> BTreeSet<PathBuf> {
        (set.files.iter())
            .filter_map(|f| f.parent().map(Path::to_path_buf))
            .collect()
    };
    let (old_dirs, new_dirs) = (dirs(old), dirs(new));
    for dir in old_dirs.difference(&new_dirs) {
        let _ = watcher.unwatch(dir);
    }
    for tree in old.trees.difference(&new.trees) {
        let _ = watcher.unwatch(tree);
    }
    let added_dirs = new_dirs
        .difference(&old_dirs)
        .map(|d| (d, RecursiveMode::NonRecursive));
    let added_trees = new
        .trees
        .difference(&old.trees)
        .map(|t| (t, RecursiveMode::Recursive));
    for (path, mode) in added_dirs.chain(added_trees) {
        if let Err(e) = watcher.watch(path, mode) {
            tracing::warn!(path = %path.display(), error = %e, "cannot watch; changes there need a SIGHUP");
        }
    }
}

/// routes.toml and every file and proto tree it names (as far as it parses).
fn watch_set(path: &Path) -> WatchSet {
    let mut set = WatchSet::default();
    set.files.insert(absolute(path));
    // A routes.toml that does not parse still has its own file watched.
    let Ok(loaded) = config::load(path) else {
        return set;
    };
    let base = &loaded.base_dir;
    for file in named_files(&loaded.file) {
        set.files.insert(absolute(&base.join(file)));
    }
    for include in &loaded.file.proto.get_ref().include {
        set.trees.insert(absolute(&base.join(include.get_ref())));
    }
    set
}

/// The files routes.toml names, relative to its directory.
fn named_files(file: &RoutesFile) -> Vec<&Path> {
    let mut files = Vec::new();
    if let Some(set) = &file.proto.get_ref().descriptor_set {
        files.push(set.get_ref().as_path());
    }
    if let Some(tls) = &file.server.tls {
        files.extend(
            [tls.get_ref().cert.get_ref(), tls.get_ref().key.get_ref()].map(|p| p.as_path()),
        );
    }
    for upstream in file.upstreams.values() {
        if let Some(tls) = &upstream.get_ref().tls {
            let tls = tls.get_ref();
            files.extend(
                [&tls.ca, &tls.client_cert, &tls.client_key]
                    .into_iter()
                    .flatten()
                    .map(|p| p.get_ref().as_path()),
            );
        }
    }
    for provider in file.auth.providers.values() {
        let provider = provider.get_ref();
        files.extend(
            [
                &provider.jwks_file,
                &provider.pem_file,
                &provider.secret_file,
            ]
            .into_iter()
            .flatten()
            .map(|p| p.get_ref().as_path()),
        );
    }
    if let Some(keys) = &file.auth.api_keys {
        files.extend(
            keys.get_ref()
                .keys_file
                .iter()
                .map(|p| p.get_ref().as_path()),
        );
    }
    files
}

/// `path` made absolute against the working directory, so that its
/// parent is a directory to watch even for a bare `routes.toml`.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
