//! The protogate binary's command line: `check` prints the compiled route
//! table for good configs (annotated, overridden, hidden and descriptor-set
//! routes), every subcommand has help, and `serve` refuses a bad config
//! without starting (nor panicking when there are no CA certificates), and a
//! JWKS fetch failure is logged with its cause.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn proto_dir() -> PathBuf {
    repo().join("proto")
}

fn protogate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_protogate"))
        .args(args)
        .current_dir(repo())
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "off")
        .output()
        .expect("run protogate")
}

/// Writes `toml` as routes.toml in a fresh directory and runs `check` on it.
fn check_toml(toml: &str) -> (tempfile::TempDir, Output) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, toml).expect("write routes.toml");
    let output = protogate(&["check", "--config", path.to_str().expect("utf-8 path")]);
    (dir, output)
}

/// The route table rows of `check`'s stdout, each split on whitespace.
fn rows(output: &Output) -> Vec<Vec<String>> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .skip(1)
        .filter(|l| !l.ends_with("route(s) OK"))
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

fn has_row(output: &Output, http_method: &str, template: &str, grpc_method: &str) -> bool {
    rows(output)
        .iter()
        .any(|r| r.len() >= 3 && r[0] == http_method && r[1] == template && r[2] == grpc_method)
}

fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A `[proto]` section compiling `file` from the repo's proto directory.
fn proto_section(file: &str) -> String {
    format!(
        "[proto]\nfiles = [\"{file}\"]\ninclude = ['{}']\n",
        proto_dir().display()
    )
}

const EVERYTHING_ROUTES: &str = r#"
[upstreams.everything]
endpoints = ["http://127.0.0.1:50052"]

[[routes]]
service = "testing.v1.EverythingService"
upstream = "everything"
auth = "none"
"#;

#[test]
fn check_on_the_shipped_routes_toml_prints_the_route_table() {
    let output = protogate(&["check", "--config", "routes.toml"]);
    assert_success(&output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let header: Vec<&str> = stdout
        .lines()
        .next()
        .expect("header")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "METHOD", "TEMPLATE", "GRPC", "METHOD", "UPSTREAM", "TIMEOUT", "AUTH", "BODY"
        ]
    );
    let get_book = rows(&output)
        .into_iter()
        .find(|r| r[1] == "/v1/shelves/{shelf}/books/{book}" && r[0] == "GET")
        .expect("GetBook row");
    assert_eq!(
        get_book,
        [
            "GET",
            "/v1/shelves/{shelf}/books/{book}",
            "bookstore.v1.Bookstore.GetBook",
            "bookstore",
            "5s",
            "none"
        ]
    );
    assert!(has_row(
        &output,
        "GET",
        "/v1/books/{name=shelves/*/books/*}",
        "bookstore.v1.Bookstore.GetBook"
    ));
    assert!(has_row(
        &output,
        "POST",
        "/v1/shelves/{shelf}/books",
        "bookstore.v1.Bookstore.CreateBook"
    ));
    let watch_shelf = rows(&output)
        .into_iter()
        .find(|r| r[1] == "/v1/shelves/{shelf}:watch")
        .expect("WatchShelf row");
    assert_eq!(
        watch_shelf,
        [
            "GET",
            "/v1/shelves/{shelf}:watch",
            "bookstore.v1.Bookstore.WatchShelf",
            "bookstore",
            "1h",
            "none"
        ],
        "a watch's budget is its stream_timeout, not the upstream's 5s"
    );
    assert_eq!(rows(&output).len(), 16);
    assert!(stdout.ends_with("16 route(s) OK\n"), "{stdout}");
}

#[test]
fn top_level_help_lists_every_subcommand() {
    let output = protogate(&["--help"]);
    assert_success(&output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    for command in ["serve", "check", "demo"] {
        assert!(
            stdout.lines().any(|l| l.trim_start().starts_with(command)),
            "{command} missing from:\n{stdout}"
        );
    }
}

#[test]
fn every_subcommand_has_help_naming_its_config_flag() {
    for command in ["serve", "check", "demo"] {
        let output = protogate(&[command, "--help"]);
        assert_success(&output);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.contains("--config"), "{command} --help:\n{stdout}");
        assert!(
            stdout.contains(&format!("protogate {command}")),
            "{command} --help:\n{stdout}"
        );
    }
}

#[test]
fn check_lists_an_unannotated_method_bound_in_routes_toml() {
    let toml = format!(
        "{}{EVERYTHING_ROUTES}\n[routes.methods.Unannotated]\nhttp = {{ post = \"/v1/unannotated\", body = \"*\" }}\n",
        proto_section("testing/v1/everything.proto")
    );
    let (_dir, output) = check_toml(&toml);
    assert_success(&output);
    let row = rows(&output)
        .into_iter()
        .find(|r| r[2] == "testing.v1.EverythingService.Unannotated")
        .expect("Unannotated is listed");
    assert_eq!(row[..2], ["POST", "/v1/unannotated"]);
    assert_eq!(row.last().map(String::as_str), Some("*"));
}

#[test]
fn check_leaves_an_unannotated_method_out_when_routes_toml_does_not_bind_it() {
    let toml = format!(
        "{}{EVERYTHING_ROUTES}",
        proto_section("testing/v1/everything.proto")
    );
    let (_dir, output) = check_toml(&toml);
    assert_success(&output);
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("Unannotated"),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(has_row(
        &output,
        "POST",
        "/v1/echo",
        "testing.v1.EverythingService.Echo"
    ));
}

#[test]
fn expose_false_removes_a_method_from_the_route_table() {
    let toml = format!(
        "{}\n[upstreams.bookstore]\nendpoints = [\"http://127.0.0.1:50051\"]\n\n[[routes]]\nservice = \"bookstore.v1.Bookstore\"\nupstream = \"bookstore\"\nauth = \"none\"\n\n[routes.methods.DeleteBook]\nexpose = false\n",
        proto_section("bookstore/v1/bookstore.proto")
    );
    let (_dir, output) = check_toml(&toml);
    assert_success(&output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains("DeleteBook"), "{stdout}");
    assert!(has_row(
        &output,
        "DELETE",
        "/v1/shelves/{shelf}",
        "bookstore.v1.Bookstore.DeleteShelf"
    ));
    assert!(stdout.ends_with("15 route(s) OK\n"), "{stdout}");
}

#[test]
fn check_reads_http_rules_from_a_descriptor_set() {
    let mut compiler = protox::Compiler::new([proto_dir()]).expect("compiler");
    compiler.include_imports(true);
    compiler
        .open_file("bookstore/v1/bookstore.proto")
        .expect("bookstore.proto compiles");
    let set = compiler.encode_file_descriptor_set();

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("bookstore.binpb"), set).expect("write descriptor set");
    let toml = "[proto]\ndescriptor_set = \"bookstore.binpb\"\n\n[upstreams.bookstore]\nendpoints = [\"http://127.0.0.1:50051\"]\n\n[[routes]]\nservice = \"bookstore.v1.Bookstore\"\nupstream = \"bookstore\"\nauth = \"none\"\n";
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, toml).expect("write routes.toml");
    let output = protogate(&["check", "--config", path.to_str().expect("utf-8 path")]);

    assert_success(&output);
    assert!(has_row(
        &output,
        "GET",
        "/v1/shelves/{shelf}/books/{book}",
        "bookstore.v1.Bookstore.GetBook"
    ));
    assert!(has_row(
        &output,
        "POST",
        "/v1/shelves/{shelf}/books/{book}:publish",
        "bookstore.v1.Bookstore.PublishBook"
    ));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.ends_with("16 route(s) OK\n"), "{stdout}");
}

#[test]
fn serve_with_a_bad_config_exits_with_the_diagnostic_without_starting() {
    let config = repo().join("tests/config/unknown_service.toml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_protogate"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn protogate serve");
    let started = Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve with a bad config is still running after 20s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("output");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unknown_service.toml:10:11: unknown service 'bookstore.v1.BookStore'"),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: did you mean 'bookstore.v1.Bookstore'?"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("listening"),
        "serve must not start: {stderr}"
    );
}

/// A routes.toml whose one route needs a token from provider `idp`, which
/// fetches its keys from `jwks_url`; the gateway listens on a free port.
fn jwks_routes(jwks_url: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"

{proto}
[upstreams.bookstore]
endpoints = ["http://127.0.0.1:50051"]

[auth.providers.idp]
issuer = "https://issuer.test"
algorithms = ["RS256"]
jwks_url = "{jwks_url}"

[[routes]]
service = "bookstore.v1.Bookstore"
upstream = "bookstore"
auth = "idp"
"#,
        proto = proto_section("bookstore/v1/bookstore.proto")
    )
}

/// `protogate serve` on `toml` with extra environment, its stderr read line
/// by line on a thread: the lines arrive on the returned channel as they
/// are written, so a test waits on the event, not on a clock.
struct Serving {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

impl Serving {
    fn start(toml: &str, env: &[(&str, &str)]) -> Serving {
        use std::io::BufRead;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("routes.toml");
        std::fs::write(&path, toml).expect("write routes.toml");
        let mut command = Command::new(env!("CARGO_BIN_EXE_protogate"));
        command
            .args(["serve", "--config"])
            .arg(&path)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // The heap's page size follows this variable (src/main.rs); a test
        // that wants it sets it itself.
        command.env_remove("MIMALLOC_ALLOW_THP");
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("spawn protogate serve");
        let stderr = child.stderr.take().expect("stderr");
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        Serving {
            child,
            lines,
            _dir: dir,
        }
    }

    /// Every stderr line up to and including the first that contains
    /// `needle`; panics with what was seen if none does within 20 s or the
    /// process closes its stderr first.
    fn until(&self, needle: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    seen.push(line);
                    if found {
                        return seen;
                    }
                }
                Err(e) => panic!(
                    "no line containing {needle:?} ({e}); stderr so far:\n{}",
                    seen.join("\n")
                ),
            }
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        // Only the child this test started, by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_jwks_fetch_failure_logs_its_cause_not_just_error_sending_request() {
    // A socket bound but not listening: connecting to it is refused, and
    // holding it keeps the port from being reused by anything else.
    let closed =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    closed
        .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    let addr = closed
        .local_addr()
        .expect("local addr")
        .as_socket()
        .expect("inet");
    let serving = Serving::start(&jwks_routes(&format!("http://{addr}/jwks.json")), &[]);
    let lines = serving.until("JWKS fetch failed");
    let failure = lines.last().expect("a line");
    assert!(
        failure.contains("Connection refused") || failure.contains("connection refused"),
        "the log names the cause: {failure}"
    );
    assert!(!failure.contains('\u{1b}'), "no colour codes: {failure:?}");
}

#[test]
fn serve_without_ca_certificates_exits_with_an_error_naming_the_jwks_provider_instead_of_panicking()
{
    let dir = tempfile::tempdir().expect("tempdir");
    let nowhere = dir.path().join("no-such-bundle.pem");
    let nowhere = nowhere.to_str().expect("utf-8 path");
    let mut serving = Serving::start(
        &jwks_routes("https://issuer.test/jwks.json"),
        &[("SSL_CERT_FILE", nowhere), ("SSL_CERT_DIR", nowhere)],
    );
    let lines = serving.until("1 error in");
    let text = lines.join("\n");
    assert!(
        text.contains("provider 'idp': cannot build the HTTP client for jwks_url"),
        "{text}"
    );
    assert!(text.contains("CA certificates"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
    let status = serving.child.wait().expect("wait");
    assert_eq!(status.code(), Some(1), "{text}");
}

#[test]
fn check_warns_about_a_public_cache_policy_on_a_route_that_forwards_authorization() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("routes.toml");
    let toml = format!(
        "{}{}cache = {{ public = true, max_age = \"10s\" }}\nforward_authorization = true\n",
        proto_section("testing/v1/everything.proto"),
        EVERYTHING_ROUTES
    );
    std::fs::write(&path, toml).expect("write routes.toml");
    let output = Command::new(env!("CARGO_BIN_EXE_protogate"))
        .args(["check", "--config", path.to_str().expect("utf-8 path")])
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run protogate");
    assert_success(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("a public cache policy with forward_authorization = true"),
        "{stderr}"
    );
    assert!(stderr.contains("GET /v1/echo"), "{stderr}");
}

/// `THP_enabled` of a running process's /proc/PID/status: whether its new
/// anonymous memory may get transparent huge pages.
fn huge_pages_enabled(pid: u32) -> bool {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    let line = status
        .lines()
        .find(|line| line.starts_with("THP_enabled:"))
        .unwrap_or_else(|| panic!("no THP_enabled line in /proc/PID/status:\n{status}"));
    line.split_whitespace().nth(1) == Some("1")
}

/// A routes.toml with one public route whose upstream is never called: enough
/// for `serve` to start listening.
fn plain_routes() -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"

{proto}
[upstreams.bookstore]
endpoints = ["http://127.0.0.1:9"]

[[routes]]
service = "bookstore.v1.Bookstore"
upstream = "bookstore"
auth = "none"
"#,
        proto = proto_section("bookstore/v1/bookstore.proto")
    )
}

#[cfg(target_os = "linux")]
#[test]
fn the_heap_is_kept_off_huge_pages_unless_mimalloc_allow_thp_is_set() {
    // The flag is inherited: the test's own process must still allow huge
    // pages, or the second half could not tell the two cases apart.
    assert!(
        huge_pages_enabled(std::process::id()),
        "this kernel or this test's parent has transparent huge pages off"
    );
    let default = Serving::start(&plain_routes(), &[("RUST_LOG", "info")]);
    default.until("protogate listening");
    assert!(
        !huge_pages_enabled(default.child.id()),
        "by default the process must have transparent huge pages off"
    );

    let chosen = Serving::start(
        &plain_routes(),
        &[("RUST_LOG", "info"), ("MIMALLOC_ALLOW_THP", "1")],
    );
    chosen.until("protogate listening");
    assert!(
        huge_pages_enabled(chosen.child.id()),
        "MIMALLOC_ALLOW_THP=1 must leave huge pages to mimalloc"
    );
}
