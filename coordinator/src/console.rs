//! The web console: a read-only view of the fleet for browsers, served by every replica on
//! its own listener (`web_listen`) over mutual TLS with operator certificates (the `viewer`
//! role, as for `ListShards`). The pages are one HTML shell and a small script embedded in the
//! binary ([`assets`]); the script reads the JSON API ([`api`], the wire contract's messages
//! in the proto3 JSON mapping) and follows rollouts live over server-sent events ([`live`],
//! the stream `WatchRollout` answers). Each replica advertises its console's URL in the store
//! ([`directory`]) so a page whose replica dies resumes its stream on another.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use fleetshift_common::tls::identity::SpiffeId;
use fleetshift_common::tls::mtls;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::{Code, Status};

use crate::authz::{self, OperatorRole};
use crate::error::{ErrorCode, refuse};
use crate::fleet_api::FleetApi;
use crate::peer_limits::{Budget, Holding};
use crate::store::Store;
use crate::tasks::TaskSet;

mod api;
mod assets;
pub mod directory;
mod listener;
mod live;

pub use listener::Peer;

/// What the console answers from: the fleet service's reads, the consoles of the replicas,
/// and the replica's budget per identity (shared with the gRPC server).
pub struct Console<S> {
    pub fleet: Arc<FleetApi<S>>,
    pub directory: directory::Directory<S>,
    pub budget: Arc<Budget>,
}

impl<S> std::fmt::Debug for Console<S> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Console").finish_non_exhaustive()
    }
}

impl<S> Clone for Console<S> {
    fn clone(&self) -> Self {
        Self {
            fleet: Arc::clone(&self.fleet),
            directory: self.directory.clone(),
            budget: Arc::clone(&self.budget),
        }
    }
}

/// Serves `console` on `listener` until `tasks` stop, holding each identity to its budget.
/// Returns at once; the server runs on `tasks`.
pub fn serve<S: Store + 'static>(
    listener: TcpListener,
    tls: watch::Receiver<Arc<ServerConfig>>,
    console: Console<S>,
    tasks: &TaskSet,
) -> std::io::Result<SocketAddr> {
    let address = listener.local_addr()?;
    let router = Router::new()
        .route("/", get(assets::page))
        .route("/plans", get(assets::page))
        .route("/plans/{plan}", get(assets::page))
        .route("/shards/{shard}", get(assets::page))
        .route("/assets/{file}", get(assets::file))
        .route("/api/v1/shards", get(api::shards))
        .route("/api/v1/shards/{shard}", get(api::shard))
        .route("/api/v1/plans", get(api::plans))
        .route("/api/v1/plans/{plan}", get(api::plan))
        .route("/api/v1/consoles", get(api::consoles))
        .route("/api/v1/events", get(live::events))
        .layer(middleware::from_fn_with_state(console.clone(), limited))
        .layer(middleware::from_fn_with_state(
            console.clone(),
            cross_origin,
        ))
        .with_state(console);
    let incoming = listener::TlsListener::new(listener, tls, tasks)?;
    let stopping = tasks.stopping().clone();
    tasks.spawn(async move {
        let served = axum::serve(
            incoming,
            router.into_make_service_with_connect_info::<Peer>(),
        )
        .with_graceful_shutdown(stopping.cancelled_owned())
        .await;
        if let Err(error) = served {
            tracing::warn!(%error, "the web console stopped");
        }
    });
    Ok(address)
}

/// Admits each request against its caller's budget, which counts it open until its answer
/// ends (a live stream holds its place while it streams); refuses the rest with 429 naming
/// the identity and the limit. A caller without an identity is left to the handlers, which
/// refuse it.
async fn limited<S: Store + 'static>(
    State(console): State<Console<S>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    request: Request,
    next: Next,
) -> Response {
    let Ok(identity) = mtls::peer_identity(peer.certificates()) else {
        return next.run(request).await;
    };
    match console.budget.admit(&identity.to_string()) {
        Ok(open) => next
            .run(request)
            .await
            .map(|body| Body::new(Holding::new(body, open))),
        Err(refusal) => {
            tracing::warn!(path = request.uri().path(), %refusal, "console request refused by the peer limits");
            Refusal(refuse(ErrorCode::Overloaded, refusal.to_string())).into_response()
        }
    }
}

/// A caller holding the viewer role, as its certificate names it.
#[derive(Debug)]
pub struct Viewer(pub SpiffeId);

impl<S: Store + 'static> FromRequestParts<Console<S>> for Viewer {
    type Rejection = Refusal;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &Console<S>,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<Peer>>()
            .ok_or_else(|| Status::unauthenticated("the connection carries no peer"))?;
        let (roles, trust_domain) = console.fleet.authority();
        let identity = authz::identity(peer.0.certificates(), trust_domain)?;
        roles.authorize(&identity, OperatorRole::Viewer)?;
        Ok(Self(identity))
    }
}

/// A refusal or failure, as the console answers it: the HTTP status closest to the gRPC code
/// and the same message, in JSON.
#[derive(Debug)]
pub struct Refusal(Status);

impl From<Status> for Refusal {
    fn from(status: Status) -> Self {
        Self(status)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status = match self.0.code() {
            Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::FailedPrecondition | Code::Aborted => StatusCode::CONFLICT,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let body = serde_json::json!({
            "error": self.0.message(),
            "code": format!("{:?}", self.0.code()),
        });
        (status, json_headers(), body.to_string()).into_response()
    }
}

/// The headers of every JSON answer: never cached (fleet state changes under it).
fn json_headers() -> [(header::HeaderName, HeaderValue); 2] {
    [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ]
}

/// Lets another replica's console page read every answer, refusals included: only for the
/// origin of a console the directory lists, with credentials (the page's client certificate).
async fn cross_origin<S: Store + 'static>(
    State(console): State<Console<S>>,
    request: Request,
    next: Next,
) -> Response {
    let origin = request.headers().get(header::ORIGIN).cloned();
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    let Some(origin) = origin else {
        return response;
    };
    let known = match origin.to_str() {
        Ok(origin) => console.directory.knows_origin(origin).await,
        Err(_) => false,
    };
    if known {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    response
}
