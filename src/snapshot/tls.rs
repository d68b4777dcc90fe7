//! Reads the certificates and keys routes.toml names (relative to its
//! directory) into TLS settings: for an upstream (`[upstreams.NAME] tls`)
//! and for the public listener (`[server] tls`). They are read at every
//! compile, so a reload picks up replaced files; each unreadable or invalid
//! file is reported at the key that names it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use toml::Spanned;

use crate::config::ConfigError;
use crate::config::file::{ServerTlsSection, UpstreamTlsSection};
use crate::server::tls::ServerTls;
use crate::upstream::tls::{ClientIdentity, ClientTls};

/// The client TLS settings of one upstream; `section` may be absent (an
/// `https://` upstream with the system's roots and the endpoints' hosts).
/// `default_name` is the name certificates are checked against when the
/// section names none (a DNS-discovered upstream's name, not its IPs).
pub(super) fn upstream(
    section: Option<&Spanned<UpstreamTlsSection>>,
    default_name: Option<&str>,
    base_dir: &Path,
    errors: &mut Vec<ConfigError>,
) -> Option<Arc<ClientTls>> {
    let default = UpstreamTlsSection::default();
    let s = section.map_or(&default, Spanned::get_ref);
    // Each key is read even after another failed, so one run reports all.
    let roots = (s.ca.as_ref())
        .map(|ca| certificates(ca, base_dir))
        .transpose()
        .map_err(|e| errors.push(e));
    let identity = identity(s, base_dir, errors);
    let named = s.server_name.clone().or_else(|| {
        default_name.map(|name| Spanned::new(section.map_or(0..0, Spanned::span), name.to_string()))
    });
    let server_name = (named.as_ref())
        .map(server_name)
        .transpose()
        .map_err(|e| errors.push(e));
    let (roots, identity, server_name) = (roots.ok()?, identity?, server_name.ok()?);
    match ClientTls::new(roots, identity, server_name) {
        Ok(tls) => Some(Arc::new(tls)),
        Err(reason) => {
            let span = section.map_or(0..0, Spanned::span);
            errors.push(ConfigError::at(span, format!("upstream TLS: {reason}")));
            None
        }
    }
}

/// `client_cert` and `client_key`, read as a pair: `Some(None)` when
/// neither is set, `None` after an error.
fn identity(
    s: &UpstreamTlsSection,
    base_dir: &Path,
    errors: &mut Vec<ConfigError>,
) -> Option<Option<ClientIdentity>> {
    match (&s.client_cert, &s.client_key) {
        (None, None) => Some(None),
        (Some(cert), Some(key)) => {
            let chain = certificates(cert, base_dir).map_err(|e| errors.push(e));
            let key = private_key(key, base_dir).map_err(|e| errors.push(e));
            Some(Some(ClientIdentity {
                chain: chain.ok()?,
                key: key.ok()?,
            }))
        }
        (Some(cert), None) => {
            errors.push(
                ConfigError::at(cert.span(), "client_cert is set without client_key").hint(
                    "add client_key = \"client.key\", the PEM private key of the certificate",
                ),
            );
            None
        }
        (None, Some(key)) => {
            errors.push(
                ConfigError::at(key.span(), "client_key is set without client_cert")
                    .hint("add client_cert = \"client.pem\", the PEM certificate of the key"),
            );
            None
        }
    }
}

/// The listener's certificate and key, from `[server] tls`.
pub(super) fn server(
    section: &Spanned<ServerTlsSection>,
    base_dir: &Path,
    errors: &mut Vec<ConfigError>,
) -> Option<Arc<ServerTls>> {
    let s = section.get_ref();
    let chain = certificates(&s.cert, base_dir).map_err(|e| errors.push(e));
    let key = private_key(&s.key, base_dir).map_err(|e| errors.push(e));
    let (chain, key) = (chain.ok()?, key.ok()?);
    match ServerTls::new(chain, key) {
        Ok(tls) => Some(Arc::new(tls)),
        Err(reason) => {
            errors.push(
                ConfigError::at(s.key.span(), format!("[server] tls: {reason}"))
                    .hint("key must be the private key of the first certificate in cert"),
            );
            None
        }
    }
}

/// Every certificate of a PEM file (at least one).
fn certificates(
    file: &Spanned<PathBuf>,
    base_dir: &Path,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let pem = read(file, base_dir)?;
    let invalid = |reason: String| {
        ConfigError::at(
            file.span(),
            format!("{}: {reason}", file.get_ref().display()),
        )
        .hint("expected PEM: -----BEGIN CERTIFICATE----- blocks")
    };
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("invalid PEM: {e}")))?;
    if chain.is_empty() {
        return Err(invalid("no certificate in the file".to_string()));
    }
    Ok(chain)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
fn private_key(
    file: &Spanned<PathBuf>,
    base_dir: &Path,
) -> Result<PrivateKeyDer<'static>, ConfigError> {
    let pem = read(file, base_dir)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        ConfigError::at(
            file.span(),
            format!("{}: no usable private key: {e}", file.get_ref().display()),
        )
        .hint("expected PEM: a -----BEGIN PRIVATE KEY----- (or RSA / EC PRIVATE KEY) block")
    })
}

fn read(file: &Spanned<PathBuf>, base_dir: &Path) -> Result<Vec<u8>, ConfigError> {
    let path = base_dir.join(file.get_ref());
    std::fs::read(&path).map_err(|e| {
        ConfigError::at(file.span(), format!("cannot read {}: {e}", path.display()))
            .hint("paths are relative to the directory of routes.toml")
    })
}

fn server_name(name: &Spanned<String>) -> Result<ServerName<'static>, ConfigError> {
    ServerName::try_from(name.get_ref().clone()).map_err(|e| {
        ConfigError::at(
            name.span(),
            format!("{:?} is not a valid TLS server name: {e}", name.get_ref()),
        )
        .hint("a DNS name such as \"bookstore.internal\" or an IP address")
    })
}
