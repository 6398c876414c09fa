//! Delivering events: the body signed with HMAC-SHA256 under the hook's secret, POSTed over
//! HTTP/1.1 (TLS for `https://`, checked against the Mozilla roots), retried with backoff on a
//! failure or a non-2xx answer. Each hook gets its own attempts; one failing never delays
//! another by more than its bounded retries.

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::{Event, Webhook};

/// One attempt's limit, connect to answer.
const ATTEMPT: Duration = Duration::from_secs(5);

/// `sha256=<hex>` of `body` under `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

pub(super) async fn deliver_all(hooks: Arc<[Webhook]>, mut queued: mpsc::Receiver<Event>) {
    while let Some(event) = queued.recv().await {
        let body = match serde_json::to_vec(&event) {
            Ok(body) => body,
            Err(error) => {
                tracing::warn!(%error, event = event.event, "cannot encode a webhook event");
                continue;
            }
        };
        for hook in hooks.iter().filter(|hook| hook.wants(event.event)) {
            let signature = sign(&hook.secret, &body);
            let attempt = || post(&hook.url, event.event, &signature, &body);
            let delivered = attempt
                .retry(
                    ExponentialBuilder::new()
                        .with_min_delay(Duration::from_millis(200))
                        .with_max_delay(Duration::from_secs(2))
                        .with_max_times(2),
                )
                .await;
            match delivered {
                Ok(status) => {
                    tracing::debug!(url = %hook.url, event = event.event, status, "webhook delivered")
                }
                Err(error) => {
                    tracing::warn!(url = %hook.url, event = event.event, %error, "webhook not delivered; the rollout goes on")
                }
            }
        }
    }
}

/// One POST; the answer's status when it is 2xx.
async fn post(url: &str, event: &str, signature: &str, body: &[u8]) -> Result<u16, String> {
    tokio::time::timeout(ATTEMPT, post_once(url, event, signature, body))
        .await
        .map_err(|_| format!("no answer within {ATTEMPT:?}"))?
}

async fn post_once(url: &str, event: &str, signature: &str, body: &[u8]) -> Result<u16, String> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(format!(
            "{url}: only http:// and https:// webhooks are supported"
        ));
    };
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(authority, path)| {
            (authority, format!("/{path}"))
        });
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host);
    let address = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:{}", if tls { 443 } else { 80 })
    };
    let tcp = tokio::net::TcpStream::connect(&address)
        .await
        .map_err(|error| format!("{address}: {error}"))?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nUser-Agent: fleetshift/{}\r\nX-Fleetshift-Event: {event}\r\nX-Fleetshift-Signature: {signature}\r\nConnection: close\r\n\r\n",
        body.len(),
        env!("CARGO_PKG_VERSION"),
    );
    if tls {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from(host.to_owned())
            .map_err(|error| format!("{host}: {error}"))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|error| format!("{host}: TLS: {error}"))?;
        exchange(stream, head.as_bytes(), body).await
    } else {
        exchange(tcp, head.as_bytes(), body).await
    }
}

/// Sends the request and reads the status line of the answer.
async fn exchange<T: AsyncRead + AsyncWrite + Unpin>(
    mut stream: T,
    head: &[u8],
    body: &[u8],
) -> Result<u16, String> {
    stream
        .write_all(head)
        .await
        .map_err(|error| error.to_string())?;
    stream
        .write_all(body)
        .await
        .map_err(|error| error.to_string())?;
    stream.flush().await.map_err(|error| error.to_string())?;
    let mut answer = Vec::new();
    let mut buffer = [0_u8; 512];
    while !answer.windows(2).any(|pair| pair == b"\r\n") {
        let read = stream
            .read(&mut buffer)
            .await
            .map_err(|error| error.to_string())?;
        if read == 0 {
            break;
        }
        answer.extend_from_slice(&buffer[..read]);
    }
    let line = String::from_utf8_lossy(&answer);
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            format!(
                "not an HTTP answer: {:?}",
                line.lines().next().unwrap_or_default()
            )
        })?;
    if (200..300).contains(&status) {
        Ok(status)
    } else {
        Err(format!("answered {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231, test case 2.
    #[test]
    fn signatures_are_hmac_sha256_of_the_body() {
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
