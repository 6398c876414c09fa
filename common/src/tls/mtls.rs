//! rustls configurations for mutual TLS, loaded from PEM files. The server requires a client
//! certificate that chains to the trust bundle; after the handshake, [`peer_identity`] reads
//! who connected.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::identity::{IdentityError, SpiffeId};

/// gRPC runs over HTTP/2, agreed through ALPN.
const GRPC_ALPN: &[u8] = b"h2";

/// Where a process's certificate, key and trust bundle live (a `[tls]` section in the agent's
/// and the coordinator's configuration files).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    pub trust_bundle: PathBuf,
}

impl TlsFiles {
    /// Relative paths resolved against `base` (the configuration file's directory).
    pub fn relative_to(self, base: &Path) -> Self {
        Self {
            certificate: base.join(self.certificate),
            private_key: base.join(self.private_key),
            trust_bundle: base.join(self.trust_bundle),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}", path = .path.display())]
    File { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Config(String),
    #[error("cannot reach {address}: {detail}")]
    Unreachable { address: String, detail: String },
    #[error("TLS handshake with {address}: {refusal}")]
    Handshake {
        address: String,
        refusal: super::refusal::HandshakeRefusal,
    },
}

/// Installs ring as the process's crypto provider (once; later calls change nothing).
pub fn install_crypto_provider() {
    // An error means a provider is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A server that only accepts clients with a certificate from the trust bundle.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    install_crypto_provider();
    let roots = Arc::new(trust_bundle(&files.trust_bundle)?);
    let verifier = WebPkiClientVerifier::builder(roots)
        .build()
        .map_err(|error| TlsError::Config(format!("client verifier: {error}")))?;
    let mut config = ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certificates(&files.certificate)?,
            private_key(&files.private_key)?,
        )
        .map_err(|error| TlsError::Config(format!("{}: {error}", files.certificate.display())))?;
    config.alpn_protocols = vec![GRPC_ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// [`server_config`] for browsers: the same certificates and client verification, speaking
/// HTTP/2 or HTTP/1.1 (the web console's listener).
pub fn web_server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = Arc::unwrap_or_clone(server_config(files)?);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client that presents its certificate and trusts only the bundle.
pub fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, TlsError> {
    install_crypto_provider();
    let mut config = ClientConfig::builder()
        .with_root_certificates(trust_bundle(&files.trust_bundle)?)
        .with_client_auth_cert(
            certificates(&files.certificate)?,
            private_key(&files.private_key)?,
        )
        .map_err(|error| TlsError::Config(format!("{}: {error}", files.certificate.display())))?;
    config.alpn_protocols = vec![GRPC_ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// The identity of the peer of an established connection.
pub fn peer_identity(
    peer_certificates: Option<&[CertificateDer<'_>]>,
) -> Result<SpiffeId, IdentityError> {
    let leaf = peer_certificates
        .and_then(<[CertificateDer<'_>]>::first)
        .ok_or(IdentityError::NoUriSan)?;
    SpiffeId::from_certificate(leaf)
}

fn file_error(path: &Path, message: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| file_error(path, format!("cannot read certificates: {error}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| file_error(path, format!("invalid PEM: {error}")))?;
    if certificates.is_empty() {
        return Err(file_error(path, "no certificate in the file"));
    }
    Ok(certificates)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|error| file_error(path, format!("cannot read the private key: {error}")))
}

fn trust_bundle(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in certificates(path)? {
        roots
            .add(certificate)
            .map_err(|error| file_error(path, format!("not a usable CA certificate: {error}")))?;
    }
    Ok(roots)
}
