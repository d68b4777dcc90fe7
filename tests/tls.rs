//! TLS on both sides of the gateway, with certificates made here (rcgen) and
//! real handshakes over loopback sockets.
//!
//! Upstream: the demo Bookstore served over rustls (ALPN h2) is called
//! through an `https://` endpoint trusting the test CA; a wrong CA, a
//! certificate for another name, a missing client certificate (mTLS) or a
//! server that picks no ALPN protocol fail the dial, answered as 503 with
//! the reason in the log. Downstream: `[server] tls` serves HTTP/2 (ALPN)
//! and HTTP/1.1, and a reload swaps the certificate for new connections
//! while an open one goes on.

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// === certificates ===

/// A test certificate authority.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM files hold them.
struct Leaf {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().expect("CA key");
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `names` (DNS names or IP addresses) signed by this CA.
    fn leaf(&self, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let params = CertificateParams::new(names).expect("leaf params");
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

impl Leaf {
    fn chain(&self) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(self.cert.as_bytes())
            .collect::<Result<_, _>>()
            .expect("certificate PEM")
    }

    fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(self.key.as_bytes()).expect("key PEM")
    }

    fn der(&self) -> Vec<u8> {
        self.chain()[0].to_vec()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Server settings presenting `leaf`, offering `alpn`, and requiring a
/// client certificate signed by `client_ca` when given.
fn server_config(leaf: &Leaf, alpn: &[&[u8]], client_ca: Option<&Ca>) -> rustls::ServerConfig {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(ca.pem().as_bytes()).expect("CA PEM"))
                .expect("root");
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(leaf.chain(), leaf.private_key())
        .expect("server certificate");
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

// === an upstream over TLS ===

/// The demo Bookstore over TLS on 127.0.0.1:0, and how many TLS handshakes
/// it completed.
async fn spawn_tls_bookstore(config: rustls::ServerConfig) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("addr");
    let handshakes = Arc::new(AtomicUsize::new(0));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let routes = tonic::service::Routes::new(
        protogate::cli::demo::pb::bookstore::v1::bookstore_server::BookstoreServer::new(
            protogate::cli::demo::Store::with_sample_data(),
        ),
    );
    let counter = handshakes.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, routes, counter) = (acceptor.clone(), routes.clone(), counter.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(routes))
                    .await;
            });
        }
    });
    (addr, handshakes)
}

/// A routes.toml in `dir` for the Bookstore at `endpoint`, with
/// `upstream_extra` in its upstream table and `server_extra` in `[server]`.
fn write_routes(dir: &Path, endpoint: &str, upstream_extra: &str, server_extra: &str) {
    let toml = format!(
        r#"
[server]
access_log = false
{server_extra}

[proto]
files = ["bookstore/v1/bookstore.proto"]
include = ["{PROTO_DIR}"]

[upstreams.bookstore]
endpoints = ["{endpoint}"]
connections = 1
connect_timeout = "10s"
{upstream_extra}

[[routes]]
service = "bookstore.v1.Bookstore"
upstream = "bookstore"
auth = "none"
"#
    );
    std::fs::write(dir.join("routes.toml"), toml).expect("write routes.toml");
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write file");
}

/// The WARN lines the gateway logs, from every test of this binary (a
/// thread's own subscriber can miss events while other threads register
/// the same call sites, so one global subscriber collects them all).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("logs").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// The collector, installed on first use.
    fn global() -> &'static Logs {
        static LOGS: OnceLock<Logs> = OnceLock::new();
        LOGS.get_or_init(|| {
            let logs = Logs::default();
            let writer = logs.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::WARN)
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .finish();
            tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
            logs
        })
    }

    /// The lines about `endpoint` (unique to a test: its port).
    fn about(&self, endpoint: SocketAddr) -> String {
        let text = String::from_utf8_lossy(&self.0.lock().expect("logs")).into_owned();
        let endpoint = endpoint.to_string();
        text.lines()
            .filter(|line| line.contains(&endpoint))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// `GET /v1/shelves` through the gateway: its status.
async fn list_shelves(gateway: &TestGateway) -> u16 {
    client()
        .get(format!("{}/v1/shelves", gateway.base))
        .send()
        .await
        .expect("send")
        .status()
        .as_u16()
}

#[tokio::test]
async fn an_https_upstream_is_called_over_tls_trusting_the_configured_ca() {
    let ca = Ca::new("upstream CA");
    let (upstream, handshakes) =
        spawn_tls_bookstore(server_config(&ca.leaf(&["127.0.0.1"]), &[b"h2"], None)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "ca.pem", &ca.pem());
    write_routes(
        dir.path(),
        &format!("https://{upstream}"),
        "tls = { ca = \"ca.pem\" }",
        "",
    );
    let (gateway, _) = spawn_gateway_from(&dir.path().join("routes.toml")).await;
    let response = client()
        .get(format!("{}/v1/shelves", gateway.base))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.expect("json");
    assert!(
        body["shelves"].as_array().is_some_and(|s| !s.is_empty()),
        "{body}"
    );
    assert_eq!(handshakes.load(Ordering::SeqCst), 1, "one TLS connection");
}

#[tokio::test]
async fn an_upstream_certificate_from_another_ca_fails_the_call_with_503_and_says_why() {
    let logs = Logs::global();
    let (upstream, handshakes) = spawn_tls_bookstore(server_config(
        &Ca::new("the upstream's CA").leaf(&["127.0.0.1"]),
        &[b"h2"],
        None,
    ))
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "ca.pem", &Ca::new("another CA").pem());
    write_routes(
        dir.path(),
        &format!("https://{upstream}"),
        "tls = { ca = \"ca.pem\" }",
        "",
    );
    let (gateway, _) = spawn_gateway_from(&dir.path().join("routes.toml")).await;
    assert_eq!(list_shelves(&gateway).await, 503);
    assert_eq!(handshakes.load(Ordering::SeqCst), 0);
    let logged = logs.about(upstream);
    assert!(
        logged.contains("TLS handshake") && logged.contains("UnknownIssuer"),
        "{logged}"
    );
}

#[tokio::test]
async fn a_reload_rereads_the_upstream_ca_file() {
    let ca = Ca::new("upstream CA");
    let (upstream, _) =
        spawn_tls_bookstore(server_config(&ca.leaf(&["127.0.0.1"]), &[b"h2"], None)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "ca.pem", &Ca::new("another CA").pem());
    write_routes(
        dir.path(),
        &format!("https://{upstream}"),
        "tls = { ca = \"ca.pem\" }",
        "",
    );
    let routes = dir.path().join("routes.toml");
    let (gateway, handle) = spawn_gateway_from(&routes).await;
    assert_eq!(list_shelves(&gateway).await, 503);

    // Same routes.toml, new file contents: the reload reads them.
    write(dir.path(), "ca.pem", &ca.pem());
    assert!(protogate::cli::reload(&handle, None, &routes).await);
    assert_eq!(list_shelves(&gateway).await, 200);
}

#[tokio::test]
async fn server_name_checks_a_certificate_for_a_dns_name_behind_an_ip_endpoint() {
    let ca = Ca::new("upstream CA");
    let (upstream, _) = spawn_tls_bookstore(server_config(
        &ca.leaf(&["bookstore.internal"]),
        &[b"h2"],
        None,
    ))
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "ca.pem", &ca.pem());
    let endpoint = format!("https://{upstream}");
    let routes = dir.path().join("routes.toml");

    // Checked against the endpoint's host, 127.0.0.1, the certificate fails.
    let logs = Logs::global();
    write_routes(dir.path(), &endpoint, "tls = { ca = \"ca.pem\" }", "");
    let (gateway, _) = spawn_gateway_from(&routes).await;
    assert_eq!(list_shelves(&gateway).await, 503);
    let logged = logs.about(upstream);
    assert!(logged.contains("not valid for name"), "{logged}");
    drop(gateway);

    write_routes(
        dir.path(),
        &endpoint,
        "tls = { ca = \"ca.pem\", server_name = \"bookstore.internal\" }",
        "",
    );
    let (gateway, _) = spawn_gateway_from(&routes).await;
    assert_eq!(list_shelves(&gateway).await, 200);
}

#[tokio::test]
async fn an_mtls_upstream_refuses_the_gateway_without_a_client_certificate_and_serves_it_with_one()
{
    let server_ca = Ca::new("upstream CA");
    let client_ca = Ca::new("client CA");
    let (upstream, handshakes) = spawn_tls_bookstore(server_config(
        &server_ca.leaf(&["127.0.0.1"]),
        &[b"h2"],
        Some(&client_ca),
    ))
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "ca.pem", &server_ca.pem());
    let client = client_ca.leaf(&["gateway.internal"]);
    write(dir.path(), "client.pem", &client.cert);
    write(dir.path(), "client.key", &client.key);
    let endpoint = format!("https://{upstream}");
    let routes = dir.path().join("routes.toml");

    write_routes(dir.path(), &endpoint, "tls = { ca = \"ca.pem\" }", "");
    let (gateway, _) = spawn_gateway_from(&routes).await;
    assert_eq!(list_shelves(&gateway).await, 503);
    assert_eq!(handshakes.load(Ordering::SeqCst), 0);
    drop(gateway);

    write_routes(
        dir.path(),
        &endpoint,
        "tls = { ca = \"ca.pem\", client_cert = \"client.pem\", client_key = \"client.key\" }",
        "",
    );
    let (gateway, _) = spawn_gateway_from(&routes).await;
    assert_eq!(list_shelves(&gateway).await, 200);
    assert_eq!(handshakes.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_upstream_that_picks_no_alpn_protocol_is_a_failed_dial() {
    let logs = Logs::global();
    let ca = Ca::new("upstream CA");
    let (upstream, _) =
        spawn_tls_bookstore(server_config(&ca.leaf(&["127.0.0.1"]), &[], None)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "ca.pem", &ca.pem());
    write_routes(
        dir.path(),
        &format!("https://{upstream}"),
        "tls = { ca = \"ca.pem\" }",
        "",
    );
    let (gateway, _) = spawn_gateway_from(&dir.path().join("routes.toml")).await;
    assert_eq!(list_shelves(&gateway).await, 503);
    let logged = logs.about(upstream);
    assert!(logged.contains("no protocol in ALPN"), "{logged}");
}

// === the public listener over TLS ===

/// The name the gateway's certificates carry; clients resolve it to the gateway.
const GATEWAY_NAME: &str = "gateway.test";

/// A client that trusts only `ca`, reaches the gateway at [`GATEWAY_NAME`],
/// and reports the peer certificate.
fn tls_client(ca: &Ca, gateway: SocketAddr, http1_only: bool) -> reqwest::Client {
    let builder = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.pem().as_bytes()).expect("CA")])
        .resolve(GATEWAY_NAME, gateway)
        .tls_info(true);
    let builder = if http1_only {
        builder.http1_only()
    } else {
        builder
    };
    builder.build().expect("client")
}

/// `GET /v1/shelves` over TLS: the HTTP version and the certificate the
/// gateway presented, or the error.
async fn get_over_tls(
    client: &reqwest::Client,
    gateway: SocketAddr,
) -> Result<(reqwest::Version, Vec<u8>), reqwest::Error> {
    let response = client
        .get(format!(
            "https://{GATEWAY_NAME}:{}/v1/shelves",
            gateway.port()
        ))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    let certificate = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .expect("TLS info")
        .to_vec();
    Ok((response.version(), certificate))
}

/// A gateway in `dir` serving `leaf` on its listener, in front of a
/// cleartext Bookstore.
async fn tls_gateway(dir: &Path, leaf: &Leaf) -> (TestGateway, Arc<protogate::pipeline::Gateway>) {
    tls_gateway_with(dir, leaf, "").await
}

/// [`tls_gateway`] with more `[server]` lines.
async fn tls_gateway_with(
    dir: &Path,
    leaf: &Leaf,
    server_extra: &str,
) -> (TestGateway, Arc<protogate::pipeline::Gateway>) {
    let (upstream, _) = spawn_bookstore().await;
    write(dir, "server.pem", &leaf.cert);
    write(dir, "server.key", &leaf.key);
    write_routes(
        dir,
        &format!("http://{upstream}"),
        "",
        &format!("tls = {{ cert = \"server.pem\", key = \"server.key\" }}\n{server_extra}"),
    );
    spawn_gateway_from(&dir.join("routes.toml")).await
}

#[tokio::test]
async fn the_listener_serves_http2_by_alpn_and_http1_over_tls() {
    let ca = Ca::new("gateway CA");
    let leaf = ca.leaf(&[GATEWAY_NAME]);
    let dir = tempfile::tempdir().expect("tempdir");
    let (gateway, _) = tls_gateway(dir.path(), &leaf).await;

    let (version, certificate) = get_over_tls(&tls_client(&ca, gateway.addr, false), gateway.addr)
        .await
        .expect("HTTP/2 over TLS");
    assert_eq!(version, reqwest::Version::HTTP_2);
    assert_eq!(certificate, leaf.der());

    let (version, _) = get_over_tls(&tls_client(&ca, gateway.addr, true), gateway.addr)
        .await
        .expect("HTTP/1.1 over TLS");
    assert_eq!(version, reqwest::Version::HTTP_11);
}

#[tokio::test]
async fn a_reload_gives_new_connections_the_new_certificate_while_an_open_one_goes_on() {
    let old_ca = Ca::new("old CA");
    let new_ca = Ca::new("new CA");
    let old_leaf = old_ca.leaf(&[GATEWAY_NAME]);
    let new_leaf = new_ca.leaf(&[GATEWAY_NAME]);
    let dir = tempfile::tempdir().expect("tempdir");
    let (gateway, handle) = tls_gateway(dir.path(), &old_leaf).await;
    let listener_tls = handle.snapshot().settings.listener.tls.clone();
    let listener_tls = listener_tls.as_deref().expect("the listener has TLS");

    // Trusting only the old CA, this client can only go on over the
    // connection it opens now: a new one would get the new certificate.
    let open = tls_client(&old_ca, gateway.addr, false);
    let (_, seen) = get_over_tls(&open, gateway.addr).await.expect("before");
    assert_eq!(seen, old_leaf.der());

    write(dir.path(), "server.pem", &new_leaf.cert);
    write(dir.path(), "server.key", &new_leaf.key);
    let routes = dir.path().join("routes.toml");
    assert!(protogate::cli::reload(&handle, Some(listener_tls), &routes).await);

    let (_, seen) = get_over_tls(&tls_client(&new_ca, gateway.addr, false), gateway.addr)
        .await
        .expect("a new connection after the reload");
    assert_eq!(seen, new_leaf.der());
    assert!(
        get_over_tls(&tls_client(&old_ca, gateway.addr, false), gateway.addr)
            .await
            .is_err(),
        "a new connection must not get the old certificate"
    );
    let (_, seen) = get_over_tls(&open, gateway.addr)
        .await
        .expect("the connection opened before the reload still gets answers");
    assert_eq!(seen, old_leaf.der());

    // A key that cannot be read fails the reload: the certificate stays.
    write(dir.path(), "server.key", "not a key");
    assert!(!protogate::cli::reload(&handle, Some(listener_tls), &routes).await);
    let (_, seen) = get_over_tls(&tls_client(&new_ca, gateway.addr, false), gateway.addr)
        .await
        .expect("after a failed reload");
    assert_eq!(seen, new_leaf.der());
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_never_completes_the_tls_handshake_is_closed_after_first_request_timeout()
{
    let ca = Ca::new("gateway CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let leaf = ca.leaf(&[GATEWAY_NAME]);
    let (gateway, _) = tls_gateway_with(dir.path(), &leaf, "first_request_timeout = \"5s\"").await;
    // The first bytes of a TLS ClientHello record, and then nothing.
    let mut stream = TcpStream::connect(gateway.addr).await.expect("connect");
    stream
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .expect("write");
    let started = tokio::time::Instant::now();
    let mut sink = Vec::new();
    // Closed or reset, either ends the read.
    let _ = tokio::time::timeout(Duration::from_secs(3600), stream.read_to_end(&mut sink))
        .await
        .expect("a stalled handshake must not hold the connection");
    let held = started.elapsed();
    assert!(
        held >= Duration::from_secs(4) && held < Duration::from_secs(6),
        "{held:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_idle_tls_connection_is_closed_after_idle_timeout() {
    let ca = Ca::new("gateway CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let leaf = ca.leaf(&[GATEWAY_NAME]);
    // hyper's HTTP/1 head timer also runs between requests: set far off.
    let (gateway, _) = tls_gateway_with(
        dir.path(),
        &leaf,
        "idle_timeout = \"30s\"\nheader_read_timeout = \"600s\"",
    )
    .await;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem().as_bytes()).expect("CA PEM"))
        .expect("root");
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(gateway.addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from(GATEWAY_NAME).expect("name");
    let mut stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    // Answered by the gateway alone (no route): nothing else is in flight.
    stream
        .write_all(b"GET /nowhere HTTP/1.1\r\nhost: gateway.test\r\n\r\n")
        .await
        .expect("write");
    let mut first = [0u8; 12];
    stream.read_exact(&mut first).await.expect("answer");
    assert_eq!(&first, b"HTTP/1.1 404");
    let started = tokio::time::Instant::now();
    let mut sink = Vec::new();
    // Closed without close_notify ends the read with an error: either will do.
    let _ = tokio::time::timeout(Duration::from_secs(3600), stream.read_to_end(&mut sink))
        .await
        .expect("an idle connection must be closed");
    let held = started.elapsed();
    assert!(
        held >= Duration::from_secs(29) && held < Duration::from_secs(32),
        "{held:?}"
    );
}
