//! The standard gRPC services on a real replica process (etcd, mutual TLS), as grpcurl and
//! Kubernetes probes use them: `grpc.health.v1` answers SERVING for the server and each of its
//! services once a leader is known, over mutual TLS and on the plaintext health listener,
//! which serves nothing else; server reflection lists every service. A unary call is given up
//! at the client's deadline, and a stream open when the replica stops ends with UNAVAILABLE.

use std::time::Duration;

use fleetshift_common::tls::identity::Role;
use fleetshift_tests::fleet::{FleetGround, channel_as, logged_port, spawn_replica_with};
use fleetshift_tests::wait::wait_until;
use futures_util::StreamExt;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

const ROLES: &str = "viewers = [\"ops\"]";

async fn status(
    client: &mut HealthClient<tonic::transport::Channel>,
    service: &str,
) -> Option<ServingStatus> {
    let response = client
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(response.into_inner().status).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_answer_without_fleetshifts_protos() {
    let ground = FleetGround::start().await;
    ground.issue(Role::Operator, "ops");
    let environment = [(
        "FLEETSHIFT_HEALTH_LISTEN".to_owned(),
        "127.0.0.1:0".to_owned(),
    )];
    let (port, _replica) = spawn_replica_with(
        ground.home.path(),
        "c1",
        &ground.etcd.endpoint,
        ROLES,
        &environment,
    );
    let health_port = logged_port(&ground.home.path().join("c1.log"), "gRPC health listening");

    // Over mutual TLS, as an operator's grpcurl would.
    let channel = channel_as(
        &format!("https://localhost:{port}"),
        &ground.pki,
        "operator-ops",
    )
    .await;
    let health = HealthClient::new(channel.clone());
    let serving = wait_until(Duration::from_secs(30), || async {
        let mut health = health.clone();
        let mut all = true;
        for service in [
            "",
            "fleetshift.v1.FleetService",
            "fleetshift.v1.AgentService",
        ] {
            all &= status(&mut health, service).await == Some(ServingStatus::Serving);
        }
        all
    })
    .await;
    assert!(serving, "SERVING once a leader is known");
    let unknown = health
        .clone()
        .check(HealthCheckRequest {
            service: "fleetshift.v1.NoSuchService".to_owned(),
        })
        .await
        .expect_err("an unknown service");
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    // In plaintext, as a Kubernetes gRPC probe would: health and nothing else.
    let plain = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{health_port}"))
        .expect("uri")
        .connect()
        .await
        .expect("plaintext connection");
    let mut probe = HealthClient::new(plain.clone());
    assert_eq!(status(&mut probe, "").await, Some(ServingStatus::Serving));
    let mut fleet =
        fleetshift_common::proto::v1::fleet_service_client::FleetServiceClient::new(plain);
    let refused = fleet
        .list_shards(fleetshift_common::proto::v1::ListShardsRequest::default())
        .await
        .expect_err("no fleet service in plaintext");
    assert_eq!(refused.code(), tonic::Code::Unimplemented);

    // Reflection lists every service.
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(futures_util::stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let answer = answers.next().await.expect("an answer").expect("ok");
    let Some(MessageResponse::ListServicesResponse(listed)) = answer.message_response else {
        panic!("a service list, got {answer:?}");
    };
    let mut names: Vec<String> = listed
        .service
        .into_iter()
        .map(|service| service.name)
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "fleetshift.v1.AgentService",
            "fleetshift.v1.FleetService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_honour_the_clients_deadline_and_streams_end_unavailable_when_a_replica_stops() {
    let ground = FleetGround::start().await;
    ground.issue(Role::Operator, "ops");
    let (port, replica) =
        spawn_replica_with(ground.home.path(), "c1", &ground.etcd.endpoint, ROLES, &[]);
    let channel = channel_as(
        &format!("https://localhost:{port}"),
        &ground.pki,
        "operator-ops",
    )
    .await;
    let mut fleet =
        fleetshift_common::proto::v1::fleet_service_client::FleetServiceClient::new(channel);

    // A deadline shorter than a round trip to the store: the call is given up, not finished.
    let mut hurried =
        tonic::Request::new(fleetshift_common::proto::v1::ListShardsRequest::default());
    hurried.set_timeout(Duration::from_micros(1));
    let expired = fleet
        .list_shards(hurried)
        .await
        .expect_err("past its deadline");
    assert!(
        matches!(
            expired.code(),
            tonic::Code::Cancelled | tonic::Code::DeadlineExceeded
        ),
        "{expired:?}"
    );
    assert!(
        fleet
            .list_shards(fleetshift_common::proto::v1::ListShardsRequest::default())
            .await
            .is_ok()
    );

    // A stream open when the replica is told to stop ends with UNAVAILABLE, saying to go on
    // elsewhere with --since.
    let mut events = fleet
        .watch_events(fleetshift_common::proto::v1::WatchEventsRequest::default())
        .await
        .expect("watch")
        .into_inner();
    replica.signal("TERM");
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(30), events.message())
            .await
            .expect("the stream ends")
        {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), tonic::Code::Unavailable, "{ended:?}");
    assert!(ended.message().contains("--since"), "{}", ended.message());
}
