//! Varnish (Debian's `varnish`, `/usr/sbin/varnishd`) in front of the
//! gateway as a plain HTTP cache that obeys the origin's headers: the
//! builtin VCL plus `grace = 0s` and `keep = 30s`, so an expired object is
//! revalidated at once with `If-None-Match`. A recording proxy between
//! Varnish and the gateway shows what Varnish asked and what the gateway
//! answered; the scripted upstream counts the calls that reached it.
//!
//! Public answers are served from the cache; private and authenticated ones
//! never reach another caller; an expired entry is refreshed by the
//! gateway's 304; `Vary: Accept-Encoding` keeps gzip and identity apart.
//! varnishd runs with `-p http_gzip_support=off` so Varnish stores exactly
//! what the gateway sent rather than its own gzip copy. Without varnishd
//! these tests fail (CI's `.ci/run` installs it).

#[path = "varnish/recorder.rs"]
mod recorder;
mod support;

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http::HeaderMap;
use recorder::Recorder;
use support::*;

/// varnishd, wherever Debian put it; fails the test with an install hint if missing.
fn varnishd() -> PathBuf {
    installed_program(
        "varnishd",
        &["/usr/sbin/varnishd", "/usr/local/sbin/varnishd"],
        "varnish",
    )
}

/// A varnishd in the foreground on 127.0.0.1, stopped (by PID) when dropped.
struct Varnish {
    child: Child,
    base: String,
    dir: tempfile::TempDir,
}

impl Varnish {
    /// Starts varnishd with the builtin VCL behaviour in front of `backend`,
    /// plus `extra` VCL (subroutines run before the builtin ones).
    async fn start(backend: SocketAddr, extra: &str) -> Varnish {
        let binary = varnishd();
        let dir = tempfile::tempdir().expect("tempdir");
        let vcl = dir.path().join("test.vcl");
        std::fs::write(
            &vcl,
            format!(
                r#"vcl 4.1;

backend default {{
    .host = "127.0.0.1";
    .port = "{port}";
}}

sub vcl_backend_response {{
    # No stale serving: an expired object is refetched at once, and kept
    # meanwhile so that the refetch is conditional (If-None-Match).
    set beresp.grace = 0s;
    set beresp.keep = 30s;
}}
{extra}
"#,
                port = backend.port()
            ),
        )
        .expect("write VCL");
        let port = free_port();
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
            .args(["-a", &format!("127.0.0.1:{port}")])
            .args(["-s", "malloc,32m"])
            .args(["-p", "http_gzip_support=off"])
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("log file"))
            .stderr(output)
            .spawn()
            .expect("spawn varnishd");
        let mut varnish = Varnish {
            child,
            base: format!("http://127.0.0.1:{port}"),
            dir,
        };
        varnish.wait_ready(&log).await;
        varnish
    }

    /// Waits for "Child launched OK"; panics with the log if varnishd dies
    /// or takes longer than 10 s.
    async fn wait_ready(&mut self, log: &Path) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if text.contains("Child launched OK") {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("varnishd exited ({status}) at start:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "varnishd not ready after 10 s:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// varnishd's own output so far, for failure messages.
    fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(self.dir.path().join("varnishd.log")) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for Varnish {
    fn drop(&mut self) {
        // SIGTERM lets the manager stop its worker child; SIGKILL if it hangs.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The whole chain: client → Varnish → recorder → gateway → scripted Echo.
struct Chain {
    scripted: Scripted,
    recorder: Recorder,
    varnish: Varnish,
    _gateway: TestGateway,
}

async fn chain(extra_toml: &str, extra_vcl: &str) -> Chain {
    let scripted = spawn_scripted(pool(), Reply::Echo).await;
    let gateway = spawn_gateway(&everything_toml(scripted.addr, extra_toml)).await;
    let recorder = Recorder::start(gateway.addr).await;
    let varnish = Varnish::start(recorder.addr, extra_vcl).await;
    Chain {
        scripted,
        recorder,
        varnish,
        _gateway: gateway,
    }
}

/// What a client got through Varnish.
struct Got {
    status: u16,
    headers: HeaderMap,
    body: bytes::Bytes,
}

impl Got {
    /// Varnish's `X-Varnish` holds two transaction ids on a cache hit.
    fn is_hit(&self) -> bool {
        let ids = self
            .headers
            .get("x-varnish")
            .unwrap_or_else(|| panic!("not from Varnish: {:?}", self.headers))
            .to_str()
            .expect("ASCII")
            .split_whitespace()
            .count();
        ids == 2
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII").to_string())
    }
}

impl Chain {
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Got {
        let mut request = client()
            .get(format!("{}{path}", self.varnish.base))
            .timeout(Duration::from_secs(5));
        for &(name, value) in headers {
            request = request.header(name, value);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path} through Varnish: {e}\n{}", self.varnish.log()));
        Got {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.bytes().await.expect("body"),
        }
    }
}

/// The shared HS256 provider `t`, with tokens as `Authorization` values.
fn hmac_provider(dir: &Path) -> (String, impl Fn(&str) -> String) {
    let (table, mint) = support::hmac_provider(dir);
    (table, move |sub: &str| format!("Bearer {}", mint(sub)))
}

#[tokio::test]
async fn public_get_is_a_miss_then_a_hit_and_the_upstream_sees_one_call() {
    let chain = chain(r#"cache = { public = true, max_age = "30s" }"#, "").await;
    let path = "/v1/echo?string_value=cached";
    let first = chain.get(path, &[]).await;
    assert_eq!(first.status, 200);
    assert!(!first.is_hit(), "the first GET is a miss");
    let second = chain.get(path, &[]).await;
    assert_eq!(second.status, 200);
    assert!(
        second.is_hit(),
        "the second GET is a hit: {:?}",
        second.headers
    );
    assert_eq!(second.body, first.body);
    assert_eq!(second.header("etag"), first.header("etag"));
    assert_eq!(
        second.header("cache-control").as_deref(),
        Some("public, max-age=30")
    );
    assert_eq!(chain.scripted.call_count(), 1);
    assert_eq!(chain.recorder.exchanges().len(), 1);
}

#[tokio::test]
async fn private_answers_are_fetched_for_every_caller() {
    let chain = chain(
        "[routes.methods.EchoPath]\ncache = { max_age = \"30s\" }\n",
        "",
    )
    .await;
    // EchoQuery has no cache table (private, no-cache); EchoPath is private, max-age=30.
    for (path, control) in [
        ("/v1/echo?string_value=mine", "private, no-cache"),
        ("/v1/echo/mine/1/label", "private, max-age=30"),
    ] {
        let before = chain.scripted.call_count();
        for caller in ["alice-browser", "bob-browser"] {
            let got = chain.get(path, &[("user-agent", caller)]).await;
            assert_eq!(got.status, 200);
            assert!(!got.is_hit(), "{path} for {caller} came from the cache");
            assert_eq!(got.header("cache-control").as_deref(), Some(control));
        }
        assert_eq!(chain.scripted.call_count() - before, 2, "{path}");
    }
}

/// `[routes.methods.EchoQuery]` behind provider `t`, public for anonymous callers.
fn authenticated_route(provider: &str) -> String {
    format!(
        "[routes.methods.EchoQuery]\nauth = \"t\"\ncache = {{ public = true, max_age = \"30s\", s_maxage = \"60s\" }}\n{provider}"
    )
}

#[tokio::test]
async fn authenticated_answers_are_fetched_for_every_caller() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (provider, mint) = hmac_provider(dir.path());
    let chain = chain(&authenticated_route(&provider), "").await;
    let path = "/v1/echo?string_value=account";
    for sub in ["alice", "bob"] {
        let got = chain.get(path, &[("authorization", &mint(sub))]).await;
        assert_eq!(got.status, 200);
        assert!(!got.is_hit(), "{sub} got a cached answer");
        assert_eq!(
            got.header("cache-control").as_deref(),
            Some("private, max-age=30")
        );
    }
    assert_eq!(chain.scripted.call_count(), 2);
    let anonymous = chain.get(path, &[]).await;
    assert_eq!(
        anonymous.status, 401,
        "an anonymous caller is refused, not served a copy"
    );
    assert_eq!(chain.scripted.call_count(), 2);
}

#[tokio::test]
async fn private_marking_keeps_authenticated_answers_out_of_a_cache_that_ignores_authorization() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (provider, mint) = hmac_provider(dir.path());
    // A careless CDN rule: look every GET up in the cache, credentials or not.
    let chain = chain(
        &authenticated_route(&provider),
        "sub vcl_recv { if (req.method == \"GET\") { return (hash); } }",
    )
    .await;
    let path = "/v1/echo?string_value=account";
    for sub in ["alice", "bob", "carol"] {
        let got = chain.get(path, &[("authorization", &mint(sub))]).await;
        assert_eq!(got.status, 200);
        assert!(!got.is_hit(), "{sub} got another caller's answer");
    }
    assert_eq!(chain.scripted.call_count(), 3);
    let anonymous = chain.get(path, &[]).await;
    assert_eq!(anonymous.status, 401);
    assert!(!anonymous.is_hit());
}

#[tokio::test]
async fn a_forwarded_credential_keeps_the_answer_out_of_a_cache_that_ignores_authorization() {
    // A public route (auth = "none") that passes the client's Authorization
    // upstream, behind the same careless CDN rule.
    let chain = chain(
        "forward_authorization = true\ncache = { public = true, max_age = \"30s\" }\n",
        "sub vcl_recv { if (req.method == \"GET\") { return (hash); } }",
    )
    .await;
    let path = "/v1/echo?string_value=session";
    let personal = chain
        .get(path, &[("authorization", "Bearer alice-session")])
        .await;
    assert_eq!(personal.status, 200);
    assert!(
        personal
            .header("cache-control")
            .is_some_and(|c| c.starts_with("private"))
    );
    // The next anonymous caller must not get alice's answer from Varnish.
    let anonymous = chain.get(path, &[]).await;
    assert!(
        !anonymous.is_hit(),
        "the anonymous caller got alice's answer"
    );
    assert_eq!(chain.scripted.call_count(), 2);
    assert!(
        chain.scripted.calls()[1]
            .headers
            .get("authorization")
            .is_none()
    );
    // Anonymous answers stay publicly cacheable.
    assert!(chain.get(path, &[]).await.is_hit());
    assert_eq!(chain.scripted.call_count(), 2);
}

#[tokio::test]
async fn expired_entry_is_revalidated_and_the_gateways_304_refreshes_it() {
    let chain = chain(r#"cache = { public = true, max_age = "1s" }"#, "").await;
    let path = "/v1/echo?string_value=short-lived";
    let first = chain.get(path, &[]).await;
    assert_eq!(first.status, 200);
    let tag = first.header("etag").expect("ETag");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let second = chain.get(path, &[]).await;
    assert_eq!(second.status, 200, "the client still gets the full answer");
    assert!(!second.is_hit(), "an expired object is not a hit");
    assert_eq!(second.body, first.body);
    assert_eq!(second.header("etag").as_deref(), Some(tag.as_str()));
    let exchanges = chain.recorder.exchanges();
    assert_eq!(exchanges.len(), 2, "{exchanges:?}");
    assert!(
        exchanges
            .iter()
            .all(|e| e.method == http::Method::GET && e.target == path),
        "{exchanges:?}"
    );
    assert_eq!(exchanges[0].request.get("if-none-match"), None);
    assert_eq!(exchanges[0].status, 200);
    assert_eq!(
        exchanges[1]
            .request
            .get("if-none-match")
            .map(|v| v.to_str().expect("ASCII")),
        Some(tag.as_str()),
        "Varnish revalidates with the stored ETag"
    );
    assert_eq!(exchanges[1].status, 304, "the gateway confirms it");
    // The 304 made the object fresh again: the next GET is a hit.
    let third = chain.get(path, &[]).await;
    assert!(third.is_hit(), "{:?}", third.headers);
    assert_eq!(third.body, first.body);
    assert_eq!(chain.recorder.exchanges().len(), 2);
    assert_eq!(chain.scripted.call_count(), 2);
}

/// A JSON answer well above the default min_bytes.
fn big_path() -> String {
    format!("/v1/echo?string_value={}", "varnish".repeat(600))
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("valid gzip");
    out
}

#[tokio::test]
async fn vary_accept_encoding_keeps_gzip_and_identity_variants_apart() {
    let chain = chain(r#"cache = { public = true, max_age = "30s" }"#, "").await;
    let path = big_path();
    let gzip = [("accept-encoding", "gzip")];
    let zipped = chain.get(&path, &gzip).await;
    assert_eq!(zipped.header("content-encoding").as_deref(), Some("gzip"));
    let plain = chain.get(&path, &[]).await;
    assert!(
        !plain.is_hit(),
        "identity is another variant: {:?}",
        plain.headers
    );
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(gunzip(&zipped.body), plain.body.to_vec());
    serde_json::from_slice::<serde_json::Value>(&plain.body).expect("plain JSON");
    for _ in 0..2 {
        let again = chain.get(&path, &gzip).await;
        assert!(again.is_hit());
        assert_eq!(again.header("content-encoding").as_deref(), Some("gzip"));
        assert_eq!(again.body, zipped.body);
        let again = chain.get(&path, &[]).await;
        assert!(again.is_hit());
        assert_eq!(again.header("content-encoding"), None);
        assert_eq!(again.body, plain.body);
    }
    assert_eq!(chain.scripted.call_count(), 2);
}

#[tokio::test]
async fn expired_gzip_variant_is_revalidated_under_its_own_etag() {
    let chain = chain(r#"cache = { public = true, max_age = "1s" }"#, "").await;
    let path = big_path();
    let gzip = [("accept-encoding", "gzip")];
    let first = chain.get(&path, &gzip).await;
    let tag = first.header("etag").expect("ETag");
    assert!(tag.ends_with("-gzip\""), "{tag}");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let second = chain.get(&path, &gzip).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.header("content-encoding").as_deref(), Some("gzip"));
    assert_eq!(second.body, first.body);
    assert_eq!(second.header("etag").as_deref(), Some(tag.as_str()));
    let exchanges = chain.recorder.exchanges();
    assert_eq!(exchanges.len(), 2, "{exchanges:?}");
    assert_eq!(exchanges[1].status, 304);
    let revalidated = &exchanges[1].response;
    assert_eq!(
        revalidated.get("etag").map(|v| v.to_str().expect("ASCII")),
        Some(tag.as_str()),
        "the 304 names the gzip representation"
    );
    assert!(
        revalidated
            .get_all("vary")
            .iter()
            .any(|v| v.to_str().expect("ASCII").contains("accept-encoding")),
        "{revalidated:?}"
    );
    // An identity client still gets its own, uncompressed variant.
    let plain = chain.get(&path, &[]).await;
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(gunzip(&first.body), plain.body.to_vec());
}
