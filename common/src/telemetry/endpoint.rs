//! The telemetry endpoint, plain HTTP on its own address (`telemetry_listen`):
//!
//! - `GET /metrics`: every metric of the process's registry, in the OpenMetrics text format
//!   that Prometheus scrapes;
//! - `GET /health/liveness`: 200 while the process serves at all;
//! - `GET /health/readiness`: 200 when the process can do its work (the coordinator reaches
//!   its store and knows a leader, the agent holds a session), else 503 with the reason.
//!
//! It carries no secrets and accepts no input, so it needs no TLS; bind it where only the
//! monitoring system and the orchestrator's probes reach it.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The media type of the OpenMetrics text exposition.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether the process can do its work now, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    NotReady(String),
}

impl Readiness {
    pub fn not_ready(reason: impl Into<String>) -> Self {
        Self::NotReady(reason.into())
    }
}

#[derive(Debug, Clone)]
struct Shared {
    registry: Arc<Registry>,
    readiness: watch::Receiver<Readiness>,
}

/// Serves the endpoint on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    readiness: watch::Receiver<Readiness>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let routes = Router::new()
        .route("/metrics", get(metrics))
        .route("/health/liveness", get(liveness))
        .route("/health/readiness", get(readiness_probe))
        .with_state(Shared {
            registry,
            readiness,
        });
    axum::serve(listener, routes)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// Binds `address` and serves the endpoint there in the background; the bound address is
/// returned (port 0 picks a free one).
pub async fn spawn(
    address: std::net::SocketAddr,
    registry: Arc<Registry>,
    readiness: watch::Receiver<Readiness>,
    shutdown: CancellationToken,
) -> std::io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    tracing::info!(address = %bound, "telemetry endpoint listening (/metrics, /health/liveness, /health/readiness)");
    tokio::spawn(async move {
        if let Err(error) = serve(listener, registry, readiness, shutdown).await {
            tracing::warn!(%error, "telemetry endpoint stopped");
        }
    });
    Ok(bound)
}

async fn metrics(State(shared): State<Shared>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &shared.registry) {
        Ok(()) => ([(header::CONTENT_TYPE, OPENMETRICS)], body).into_response(),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the metrics failed: {error}\n"),
        )
            .into_response(),
    }
}

async fn liveness() -> &'static str {
    "alive\n"
}

async fn readiness_probe(State(shared): State<Shared>) -> (StatusCode, String) {
    match &*shared.readiness.borrow() {
        Readiness::Ready => (StatusCode::OK, "ready\n".to_owned()),
        Readiness::NotReady(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn get(address: std::net::SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        response
    }

    #[tokio::test]
    async fn serves_metrics_and_both_probes_with_the_current_readiness() {
        let mut registry = Registry::default();
        let counter = Counter::<u64>::default();
        registry.register("fleetshift_example", "An example", counter.clone());
        counter.inc_by(3);
        let (ready, readiness) = watch::channel(Readiness::not_ready("no session yet"));
        let stop = CancellationToken::new();
        let address = spawn(
            "127.0.0.1:0".parse().expect("address"),
            Arc::new(registry),
            readiness,
            stop.clone(),
        )
        .await
        .expect("spawn");

        let metrics = get(address, "/metrics").await;
        assert!(
            metrics.contains("application/openmetrics-text"),
            "{metrics}"
        );
        assert!(metrics.contains("fleetshift_example_total 3"), "{metrics}");
        assert!(metrics.contains("# EOF"), "{metrics}");
        assert!(
            get(address, "/health/liveness")
                .await
                .starts_with("HTTP/1.1 200")
        );
        let waiting = get(address, "/health/readiness").await;
        assert!(waiting.starts_with("HTTP/1.1 503"), "{waiting}");
        assert!(waiting.contains("not ready: no session yet"), "{waiting}");
        ready.send_replace(Readiness::Ready);
        assert!(
            get(address, "/health/readiness")
                .await
                .starts_with("HTTP/1.1 200")
        );
        assert!(get(address, "/other").await.starts_with("HTTP/1.1 404"));
        stop.cancel();
    }
}
