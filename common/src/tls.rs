//! The one TLS loader: rustls configurations from PEM files, with the ring
//! provider every k3rs crate uses.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: no certificate found")]
    NoCert(String),
    #[error("{0}: no private key found")]
    NoKey(String),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client CA: {0}")]
    Verifier(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses every certificate in a PEM text.
pub fn certs_from_pem(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut &pem[..])
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCert(what.to_string()));
    }
    Ok(certs)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.display().to_string(),
        source,
    })
}

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    certs_from_pem(&read(path)?, &path.display().to_string())
}

pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    rustls_pemfile::private_key(&mut &read(path)?[..])
        .ok()
        .flatten()
        .ok_or_else(|| TlsError::NoKey(path.display().to_string()))
}

pub fn root_store(ca_file: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(ca_file)? {
        roots
            .add(c)
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
    }
    Ok(roots)
}

/// A server configuration. With `client_ca`, client certificates signed by it
/// are verified; `require_client_cert` false still lets token-authenticated
/// clients in without one (what the apiserver needs).
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
    client_ca: Option<&Path>,
    require_client_cert: bool,
    alpn: &[&[u8]],
) -> Result<ServerConfig, TlsError> {
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        Some(ca) => {
            let roots = Arc::new(root_store(ca)?);
            let v = WebPkiClientVerifier::builder_with_provider(roots, provider());
            let v = if require_client_cert {
                v
            } else {
                v.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(
                v.build().map_err(|e| TlsError::Verifier(e.to_string()))?,
            )
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_single_cert(load_certs(cert_file)?, load_key(key_file)?)?;
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(cfg)
}

/// A client configuration trusting `ca_file`, optionally presenting a client cert.
pub fn client_config(
    ca_file: &Path,
    client: Option<(&Path, &Path)>,
) -> Result<rustls::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(root_store(ca_file)?);
    Ok(match client {
        Some((c, k)) => builder.with_client_auth_cert(load_certs(c)?, load_key(k)?)?,
        None => builder.with_no_client_auth(),
    })
}
