//! gRPC client channels to a coordinator, over mutual TLS only.

use std::time::Duration;

use rustls_pki_types::ServerName;
use tonic::codegen::http::Uri;
use tonic::transport::Channel;

use super::connector::Connector;
use super::mtls::{self, TlsError, TlsFiles};
use super::refusal::HandshakeRefusal;

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

/// Connects to `address`, presenting the certificate in `files` and trusting only its bundle;
/// a refused handshake is told as such (see [`super::refusal`]).
pub async fn connect(
    address: &str,
    server_name: &str,
    files: &TlsFiles,
) -> Result<Channel, TlsError> {
    let config = mtls::client_config(files)?;
    let checked_name = ServerName::try_from(server_name.to_owned())
        .map_err(|error| TlsError::Config(format!("server name {server_name:?}: {error}")))?;
    let origin: Uri = address
        .parse()
        .map_err(|error| TlsError::Config(format!("invalid address {address}: {error}")))?;
    // The connector speaks TLS itself; tonic is given the plain form of the address to dial
    // and told the real origin for requests.
    let authority = origin
        .authority()
        .ok_or_else(|| TlsError::Config(format!("{address:?} has no host:port")))?;
    Channel::from_shared(format!("http://{authority}"))
        .map_err(|error| TlsError::Config(format!("invalid address {address}: {error}")))?
        .origin(origin.clone())
        .connect_timeout(Duration::from_secs(5))
        // A coordinator that stops answering pings is gone (a half-open connection): the
        // session's stream fails and the agent reconnects, instead of waiting on it forever.
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .connect_with_connector(Connector {
            config,
            server_name: checked_name,
        })
        .await
        .map_err(|error| match HandshakeRefusal::find(&error, server_name) {
            Some(refusal) => TlsError::Handshake {
                address: address.to_owned(),
                refusal,
            },
            None => TlsError::Unreachable {
                address: address.to_owned(),
                detail: describe(&error),
            },
        })
}

/// `error` with its causes: tonic's own text is only "transport error".
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let said = inner.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = inner.source();
    }
    text
}
