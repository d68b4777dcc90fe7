//! TLS to an upstream: the rustls client settings one upstream's
//! connections share (roots, optional client certificate, ALPN `h2`) and
//! the name its certificates are checked against.
//!
//! The crypto is aws-lc-rs, passed explicitly rather than taken from a
//! process-wide default: the default panics when no provider or two
//! providers are compiled in, and jsonwebtoken already uses aws-lc-rs.

use std::sync::Arc;

use http::uri::Scheme;
use rustls::ClientConfig;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls_platform_verifier::BuilderVerifierExt;
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// gRPC is HTTP/2 only: the one protocol offered in ALPN.
const ALPN_H2: &[u8] = b"h2";

/// How one upstream's connections speak TLS.
#[derive(Debug)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    /// Checked against the certificates instead of each endpoint's host.
    server_name: Option<ServerName<'static>>,
    /// SHA-256 of everything the settings were built from: a reload that
    /// reads the same files and names compares equal and keeps the pool.
    fingerprint: [u8; 32],
}

/// Two settings built from the same roots, identity and server name are
/// the same settings (the rustls config itself cannot be compared).
impl PartialEq for ClientTls {
    fn eq(&self, other: &ClientTls) -> bool {
        self.fingerprint == other.fingerprint
    }
}

/// Who the gateway is to an upstream that asks for a client certificate.
#[derive(Debug)]
pub struct ClientIdentity {
    /// The certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
}

// === impl ClientTls ===

impl ClientTls {
    /// Client settings trusting `roots` (or the system's roots when `None`),
    /// presenting `identity` when the upstream asks for one, and checking
    /// certificates against `server_name` when given.
    pub fn new(
        roots: Option<Vec<CertificateDer<'static>>>,
        identity: Option<ClientIdentity>,
        server_name: Option<ServerName<'static>>,
    ) -> Result<ClientTls, String> {
        let fingerprint = fingerprint(roots.as_deref(), identity.as_ref(), server_name.as_ref());
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS protocol versions: {e}"))?;
        let builder = match roots {
            Some(certificates) => {
                let mut store = RootCertStore::empty();
                for certificate in certificates {
                    store
                        .add(certificate)
                        .map_err(|e| format!("CA certificate: {e}"))?;
                }
                builder.with_root_certificates(store)
            }
            None => builder
                .with_platform_verifier()
                .map_err(|e| format!("system root certificates: {e}"))?,
        };
        let mut config = match identity {
            Some(identity) => builder
                .with_client_auth_cert(identity.chain, identity.key)
                .map_err(|e| format!("client certificate and key: {e}"))?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(ClientTls {
            config: Arc::new(config),
            server_name,
            fingerprint,
        })
    }

    /// Runs the TLS handshake on `stream` to `host`, and insists the upstream
    /// chose HTTP/2: one that does not would answer gRPC with HTTP/1.
    pub(super) async fn connect(
        &self,
        host: &str,
        stream: TcpStream,
    ) -> Result<TlsStream<TcpStream>, String> {
        let server_name = match &self.server_name {
            Some(name) => name.clone(),
            None => endpoint_name(host)?,
        };
        let stream = TlsConnector::from(self.config.clone())
            .connect(server_name.clone(), stream)
            .await
            .map_err(|e| format!("TLS handshake (server name {server_name:?}): {e}"))?;
        match stream.get_ref().1.alpn_protocol() {
            Some(ALPN_H2) => Ok(stream),
            Some(other) => Err(format!(
                "TLS: the upstream chose {:?} in ALPN instead of h2",
                String::from_utf8_lossy(other)
            )),
            None => Err(
                "TLS: the upstream chose no protocol in ALPN (it must offer h2 for gRPC)"
                    .to_string(),
            ),
        }
    }
}

/// Hashes TLS inputs, each length-prefixed so that no two different sets
/// of inputs run together into the same bytes.
fn fingerprint(
    roots: Option<&[CertificateDer<'static>]>,
    identity: Option<&ClientIdentity>,
    server_name: Option<&ServerName<'static>>,
) -> [u8; 32] {
    let mut hash = Sha256::new();
    let mut part = |label: &[u8], bytes: &[u8]| {
        hash.update(label);
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    };
    match roots {
        Some(roots) => roots.iter().for_each(|root| part(b"root", root)),
        None => part(b"system roots", b""),
    }
    if let Some(identity) = identity {
        identity.chain.iter().for_each(|cert| part(b"chain", cert));
        part(b"key", identity.key.secret_der());
    }
    if let Some(name) = server_name {
        part(b"server name", name.to_str().as_bytes());
    }
    hash.finalize().into()
}

/// The request URI scheme of an upstream's calls.
pub(super) fn scheme(tls: Option<&ClientTls>) -> Scheme {
    match tls {
        Some(_) => Scheme::HTTPS,
        None => Scheme::HTTP,
    }
}

/// The name an endpoint's certificate must carry: its host, a DNS name or
/// an IP address (bracketed in an authority when IPv6).
fn endpoint_name(host: &str) -> Result<ServerName<'static>, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_string())
        .map_err(|e| format!("{host:?} cannot be checked as a TLS server name: {e}"))
}

/// aws-lc-rs, the crypto the rest of the gateway uses.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_built_from_the_same_inputs_are_equal_and_a_new_name_is_not() {
        let named = |name: &str| {
            let name = ServerName::try_from(name.to_string()).expect("name");
            ClientTls::new(Some(Vec::new()), None, Some(name)).expect("settings")
        };
        assert_eq!(named("bookstore.internal"), named("bookstore.internal"));
        assert_ne!(named("bookstore.internal"), named("other.internal"));
        let unnamed = ClientTls::new(Some(Vec::new()), None, None).expect("settings");
        assert_ne!(unnamed, named("bookstore.internal"));
    }

    #[test]
    fn an_endpoint_host_is_its_server_name_whether_dns_or_ip() {
        assert!(matches!(
            endpoint_name("bookstore.internal"),
            Ok(ServerName::DnsName(_))
        ));
        assert!(matches!(
            endpoint_name("127.0.0.1"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            endpoint_name("[::1]"),
            Ok(ServerName::IpAddress(_))
        ));
    }
}
