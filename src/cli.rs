//! The command line: `serve`, `check`, `demo`, `token` and `openapi`. Logs go to stderr.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tokio::net::TcpListener;

use crate::config;
use crate::pipeline::Gateway;
use crate::snapshot::diff::ConfigDiff;
use crate::snapshot::{self, Compiled};
use crate::{pipeline, server};

pub mod demo;
mod lifecycle;
mod openapi;
mod watch;

use lifecycle::{drain_on_signal, reloader, shutdown_signal, spawn_reloader};
pub use lifecycle::{reload, reload_with_report};

/// protogate: a REST/JSON edge gateway for gRPC services.
#[derive(Debug, Parser)]
#[command(name = "protogate", version, about)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Log lines queued for the writer thread; past this, new lines are
    /// dropped and counted (`protogate_log_lines_dropped_total`) rather than
    /// holding up requests. 0 writes each line as it is logged.
    #[arg(long, default_value_t = crate::logging::DEFAULT_BUFFER_LINES, global = true)]
    pub log_buffer_lines: usize,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log line format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway. SIGHUP reloads routes.toml; a bad reload keeps the old config serving.
    Serve {
        /// Path of routes.toml.
        #[arg(long, short, default_value = "routes.toml")]
        config: PathBuf,
        /// Listen here instead of `[server] listen` (e.g. 0.0.0.0:8080 in a container).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Also reload when routes.toml, the protos or a file it names
        /// (certificates, keys, secrets) changes on disk.
        #[arg(long)]
        watch: bool,
        /// With --watch: reload once the files have been quiet this long.
        #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
        watch_debounce: std::time::Duration,
    },
    /// Validate routes.toml and print the compiled route table; exit 1 on any mistake.
    Check {
        /// Path of routes.toml.
        #[arg(long, short, default_value = "routes.toml")]
        config: PathBuf,
        /// Instead of the table, print what reloading from this (older)
        /// routes.toml to --config would change.
        #[arg(long, value_name = "OLD")]
        diff: Option<PathBuf>,
    },
    /// Mint a short-lived token for an HMAC provider of routes.toml (for trying
    /// authenticated routes, e.g. the demo's write methods).
    Token {
        /// Path of routes.toml.
        #[arg(long, short, default_value = "routes.toml")]
        config: PathBuf,
        /// Provider name (an [auth.providers.NAME] with secret_env or secret_file).
        #[arg(long, default_value = "demo")]
        provider: String,
        /// The `sub` claim.
        #[arg(long, default_value = "demo-user")]
        subject: String,
        /// Scopes for the `scope` claim (repeat the flag for several).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Lifetime, e.g. 15m.
        #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
    },
    /// Print the OpenAPI 3.1 document of routes.toml (what /openapi.json serves).
    Openapi {
        /// Path of routes.toml.
        #[arg(long, short, default_value = "routes.toml")]
        config: PathBuf,
        /// json or yaml.
        #[arg(long, value_enum, default_value_t = openapi::DocumentFormat::Json)]
        format: openapi::DocumentFormat,
    },
    /// Run the gateway together with the built-in example Bookstore gRPC service.
    Demo {
        /// Path of routes.toml (its `bookstore` upstream says where the Bookstore listens).
        #[arg(long, short, default_value = "routes.toml")]
        config: PathBuf,
        /// Listen here instead of `[server] listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Run only the Bookstore gRPC service (the load script runs the gateway apart).
        #[arg(long)]
        upstream_only: bool,
    },
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Held to the end: dropping it flushes the log lines still queued.
    let json = matches!(cli.log_format, LogFormat::Json);
    let _log_writer = crate::logging::init(json, cli.log_buffer_lines);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async {
        match cli.command {
            Command::Check {
                config,
                diff: Some(old),
            } => check_diff(&old, &config),
            Command::Check { config, diff: None } => check(&config),
            Command::Openapi { config, format } => openapi::print(&config, format),
            Command::Token {
                config,
                provider,
                subject,
                scopes,
                ttl,
            } => token(&config, &provider, &subject, &scopes, ttl),
            Command::Serve {
                config,
                listen,
                watch,
                watch_debounce,
            } => {
                let watch = watch.then_some(watch_debounce);
                serve(&config, listen, false, watch).await
            }
            Command::Demo {
                config,
                listen,
                upstream_only: true,
            } => bookstore_only(&config, listen).await,
            Command::Demo { config, listen, .. } => serve(&config, listen, true, None).await,
        }
    });
    // Connections past the grace period and background tasks are dropped
    // here; a blocking task (a DNS lookup) may hold the exit only this long.
    runtime.shutdown_timeout(EXIT_TIMEOUT);
    code
}

/// The most the exit waits for blocking tasks once serving has ended.
const EXIT_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// Loads and compiles routes.toml, printing every diagnostic on failure.
/// With `fetch_keys`, JWKS URLs start fetching (serving); without, they are only checked.
pub fn load(path: &Path, fetch_keys: bool) -> Option<Compiled> {
    compile_file(path, fetch_keys)
        .map_err(|diagnostics| eprint!("{diagnostics}"))
        .ok()
}

/// Loads and compiles routes.toml (logging its warnings), or renders every
/// diagnostic with its place.
fn compile_file(path: &Path, fetch_keys: bool) -> Result<Compiled, String> {
    let loaded =
        config::load(path).map_err(|(source, errors)| source.render(&errors).to_string())?;
    let compiled = if fetch_keys {
        snapshot::compile_for_serving(&loaded)
    } else {
        snapshot::compile(&loaded)
    };
    let compiled = compiled.map_err(|errors| loaded.source.render(&errors).to_string())?;
    for warning in &compiled.warnings {
        tracing::warn!("{warning}");
    }
    Ok(compiled)
}

fn check(path: &Path) -> ExitCode {
    let Some(compiled) = load(path, false) else {
        return ExitCode::FAILURE;
    };
    let summaries = compiled.plans.summaries();
    let rows: Vec<[String; 7]> = summaries
        .iter()
        .map(|s| {
            [
                s.http_method.clone(),
                s.template.clone(),
                s.grpc_method.clone(),
                s.upstream.clone(),
                humantime::format_duration(s.timeout).to_string(),
                s.auth.clone(),
                s.body.clone(),
            ]
        })
        .collect();
    let header = [
        "METHOD",
        "TEMPLATE",
        "GRPC METHOD",
        "UPSTREAM",
        "TIMEOUT",
        "AUTH",
        "BODY",
    ]
    .map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
    println!("{} route(s) OK", summaries.len());
    ExitCode::SUCCESS
}

/// Prints what a reload from `old` to `new` would change, one line each.
fn check_diff(old: &Path, new: &Path) -> ExitCode {
    let (Some(old), Some(new)) = (load(old, false), load(new, false)) else {
        return ExitCode::FAILURE;
    };
    let diff = ConfigDiff::between(&old.side(), &new.side());
    let lines = diff.lines();
    for line in &lines {
        println!("{line}");
    }
    println!("{} change(s)", lines.len());
    ExitCode::SUCCESS
}

/// Runs the gateway; `watch` is the debounce of `--watch`, when given.
async fn serve(
    path: &Path,
    listen: Option<SocketAddr>,
    with_demo: bool,
    watch: Option<std::time::Duration>,
) -> ExitCode {
    let Some(compiled) = load(path, true) else {
        return ExitCode::FAILURE;
    };
    if with_demo && let Err(code) = start_bookstore(&compiled, path).await {
        return code;
    }
    // The snapshot keeps routes.toml's `listen`, so that a reload compares
    // like with like; --listen only changes where this process binds.
    let mut settings = compiled.settings.clone();
    if let Some(listen) = listen {
        settings.listener.listen = listen;
    }
    let listen = settings.listener.listen;
    let listener = match TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Before the pools start: their connection slots are dialled on the workers.
    if let Err(e) = crate::workers::start(settings.listener.worker_threads) {
        eprintln!("error: cannot start the worker threads: {e}");
        return ExitCode::FAILURE;
    }
    let routes = compiled.routes.len();
    let gateway = Gateway::new(compiled.start().await);
    // The bound address, so `--listen 127.0.0.1:0` says which port it got.
    let listen = listener.local_addr().unwrap_or(listen);
    tracing::info!(%listen, routes, "protogate listening");
    if with_demo {
        print_demo_help(listen);
    }
    spawn_reloader(
        gateway.clone(),
        path.to_path_buf(),
        settings.listener.tls.clone(),
    );
    if let Some(debounce) = watch {
        let (gateway, tls) = (gateway.clone(), settings.listener.tls.clone());
        if let Err(e) = watch::spawn(gateway, path.to_path_buf(), tls, debounce) {
            eprintln!("error: --watch: {e}");
            return ExitCode::FAILURE;
        }
        tracing::info!(?debounce, "watching routes.toml and the files it names");
    }
    if let Some(admin) = settings.admin {
        match TcpListener::bind(admin).await {
            Ok(listener) => {
                // The bound address, so `127.0.0.1:0` says which port it got.
                let bound = listener.local_addr().unwrap_or(admin);
                tracing::info!(listen = %bound, "admin listener up");
                let reloader = reloader(
                    gateway.clone(),
                    path.to_path_buf(),
                    settings.listener.tls.clone(),
                );
                let router = crate::admin::router_with_reload(gateway.clone(), reloader);
                tokio::spawn(async move {
                    if let Err(e) = axum::serve(listener, router).await {
                        tracing::error!(error = %e, "admin listener stopped");
                    }
                });
            }
            Err(e) => {
                eprintln!("error: cannot listen on {admin} (admin): {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let serving = server::serve(
        listener,
        pipeline::service(gateway.clone()),
        &settings.listener,
        &settings.limits,
        drain_on_signal(gateway),
    );
    match serving.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Serves only the Bookstore, on `listen` or the `bookstore` upstream's
/// address; SIGTERM or Ctrl-C stops it gracefully (GOAWAY, then the calls
/// in flight finish), as a real service's rolling restart does.
async fn bookstore_only(path: &Path, listen: Option<SocketAddr>) -> ExitCode {
    let addr = match listen {
        Some(addr) => addr,
        None => {
            let Some(compiled) = load(path, false) else {
                return ExitCode::FAILURE;
            };
            let Some(addr) = demo_address(&compiled) else {
                eprintln!(
                    "error: `demo` needs an upstream named 'bookstore' with one endpoint in {}",
                    path.display()
                );
                return ExitCode::FAILURE;
            };
            addr
        }
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("error: cannot start the demo Bookstore on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = listener.local_addr().unwrap_or(addr);
    tracing::info!(addr = %local, "demo Bookstore gRPC service listening");
    match demo::serve_until(listener, demo::Store::with_sample_data(), shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: demo Bookstore: {e}");
            ExitCode::FAILURE
        }
    }
}

fn token(
    path: &Path,
    provider: &str,
    subject: &str,
    scopes: &[String],
    ttl: std::time::Duration,
) -> ExitCode {
    let loaded = match config::load(path) {
        Ok(loaded) if loaded.schema_errors.is_empty() => loaded,
        Ok(loaded) => {
            eprint!("{}", loaded.source.render(&loaded.schema_errors));
            return ExitCode::FAILURE;
        }
        Err((source, errors)) => {
            eprint!("{}", source.render(&errors));
            return ExitCode::FAILURE;
        }
    };
    match crate::auth::mint::token(&loaded, provider, subject, scopes, ttl) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Starts the demo Bookstore on the `bookstore` upstream's endpoint.
async fn start_bookstore(compiled: &Compiled, path: &Path) -> Result<(), ExitCode> {
    let Some(addr) = demo_address(compiled) else {
        eprintln!(
            "error: `demo` needs an upstream named 'bookstore' with one endpoint in {}",
            path.display()
        );
        return Err(ExitCode::FAILURE);
    };
    match demo::spawn(addr).await {
        Ok(addr) => {
            tracing::info!(%addr, "demo Bookstore gRPC service listening");
            Ok(())
        }
        Err(e) => {
            eprintln!("error: cannot start the demo Bookstore on {addr}: {e}");
            Err(ExitCode::FAILURE)
        }
    }
}

fn demo_address(compiled: &Compiled) -> Option<SocketAddr> {
    let upstream = compiled
        .upstreams
        .iter()
        .find(|u| u.pool.name == "bookstore")?;
    let authority = upstream.pool.discovery.static_endpoints()?.first()?;
    format!("{}:{}", authority.host(), authority.port_u16()?)
        .parse()
        .ok()
}

fn print_demo_help(listen: SocketAddr) {
    let base = format!("http://{listen}");
    let lines = [
        format!("curl {base}/v1/shelves"),
        format!("curl -i {base}/v1/shelves/1/books/2"),
        format!("curl '{base}/v1/books:search?query=kindred&genres=GENRE_FICTION'"),
        "TOKEN=$(cargo run --release -q -- token --scope bookstore.write)".to_string(),
        format!(
            "curl -X POST {base}/v1/shelves/1/books -H \"authorization: Bearer $TOKEN\" -H 'content-type: application/json' -d '{{\"title\":\"Dune\",\"author\":\"Frank Herbert\"}}'"
        ),
        format!(
            "curl -X PATCH '{base}/v1/shelves/1/books/2?updateMask=rating' -H \"authorization: Bearer $TOKEN\" -H 'content-type: application/json' -d '{{\"rating\":5}}'"
        ),
        format!("curl -i {base}/v1/shelves/9"),
        format!("curl -N {base}/v1/shelves/1:watch   # a server stream: leave it open, then write"),
    ];
    eprintln!("\nprotogate demo is up. Reads are public; writes need the demo token. Try:\n");
    for line in lines {
        eprintln!("  {line}");
    }
    eprintln!();
}
