//! TLS on the public listener: ALPN `h2` and `http/1.1` (hyper then serves
//! whichever the client speaks), and a certificate that a reload replaces
//! without touching open connections: every new handshake asks
//! [`ServerTls`] for the certificate of the moment.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// The listener's certificate, swappable while it serves.
#[derive(Debug)]
pub struct ServerTls {
    current: ArcSwap<CertifiedKey>,
}

// === impl ServerTls ===

impl ServerTls {
    /// A certificate chain (leaf first) and its private key; fails when the
    /// key cannot be used or does not belong to the leaf.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<ServerTls, String> {
        if chain.is_empty() {
            return Err("the certificate file holds no certificate".to_string());
        }
        let certified = CertifiedKey::from_der(chain, key, &provider())
            .map_err(|e| format!("the key cannot be used with the certificate: {e}"))?;
        Ok(ServerTls {
            current: ArcSwap::from_pointee(certified),
        })
    }

    /// Serves `newer`'s certificate from the next handshake on; connections
    /// already open keep theirs.
    pub fn adopt(&self, newer: &ServerTls) {
        self.current.store(newer.current.load_full());
    }

    /// The certificate new handshakes get now.
    pub fn certificate(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }

    /// A handshake acceptor that reads the certificate from `self` on each
    /// handshake.
    pub(super) fn acceptor(self: &Arc<Self>) -> Result<TlsAcceptor, rustls::Error> {
        let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

impl ResolvesServerCert for ServerTls {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// aws-lc-rs, the crypto the rest of the gateway uses.
fn provider() -> CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::pem::PemObject;

    /// A self-signed certificate for `name` and its key.
    fn self_signed(name: &str) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let made = rcgen::generate_simple_self_signed(vec![name.to_string()]).expect("rcgen");
        let key = PrivateKeyDer::from_pem_slice(made.signing_key.serialize_pem().as_bytes())
            .expect("key PEM");
        (vec![made.cert.der().clone()], key)
    }

    #[test]
    fn a_key_that_does_not_belong_to_the_certificate_is_refused() {
        let (chain, _) = self_signed("a.test");
        let (_, other_key) = self_signed("b.test");
        let error = ServerTls::new(chain, other_key).expect_err("mismatched key");
        assert!(error.contains("cannot be used"), "{error}");
    }

    #[test]
    fn adopt_serves_the_newer_certificate() {
        let (old_chain, old_key) = self_signed("a.test");
        let (new_chain, new_key) = self_signed("a.test");
        let live = ServerTls::new(old_chain.clone(), old_key).expect("old");
        let reread = ServerTls::new(new_chain.clone(), new_key).expect("new");
        assert_eq!(live.certificate().cert, old_chain);
        live.adopt(&reread);
        assert_eq!(live.certificate().cert, new_chain);
    }
}
