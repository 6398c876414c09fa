//! Serving gRPC over mutual TLS with a configuration that may change while serving: each
//! accepted connection is handshaken with the current configuration (see
//! `fleetshift_common::tls::reload`), off the accept loop, under a deadline.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use fleetshift_common::proto::MESSAGE_LIMIT;
use fleetshift_common::proto::v1::agent_service_server::AgentServiceServer;
use fleetshift_common::proto::v1::fleet_service_server::FleetServiceServer;
use fleetshift_common::telemetry::endpoint::{self, Readiness};
use fleetshift_common::telemetry::traces::context;
use fleetshift_common::tls::{mtls, reload};
use prometheus_client::registry::Registry;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic_health::pb::health_server::{Health, HealthServer};

use crate::agent_session::AgentSessions;
use crate::backups;
use crate::config::{CoordinatorConfig, StoreChoice, WebConsole};
use crate::console::{self, Console, directory::Directory};
use crate::election::{self, Replica, Standing};
use crate::events::journal::{self, Feed};
use crate::fleet_api::FleetApi;
use crate::metrics::grpc::GrpcMetricsLayer;
use crate::metrics::{ConnectedAgents, CoordinatorMetrics};
use crate::peer_limits::{Budget, PeerLimitsLayer};
use crate::probes;
use crate::rollout::{driver, relay};
use crate::schema_drift;
use crate::store::StoreError;
use crate::store::{EtcdStore, MemoryStore, MeteredStore, Store};
use crate::tasks::TaskSet;
use crate::throttles;
use crate::webhooks::{self, Webhook};
use fleetshift_common::tls::mtls::TlsError;

/// A TLS handshake that takes longer than this is dropped.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);

/// HTTP/2 pings on every connection this often; a peer that does not answer one within
/// [`KEEPALIVE_TIMEOUT`] is gone (a half-open connection) and its streams end.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long each stage of a shutdown may take: the RPC server with its streams, then the
/// background work (relays, election hand-over, the driver).
const STAGE_DEADLINE: Duration = Duration::from_secs(10);

/// Streams one connection may have open at once (each identity is held to its own limits
/// across connections: `peer_limits`).
const STREAMS_PER_CONNECTION: u32 = 128;

/// The most header bytes a request may carry (hyper's default, stated).
const HEADER_LIST_LIMIT: u32 = 16 << 10;

/// Why a replica could not be run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("connecting to etcd: {0}")]
    Store(#[from] StoreError),
    #[error("loading the coordinator's TLS files: {0}")]
    Tls(#[from] TlsError),
    #[error("cannot serve telemetry on {address}: {source}")]
    Telemetry {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("serving gRPC: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("building gRPC reflection from the wire contract: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("cannot serve the web console on {address}: {source}")]
    Web {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot serve gRPC health on {address}: {source}")]
    Health {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// How often the TLS files are checked for a rotation (SIGHUP reloads at once).
const TLS_POLL: Duration = Duration::from_secs(5);

/// What a replica serves over mutual TLS: its two services and `grpc.health.v1` (server
/// reflection is added to them).
pub struct Services<S, H> {
    pub sessions: AgentSessions<S>,
    /// Shared with the web console, which answers from the same reads.
    pub fleet: Arc<FleetApi<S>>,
    /// Following the replica's readiness ([`probes::health`]).
    pub health: HealthServer<H>,
}

impl<S, H> std::fmt::Debug for Services<S, H> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Services").finish_non_exhaustive()
    }
}

/// Serves `services` and server reflection on `listener` until `shutdown` completes, holding
/// each identity to its budget in `limits`, timing every request into `metrics` and giving each its span,
/// under the caller's when the request carries a trace context. The accept loop and handshakes run on `rpc`; `shutdown` should
/// stop `rpc`'s streams too (sessions, watches), or the server waits for them to end.
pub async fn serve<S: Store + 'static, H: Health>(
    listener: TcpListener,
    tls: watch::Receiver<Arc<ServerConfig>>,
    services: Services<S, H>,
    limits: Arc<Budget>,
    metrics: Arc<CoordinatorMetrics>,
    rpc: TaskSet,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .max_concurrent_streams(Some(STREAMS_PER_CONNECTION))
        .http2_max_header_list_size(Some(HEADER_LIST_LIMIT))
        .trace_fn(request_span)
        .layer(GrpcMetricsLayer::new(metrics))
        .layer(PeerLimitsLayer::new(limits))
        .add_service(
            AgentServiceServer::new(services.sessions)
                .max_decoding_message_size(MESSAGE_LIMIT)
                .max_encoding_message_size(MESSAGE_LIMIT),
        )
        .add_service(
            FleetServiceServer::from_arc(services.fleet)
                .max_decoding_message_size(MESSAGE_LIMIT)
                .max_encoding_message_size(MESSAGE_LIMIT),
        )
        .add_service(services.health)
        .add_service(probes::reflection()?)
        .serve_with_incoming_shutdown(tls_connections(listener, tls, &rpc), shutdown)
        .await?;
    Ok(())
}

/// The span of one call: `fleetshift.v1.FleetService/CreatePlan` and so on.
fn request_span(request: &tonic::codegen::http::Request<()>) -> tracing::Span {
    let span = tracing::info_span!(
        "grpc request",
        otel.name = request.uri().path().trim_start_matches('/'),
        otel.kind = "server",
        rpc.system = "grpc",
    );
    context::continue_request(&span, request.headers());
    span
}

/// Accepted, handshaken connections. The accept loop ends when the server drops the stream.
pub(crate) fn tls_connections(
    listener: TcpListener,
    tls: watch::Receiver<Arc<ServerConfig>>,
    rpc: &TaskSet,
) -> ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
    let (sender, receiver) = mpsc::channel(64);
    let handshakes = rpc.clone();
    rpc.spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = sender.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(connection) => connection,
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed");
                    continue;
                }
            };
            let acceptor = TlsAcceptor::from(tls.borrow().clone());
            let connections = sender.clone();
            handshakes.spawn(async move {
                match tokio::time::timeout(HANDSHAKE_DEADLINE, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        // The server may be shutting down; then the connection just closes.
                        let _ = connections.send(Ok(stream)).await;
                    }
                    Ok(Err(error)) => tracing::warn!(%peer, %error, "TLS handshake refused"),
                    Err(_) => tracing::warn!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(receiver)
}

/// Runs one coordinator replica as configured until `shutdown` completes.
pub async fn run_coordinator(
    config: CoordinatorConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Listen {
            address: config.listen,
            source,
        })?;
    match &config.store {
        StoreChoice::Etcd(endpoints) => {
            let store = EtcdStore::connect(endpoints).await?;
            run_replica(Arc::new(store), &config, listener, shutdown).await
        }
        StoreChoice::Memory => {
            run_replica(Arc::new(MemoryStore::new()), &config, listener, shutdown).await
        }
    }
}

/// One replica on `listener` with `store`: agent sessions, the fleet API, the relays of
/// assignments and host requests, (while elected) the rollout driver, and the telemetry
/// endpoint when configured.
///
/// Shutdown runs in stages, each under [`STAGE_DEADLINE`]: first the RPC server stops
/// accepting and its streams end (sessions end abruptly, so their agents resume their leases
/// with another replica; watchers reconnect), then the background work stops (the relays, the
/// driver, which is cancelled and awaited between two steps, and the election, which hands
/// leadership over).
pub async fn run_replica<S: Store + 'static>(
    store: Arc<S>,
    config: &CoordinatorConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    mtls::install_crypto_provider();
    let tls = reload::watch_config(config.tls.clone(), mtls::server_config, TLS_POLL).await?;
    let address = listener.local_addr().map_err(|source| ServeError::Listen {
        address: config.listen,
        source,
    })?;
    tracing::info!(%address, coordinator = %config.coordinator_id, store = ?config.store, "coordinator listening");
    let mut registry = Registry::default();
    let metrics = CoordinatorMetrics::register(&mut registry);
    let store = Arc::new(MeteredStore::new(store, Arc::clone(&metrics)));
    let rpc = TaskSet::new();
    let background = TaskSet::new();
    let (journal, journaled) = Feed::channel();
    let sessions = AgentSessions::new(
        Arc::clone(&store),
        config.intervals,
        &config.coordinator_id,
        &config.trust_domain,
        rpc.clone(),
    )
    .journaling(journal);
    let mailbox = sessions.mailbox();
    registry.register_collector(Box::new(ConnectedAgents(Arc::clone(&mailbox))));
    let stopping = background.stopping().clone();
    let (standing, election) = election::start(
        Arc::clone(&store),
        &config.coordinator_id,
        config.intervals,
        stopping.clone(),
    );
    let replica = Replica {
        id: config.coordinator_id.clone(),
        standing: standing.clone(),
    };
    let fleet = Arc::new(FleetApi::new(
        Arc::clone(&store),
        config.roles.clone(),
        &config.trust_domain,
        replica,
        rpc.clone(),
    ));
    background.spawn(relay::run(
        Arc::clone(&store),
        Arc::clone(&mailbox),
        stopping.clone(),
    ));
    background.spawn(backups::relay::run(
        Arc::clone(&store),
        Arc::clone(&mailbox),
        stopping.clone(),
    ));
    background.spawn(journal::write(
        Arc::clone(&store),
        config.coordinator_id.clone(),
        journaled,
        stopping.clone(),
    ));
    background.spawn(throttles::relay::run(
        Arc::clone(&store),
        mailbox,
        stopping.clone(),
    ));
    background.spawn(async move {
        // The election's own task hands leadership over when it stops.
        let _ = election.await;
    });
    let readiness = readiness_of(standing.clone(), &background);
    let health = probes::health(readiness.clone(), &rpc);
    if let Some(address) = config.health_listen {
        let plain = probes::health(readiness.clone(), &rpc);
        probes::serve_health_plainly(address, plain, &rpc)
            .await
            .map_err(|source| ServeError::Health { address, source })?;
    }
    if let Some(address) = config.telemetry_listen {
        endpoint::spawn(address, Arc::new(registry), readiness, stopping.clone())
            .await
            .map_err(|source| ServeError::Telemetry { address, source })?;
    }
    // One budget per identity for everything the replica serves.
    let budget = Budget::new(config.limits);
    if let Some(web) = &config.web {
        let console = Console {
            fleet: Arc::clone(&fleet),
            directory: Directory::new(Arc::clone(&store)),
            budget: Arc::clone(&budget),
        };
        serve_console(web, config, console, &rpc).await?;
    }
    let hooks: Arc<[Webhook]> = config.webhooks.clone().into();
    background.spawn(drive_while_leading(
        Arc::clone(&store),
        standing,
        hooks,
        Arc::clone(&metrics),
        stopping,
    ));
    let rpc_stopping = rpc.stopping().clone();
    let stop_rpc = async move {
        shutdown.await;
        tracing::info!("stopping: the RPC server and its streams first");
        rpc_stopping.cancel();
    };
    let services = Services {
        sessions,
        fleet,
        health,
    };
    let served = serve(
        listener,
        tls,
        services,
        budget,
        metrics,
        rpc.clone(),
        stop_rpc,
    )
    .await;
    if !rpc.stop(STAGE_DEADLINE).await {
        tracing::warn!("sessions or watches did not end within the deadline; left behind");
    }
    tracing::info!("stopping: relays, election and driver");
    if !background.stop(STAGE_DEADLINE).await {
        tracing::warn!("background work did not end within the deadline; left behind");
    }
    served
}

/// Serves the web console as `web` configures it on `tasks` (the RPC stage: it stops with the
/// gRPC server), and advertises its URL to the other replicas' consoles.
async fn serve_console<S: Store + 'static>(
    web: &WebConsole,
    config: &CoordinatorConfig,
    console: Console<S>,
    tasks: &TaskSet,
) -> Result<(), ServeError> {
    let failed = |source| ServeError::Web {
        address: web.listen,
        source,
    };
    let listener = TcpListener::bind(web.listen).await.map_err(failed)?;
    let tls = reload::watch_config(config.tls.clone(), mtls::web_server_config, TLS_POLL).await?;
    let directory = console.directory.clone();
    let address = console::serve(listener, tls, console, tasks).map_err(failed)?;
    let url = web
        .advertise
        .clone()
        .unwrap_or_else(|| format!("https://{address}"));
    tracing::info!(%address, %url, "web console listening");
    directory.advertise(&config.coordinator_id, url, config.intervals, tasks);
    Ok(())
}

/// Ready while the store answers the election and a leader is known (this replica or
/// another): the replica can then serve agents and operators. Follows `standing` until
/// `stop`.
fn readiness_of(
    mut standing: watch::Receiver<Standing>,
    tasks: &TaskSet,
) -> watch::Receiver<Readiness> {
    let stop = tasks.stopping().clone();
    let judge = |standing: &Standing| match standing {
        Standing::Leader { .. } | Standing::Follower { leader: Some(_) } => Readiness::Ready,
        Standing::Follower { leader: None } => Readiness::not_ready(
            "no leader known: the fleet store (etcd) is unreachable or an election is under way",
        ),
    };
    let (sender, receiver) = watch::channel(judge(&standing.borrow_and_update()));
    tasks.spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                changed = standing.changed() => if changed.is_err() { return },
            }
            sender.send_replace(judge(&standing.borrow_and_update()));
        }
    });
    receiver
}

/// Runs the rollout driver, the schema drift gauge (and the webhooks, when configured) for
/// each leadership this replica holds, until `stopping`: then the driver is cancelled and
/// awaited, and the others with it.
async fn drive_while_leading<S: Store + 'static>(
    store: Arc<S>,
    mut standing: watch::Receiver<Standing>,
    hooks: Arc<[Webhook]>,
    metrics: Arc<CoordinatorMetrics>,
    stopping: CancellationToken,
) {
    while !stopping.is_cancelled() {
        let current = standing.borrow_and_update().clone();
        if let Standing::Leader {
            epoch,
            stepped_down,
            ..
        } = current
        {
            metrics.leading(Some(epoch.0));
            // The driver may end on its own (a write showed the epoch is over); the webhooks
            // end with it.
            let leading = stepped_down.child_token();
            let notifying = (!hooks.is_empty()).then(|| {
                tokio::spawn(webhooks::notify(
                    Arc::clone(&store),
                    Arc::clone(&hooks),
                    leading.clone(),
                ))
            });
            let drift = tokio::spawn(schema_drift::follow(
                Arc::clone(&store),
                metrics.schema_drift.clone(),
                leading.clone(),
            ));
            let lead = driver::lead(
                Arc::clone(&store),
                epoch,
                leading.clone(),
                &metrics.rollouts,
            );
            tokio::pin!(lead);
            tokio::select! {
                () = &mut lead => {}
                () = stopping.cancelled() => {
                    // Cancelled between two steps, and awaited: no write is cut in half.
                    leading.cancel();
                    lead.await;
                }
            }
            metrics.leading(None);
            leading.cancel();
            if let Some(notifying) = notifying {
                let _ = notifying.await;
            }
            let _ = drift.await;
        }
        tokio::select! {
            () = stopping.cancelled() => return,
            changed = standing.changed() => if changed.is_err() { return },
        }
    }
}
