//! The standard gRPC health service (`grpc.health.v1`) and server reflection, so `grpcurl`
//! and gRPC probes work without fleetshift's protos. The server as a whole (`""`) and each of
//! its services are SERVING while the replica is ready (a leader is known: the store answers)
//! and NOT_SERVING otherwise, and from the moment the replica starts to stop. The health
//! service is also served on its own plaintext listener when `health_listen` is set: a
//! Kubernetes gRPC probe presents no client certificate, and the service tells nothing but
//! the state.

use std::net::SocketAddr;

use fleetshift_common::proto::DESCRIPTOR_SET;
use fleetshift_common::proto::v1::agent_service_server::AgentServiceServer;
use fleetshift_common::proto::v1::fleet_service_server::FleetServiceServer;
use fleetshift_common::telemetry::endpoint::Readiness;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::server::NamedService;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::server::HealthReporter;
use tonic_reflection::pb::v1::server_reflection_server::{
    ServerReflection, ServerReflectionServer,
};

use crate::tasks::TaskSet;

/// The names the health service answers for: the whole server, then each service.
const SERVICES: [&str; 3] = [
    "",
    <AgentServiceServer<()> as NamedService>::NAME,
    <FleetServiceServer<()> as NamedService>::NAME,
];

/// The health service, its statuses following `readiness` until `tasks` stop.
pub fn health(
    mut readiness: watch::Receiver<Readiness>,
    tasks: &TaskSet,
) -> HealthServer<impl Health> {
    let (reporter, server) = tonic_health::server::health_reporter();
    let stopping = tasks.stopping().clone();
    tasks.spawn(async move {
        loop {
            let status = match *readiness.borrow_and_update() {
                Readiness::Ready => ServingStatus::Serving,
                Readiness::NotReady(_) => ServingStatus::NotServing,
            };
            report(&reporter, status).await;
            tokio::select! {
                () = stopping.cancelled() => break,
                changed = readiness.changed() => if changed.is_err() { break },
            }
        }
        report(&reporter, ServingStatus::NotServing).await;
    });
    server
}

async fn report(reporter: &HealthReporter, status: ServingStatus) {
    for service in SERVICES {
        reporter.set_service_status(service, status).await;
    }
}

/// Server reflection over the wire contract (v1 of the reflection protocol).
pub fn reflection()
-> Result<ServerReflectionServer<impl ServerReflection>, tonic_reflection::server::Error> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
}

/// Serves `health` alone, in plaintext, on `address` until `tasks` stop.
pub async fn serve_health_plainly(
    address: SocketAddr,
    health: HealthServer<impl Health>,
    tasks: &TaskSet,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    tracing::info!(address = %bound, "gRPC health listening (plaintext, health only)");
    let stopping = tasks.stopping().clone();
    tasks.spawn(async move {
        let served = Server::builder()
            .add_service(health)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stopping.cancelled())
            .await;
        if let Err(error) = served {
            tracing::warn!(%error, "the plaintext health listener stopped");
        }
    });
    Ok(bound)
}
