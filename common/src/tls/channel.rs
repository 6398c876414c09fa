//! gRPC client channels to a coordinator, over mutual TLS only.

use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use super::mtls::{TlsError, TlsFiles};

/// The host of an `https://host:port` address: the name the coordinator's certificate is
/// checked against unless another is given.
pub fn server_name_of(address: &str) -> Result<String, TlsError> {
    let host_and_port = address.strip_prefix("https://").ok_or_else(|| {
        TlsError::Config(format!(
            "{address:?} must start with https:// (mutual TLS only)"
        ))
    })?;
    let host = host_and_port
        .rsplit_once(':')
        .map_or(host_and_port, |(host, _)| host);
    Ok(host.to_owned())
}

/// Connects to `address`, presenting the certificate in `files` and trusting only its bundle.
pub async fn connect(
    address: &str,
    server_name: &str,
    files: &TlsFiles,
) -> Result<Channel, TlsError> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|error| TlsError::File {
            path: path.to_path_buf(),
            message: format!("cannot read: {error}"),
        })
    };
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&files.trust_bundle)?))
        .identity(Identity::from_pem(
            read(&files.certificate)?,
            read(&files.private_key)?,
        ))
        .domain_name(server_name);
    Channel::from_shared(address.to_owned())
        .map_err(|error| TlsError::Config(format!("invalid address {address}: {error}")))?
        .connect_timeout(Duration::from_secs(5))
        .tls_config(tls)
        .map_err(|error| TlsError::Config(error.to_string()))?
        .connect()
        .await
        .map_err(|error| TlsError::Unreachable {
            address: address.to_owned(),
            detail: error.to_string(),
        })
}
