//! Request smuggling through real proxies: nginx (Debian's `nginx`) and
//! Varnish (`varnish`) in front of the gateway, each reusing its backend
//! connections, get the HTTP/1 inputs where parsers disagree (a
//! `Transfer-Encoding` other than `chunked`, bare-LF line endings, obs-fold,
//! Content-Length beside Transfer-Encoding, a `#fragment` in the target),
//! each hiding a second request in its body. The hidden request must never
//! reach the upstream, and the next honest request through the same proxy
//! must get its own answer. docs/http1-leniencies.md lists what hyper still
//! accepts; these tests are the proof that it cannot be used to smuggle.
//! The proxies listen on Unix sockets in a temporary directory (no port is
//! picked and released) and are stopped by PID. Without nginx or varnishd
//! these tests fail (CI's `.ci/run` installs both).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// The request hidden in every attack; the upstream must never see it.
const HIDDEN: &str = "GET /v1/echo?stringValue=smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

/// One attack: a name and the raw bytes a client sends to the proxy.
fn attacks() -> Vec<(&'static str, String)> {
    let chunked_then_hidden = format!("0\r\n\r\n{HIDDEN}");
    let head = "POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n";
    vec![
        (
            "gzip, chunked beside Content-Length",
            format!(
                "{head}Content-Length: {}\r\nTransfer-Encoding: gzip, chunked\r\n\r\n{chunked_then_hidden}",
                chunked_then_hidden.len()
            ),
        ),
        (
            "chunked, identity",
            format!(
                "{head}Content-Length: {}\r\nTransfer-Encoding: chunked, identity\r\n\r\n{chunked_then_hidden}",
                chunked_then_hidden.len()
            ),
        ),
        (
            "Content-Length beside chunked",
            format!(
                "{head}Content-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{chunked_then_hidden}",
                chunked_then_hidden.len()
            ),
        ),
        (
            "chunked body longer than Content-Length",
            format!(
                "{head}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{HIDDEN}\r\n0\r\n\r\n",
                HIDDEN.len()
            ),
        ),
        (
            "Transfer-Encoding after a bare LF",
            format!(
                "{head}Content-Length: {}\r\nX-Pad: a\nTransfer-Encoding: chunked\r\n\r\n{chunked_then_hidden}",
                chunked_then_hidden.len()
            ),
        ),
        (
            "bare LF line endings throughout",
            format!(
                "POST /v1/echo HTTP/1.1\nHost: x\nContent-Type: application/json\nConnection: close\nContent-Length: {}\nTransfer-Encoding: chunked\n\n{chunked_then_hidden}",
                chunked_then_hidden.len()
            ),
        ),
        (
            "Transfer-Encoding folded onto a continuation line",
            format!(
                "{head}Content-Length: {}\r\nTransfer-Encoding:\r\n chunked\r\n\r\n{chunked_then_hidden}",
                chunked_then_hidden.len()
            ),
        ),
        (
            "fragment in the request target",
            format!(
                "GET /v1/echo?stringValue=plain#{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                "x".repeat(8)
            ),
        ),
        (
            "fragment hiding a request line",
            format!(
                "GET /v1/echo?stringValue=plain#\r\n{HIDDEN} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            ),
        ),
    ]
}

/// A proxy process in front of the gateway, stopped by PID when dropped.
struct Proxy {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    /// Waits until the proxy accepts on its socket (10 s at most).
    async fn ready(mut self) -> Proxy {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if UnixStream::connect(&self.socket).await.is_ok() {
                return self;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("proxy exited ({status}):\n{}", self.log_text());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "proxy not ready after 10 s:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// nginx as a reverse proxy with a keep-alive pool to `backend`.
async fn nginx(backend: std::net::SocketAddr) -> Proxy {
    let binary = installed_program("nginx", &["/usr/sbin/nginx"], "nginx");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display();
    let config = dir.path().join("nginx.conf");
    std::fs::write(
        &config,
        format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream gateway {{
        server {backend};
        keepalive 4;
    }}
    server {{
        listen unix:{d}/proxy.sock;
        location / {{
            proxy_pass http://gateway;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"#
        ),
    )
    .expect("write nginx.conf");
    let log = dir.path().join("error.log");
    let child = Command::new(binary)
        .arg("-c")
        .arg(&config)
        .arg("-p")
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn nginx");
    let socket = dir.path().join("proxy.sock");
    Proxy {
        child,
        socket,
        log,
        _dir: dir,
    }
    .ready()
    .await
}

/// varnishd with the builtin VCL (POSTs are passed, backend connections reused).
async fn varnish(backend: std::net::SocketAddr) -> Proxy {
    let binary = installed_program(
        "varnishd",
        &["/usr/sbin/varnishd", "/usr/local/sbin/varnishd"],
        "varnish",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let vcl = dir.path().join("proxy.vcl");
    std::fs::write(
        &vcl,
        format!(
            "vcl 4.1;\nbackend default {{ .host = \"127.0.0.1\"; .port = \"{}\"; }}\n",
            backend.port()
        ),
    )
    .expect("write VCL");
    let socket = dir.path().join("proxy.sock");
    let log = dir.path().join("varnishd.log");
    let output = std::fs::File::create(&log).expect("log file");
    let child = Command::new(binary)
        .arg("-F")
        .args(["-j", "none"])
        .args(["-T", "none"])
        .arg("-n")
        .arg(dir.path().join("work"))
        .arg("-f")
        .arg(&vcl)
        .arg("-a")
        .arg(format!("{},mode=0600", socket.display()))
        .args(["-s", "malloc,16m"])
        .stdin(Stdio::null())
        .stdout(output.try_clone().expect("log file"))
        .stderr(output)
        .spawn()
        .expect("spawn varnishd");
    Proxy {
        child,
        socket,
        log,
        _dir: dir,
    }
    .ready()
    .await
}

/// Sends `raw` to the proxy and reads until it closes (10 s at most).
async fn exchange(socket: &Path, raw: &[u8]) -> String {
    let mut stream = UnixStream::connect(socket).await.expect("connect proxy");
    stream.write_all(raw).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Every attack through `proxy`, each followed by an honest request that
/// must get its own answer; the hidden request never reaches the upstream.
async fn nothing_is_smuggled_through(proxy: &Proxy, scripted: &Scripted) {
    for (i, (name, attack)) in attacks().into_iter().enumerate() {
        let answer = exchange(&proxy.socket, attack.as_bytes()).await;
        let honest = format!(
            "GET /v1/echo?stringValue=honest{i} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        );
        let next = exchange(&proxy.socket, honest.as_bytes()).await;
        assert!(
            next.starts_with("HTTP/1.1 200") && next.contains(&format!("honest{i}")),
            "after '{name}' (answered {answer:?}) the next request got: {next}\n{}",
            proxy.log_text()
        );
        let smuggled: Vec<_> = scripted
            .calls()
            .into_iter()
            .filter(|c| c.message["string_value"] == "smuggled")
            .collect();
        assert!(
            smuggled.is_empty(),
            "'{name}' smuggled a request to the upstream (proxy answered {answer:?})"
        );
    }
}

#[tokio::test]
async fn nothing_is_smuggled_through_nginx() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, "")).await;
    let proxy = nginx(gateway.addr).await;
    nothing_is_smuggled_through(&proxy, &scripted).await;
}

#[tokio::test]
async fn nothing_is_smuggled_through_varnish() {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, "")).await;
    let proxy = varnish(gateway.addr).await;
    nothing_is_smuggled_through(&proxy, &scripted).await;
}
