//! gRPC client channels to a coordinator, over mutual TLS only.

use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use super::mtls::{TlsError, TlsFiles};

/// HTTP/2 pings to the coordinator this often; no answer within [`KEEPALIVE_TIMEOUT`] ends
/// the connection.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

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
        // A coordinator that stops answering pings is gone (a half-open connection): the
        // session's stream fails and the agent reconnects, instead of waiting on it forever.
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .tls_config(tls)
        .map_err(|error| TlsError::Config(error.to_string()))?
        .connect()
        .await
        .map_err(|error| TlsError::Unreachable {
            address: address.to_owned(),
            detail: error.to_string(),
        })
}
