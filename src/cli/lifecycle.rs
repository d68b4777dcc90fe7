//! The running gateway's life: reloads on SIGHUP (and `serve --watch`),
//! and the drain on SIGTERM or Ctrl-C.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::compile_file;
use crate::pipeline::Gateway;
use crate::server::tls::ServerTls;
use crate::snapshot::diff::ConfigDiff;

/// Reloads routes.toml on SIGHUP (see [`reload`]).
pub(super) fn spawn_reloader(
    gateway: Arc<Gateway>,
    path: PathBuf,
    listener_tls: Option<Arc<ServerTls>>,
) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hangups) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hangups.recv().await.is_some() {
            reload(&gateway, listener_tls.as_deref(), &path).await;
        }
    });
}

/// Reloads routes.toml into `gateway`, and the listener's certificate into
/// `listener_tls` (the one the listener was started with): new handshakes
/// get the re-read certificate, open connections go on. The new config
/// compiles beside the old one and only then is swapped in: upstreams whose
/// settings did not change keep their live connections, the response cache
/// keeps the answers of routes that did not change, JWKS key sets carry
/// over by URL, and CORS, compression and request limits take effect at
/// once. Listener settings take a restart and are logged as such. A config
/// that does not compile (an unreadable certificate among its mistakes) is
/// logged and the old snapshot and certificate keep serving. Returns
/// whether it took.
pub async fn reload(gateway: &Gateway, listener_tls: Option<&ServerTls>, path: &Path) -> bool {
    match reload_with_report(gateway, listener_tls, path).await {
        Ok(_) => true,
        Err(diagnostics) => {
            eprint!("{diagnostics}");
            false
        }
    }
}

/// The admin listener's `POST /reload`: [`reload_with_report`] of `path`.
pub(super) fn reloader(
    gateway: Arc<Gateway>,
    path: PathBuf,
    listener_tls: Option<Arc<ServerTls>>,
) -> crate::admin::Reloader {
    Arc::new(move || {
        let (gateway, path, listener_tls) = (gateway.clone(), path.clone(), listener_tls.clone());
        Box::pin(async move { reload_with_report(&gateway, listener_tls.as_deref(), &path).await })
    })
}

/// One reload at a time, whatever asked for it (SIGHUP, admin, a file change).
static RELOADING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// [`reload`], answering what changed, or the rendered diagnostics of a
/// config that does not compile.
pub async fn reload_with_report(
    gateway: &Gateway,
    listener_tls: Option<&ServerTls>,
    path: &Path,
) -> Result<ConfigDiff, String> {
    let _one_at_a_time = RELOADING.lock().await;
    let compiled = compile_file(path, true).inspect_err(|_| {
        gateway.metrics().config_reloaded(false);
        tracing::error!("reload failed; still serving the previous configuration");
    })?;
    let previous = gateway.snapshot();
    if let (Some(live), Some(reread)) = (listener_tls, &compiled.settings.listener.tls) {
        live.adopt(reread);
    }
    let diff = ConfigDiff::between(&previous.side(), &compiled.side());
    if !diff.restart_needed.is_empty() {
        tracing::warn!(
            settings = diff.restart_needed.join(", "),
            "these settings changed but take a restart; the listener keeps its current ones"
        );
    }
    let routes = compiled.routes.len();
    let next = compiled.start_after(&previous).await;
    let kept = (next.upstreams.iter())
        .filter(|u| previous.upstreams.iter().any(|p| Arc::ptr_eq(p, u)))
        .count();
    let redialled = next.upstreams.len() - kept;
    gateway.replace(next);
    let purged = gateway.snapshot().purge_changed_routes(&previous);
    tracing::info!(
        routes,
        upstreams_kept = kept,
        upstreams_redialled = redialled,
        cached_paths_purged = purged,
        changes = diff.lines().join("; "),
        "reloaded routes.toml"
    );
    Ok(diff)
}

/// Resolves when the listener should stop accepting: a shutdown signal
/// makes readiness fail at once, then the listener goes on accepting for
/// `[server] drain_delay` (of the config live at the signal), so load
/// balancers see the gateway leave before its connections are refused.
pub(super) async fn drain_on_signal(gateway: Arc<Gateway>) {
    shutdown_signal().await;
    gateway.start_draining();
    let delay = gateway.snapshot().settings.listener.drain_delay;
    tracing::info!(
        ?delay,
        "shutdown signal: readiness now fails; still accepting for the drain delay"
    );
    tokio::time::sleep(delay).await;
    // The listener stops accepting now; open streams end with a last
    // UNAVAILABLE (WebSockets close 1001) and their clients reconnect to
    // an instance that stays, instead of being cut at the grace's end.
    gateway.end_streams();
}

pub(super) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
