//! Limits per identity on the gRPC server: a tower layer that admits each call of a peer (named
//! by its certificate) against that identity's [`Budget`] (one per replica, which the web
//! console shares) and refuses the rest with RESOURCE_EXHAUSTED, naming the identity and the
//! limit. A call counts as open until its
//! response body ends, so an agent's session or a watch holds its place for as long as it
//! streams. A peer without an identity is left to the services, which refuse it.
//!
//! Message sizes ([`fleetshift_common::proto::MESSAGE_LIMIT`]) and the HTTP/2 limits of each
//! connection are set where the server is built (`serve`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use fleetshift_common::tls::mtls;
use tonic::body::Body;
use tonic::codegen::{Bytes, http};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::error::{ErrorCode, refuse};

pub mod budget;

pub use budget::{Budget, OpenCall, PeerLimits, Refusal};

#[derive(Debug, Clone)]
pub struct PeerLimitsLayer {
    budget: Arc<Budget>,
}

impl PeerLimitsLayer {
    /// Holds calls to `budget`, which the replica's other listeners (the web console) share.
    pub fn new(budget: Arc<Budget>) -> Self {
        Self { budget }
    }
}

impl<S> tower::Layer<S> for PeerLimitsLayer {
    type Service = Limited<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Limited {
            inner,
            budget: Arc::clone(&self.budget),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Limited<S> {
    inner: S,
    budget: Arc<Budget>,
}

impl<S, RequestBody, ResponseBody> tower::Service<http::Request<RequestBody>> for Limited<S>
where
    S: tower::Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResponseBody: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    ResponseBody::Error: Into<tonic::codegen::StdError>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        let open = match identity_of(&request).map(|identity| self.budget.admit(&identity)) {
            Some(Ok(open)) => Some(open),
            Some(Err(refusal)) => {
                tracing::warn!(path = request.uri().path(), %refusal, "call refused by the peer limits");
                let status = refuse(ErrorCode::Overloaded, refusal.to_string());
                return Box::pin(std::future::ready(Ok(status.into_http())));
            }
            None => None,
        };
        let responding = self.inner.call(request);
        Box::pin(async move {
            let response = responding.await?;
            Ok(response.map(|body| Body::new(Holding { body, open })))
        })
    }
}

/// The caller's identity, from the certificate it presented on this connection.
fn identity_of<B>(request: &http::Request<B>) -> Option<String> {
    let connection = request
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()?;
    let certificates = connection.peer_certs()?;
    mtls::peer_identity(Some(certificates.as_slice()))
        .ok()
        .map(|identity| identity.to_string())
}

/// A response body that keeps its call open until it ends (or is dropped).
pub struct Holding<B> {
    body: B,
    open: Option<OpenCall>,
}

impl<B> std::fmt::Debug for Holding<B> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Holding")
            .field("open", &self.open)
            .finish_non_exhaustive()
    }
}

impl<B> Holding<B> {
    /// `body`, keeping `open` until it ends.
    pub fn new(body: B, open: OpenCall) -> Self {
        Self {
            body,
            open: Some(open),
        }
    }
}

impl<B> http_body::Body for Holding<B>
where
    B: http_body::Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(context);
        if matches!(polled, Poll::Ready(None)) {
            self.open = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
