//! A tower layer on the gRPC server that times every request by method, until its response
//! headers (for a streaming call: until the stream is open). A path that names no method of
//! ours (answered UNIMPLEMENTED) is counted as `unknown`, so clients cannot grow the label set.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::codegen::http;

use super::CoordinatorMetrics;

/// The code of a gRPC status UNIMPLEMENTED, as the `grpc-status` header carries it.
const UNIMPLEMENTED: &[u8] = b"12";

#[derive(Debug, Clone)]
pub struct GrpcMetricsLayer {
    metrics: Arc<CoordinatorMetrics>,
}

impl GrpcMetricsLayer {
    pub fn new(metrics: Arc<CoordinatorMetrics>) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

#[derive(Debug, Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    metrics: Arc<CoordinatorMetrics>,
}

impl<S, RequestBody, ResponseBody> tower::Service<http::Request<RequestBody>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        let started = Instant::now();
        let method = method_of(request.uri().path());
        let metrics = Arc::clone(&self.metrics);
        let responding = self.inner.call(request);
        Box::pin(async move {
            let response = responding.await;
            let unimplemented = response.as_ref().is_ok_and(|response| {
                response
                    .headers()
                    .get("grpc-status")
                    .is_some_and(|status| status.as_bytes() == UNIMPLEMENTED)
            });
            let method = if unimplemented {
                "unknown".to_owned()
            } else {
                method
            };
            metrics.grpc_request(method, started.elapsed());
            response
        })
    }
}

/// `/fleetshift.v1.FleetService/CreatePlan` → `fleetshift.v1.FleetService/CreatePlan`.
fn method_of(path: &str) -> String {
    path.trim_start_matches('/').to_owned()
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use prometheus_client::registry::Registry;
    use tower::{Layer, Service, ServiceExt};

    use super::*;

    /// Answers every path but `/known` with UNIMPLEMENTED, as tonic's router does.
    #[derive(Clone)]
    struct Router;

    impl Service<http::Request<()>> for Router {
        type Response = http::Response<()>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<()>) -> Self::Future {
            let mut response = http::Response::new(());
            if request.uri().path() != "/svc/Known" {
                response
                    .headers_mut()
                    .insert("grpc-status", http::HeaderValue::from_static("12"));
            }
            std::future::ready(Ok(response))
        }
    }

    #[tokio::test]
    async fn requests_are_timed_by_method_and_unknown_paths_share_one_label() {
        let mut registry = Registry::default();
        let metrics = CoordinatorMetrics::register(&mut registry);
        let mut service = GrpcMetricsLayer::new(metrics).layer(Router);
        for path in ["/svc/Known", "/svc/Invented1", "/svc/Invented2"] {
            let request = http::Request::builder()
                .uri(path)
                .body(())
                .expect("request");
            service
                .ready()
                .await
                .expect("ready")
                .call(request)
                .await
                .expect("call");
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(
            text.contains("fleetshift_grpc_request_duration_seconds_count{method=\"svc/Known\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("fleetshift_grpc_request_duration_seconds_count{method=\"unknown\"} 2"),
            "{text}"
        );
        assert!(!text.contains("Invented"), "{text}");
    }
}
