//! Certificates and trust bundles that reload without a restart: a task watches the files
//! (polled, and at once on SIGHUP) and publishes a fresh configuration when their contents
//! change. A configuration that fails to build (a half-written rotation, a typo) is logged and
//! the previous one keeps serving. The task ends when the last receiver is dropped.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use super::mtls::{TlsError, TlsFiles};

/// Builds a configuration from the files (e.g. [`super::mtls::server_config`]).
pub type Builder<T> = fn(&TlsFiles) -> Result<Arc<T>, TlsError>;

/// Builds the configuration now (failing loudly at start-up) and keeps it current afterwards.
pub async fn watch_config<T: Send + Sync + 'static>(
    files: TlsFiles,
    build: Builder<T>,
    poll: Duration,
) -> Result<watch::Receiver<Arc<T>>, TlsError> {
    // Fingerprint first: a change that lands during the build is then seen as a change.
    let mut last = fingerprint(&files).await;
    let initial = build_off_runtime(build, &files).await?;
    let (sender, receiver) = watch::channel(initial);
    let mut hangups = signal(SignalKind::hangup())
        .map_err(|error| TlsError::Config(format!("cannot listen for SIGHUP: {error}")))?;
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + poll, poll);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let forced = tokio::select! {
                () = sender.closed() => return,
                _ = ticks.tick() => false,
                _ = hangups.recv() => true,
            };
            let current = fingerprint(&files).await;
            if current == last && !forced {
                continue;
            }
            match build_off_runtime(build, &files).await {
                Ok(config) => {
                    last = current;
                    sender.send_replace(config);
                    tracing::info!(certificate = %files.certificate.display(), forced, "TLS configuration reloaded");
                }
                Err(error) => {
                    // Keep serving with the previous configuration; retry on the next change.
                    last = current;
                    tracing::error!(%error, "TLS files changed but do not form a valid configuration; keeping the previous one");
                }
            }
        }
    });
    Ok(receiver)
}

/// Reading and parsing files blocks; keep it off the async workers.
async fn build_off_runtime<T: Send + Sync + 'static>(
    build: Builder<T>,
    files: &TlsFiles,
) -> Result<Arc<T>, TlsError> {
    let owned_files = files.clone();
    tokio::task::spawn_blocking(move || build(&owned_files))
        .await
        .unwrap_or_else(|error| {
            Err(TlsError::Config(format!(
                "building the TLS configuration failed: {error}"
            )))
        })
}

/// SHA-256 over the three files' contents (missing files count as empty).
async fn fingerprint(files: &TlsFiles) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for path in [&files.certificate, &files.private_key, &files.trust_bundle] {
        hasher.update(tokio::fs::read(path).await.unwrap_or_default());
        hasher.update([0]);
    }
    hasher.finalize().into()
}
