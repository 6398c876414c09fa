//! Which replica leads, as clients see it: every replica's `DescribeReplica` names the leader
//! and epoch the store holds (viewers only); `fleetshift replicas` lists them and says which
//! does not answer; a watch given several replicas, the leader first, runs on a follower, and
//! so costs the leader nothing.

use std::time::Duration;

use fleetshift_common::proto::v1::DescribeReplicaRequest;
use fleetshift_common::proto::v1::fleet_service_client::FleetServiceClient;
use fleetshift_common::tls::identity::Role;
use fleetshift_common::tls::pki;
use fleetshift_coordinator::store::Store;
use fleetshift_tests::binary;
use fleetshift_tests::fleet::{FleetGround, Process, await_leader, channel_as, fleetshift_as};
use fleetshift_tests::wait::wait_until;

use super::support::{assert_exit, json};

const ROLES: &str = "viewers = [\"ops\"]";
const REPLICAS: [&str; 2] = ["c1", "c2"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_learn_the_leader_and_watch_on_a_follower() {
    let ground = FleetGround::start().await;
    ground.issue(Role::Operator, "ops");
    ground.issue(Role::Operator, "stranger");
    let mut replicas = Vec::new();
    for id in REPLICAS {
        let (port, process) = ground.replica(id, ROLES);
        replicas.push((id, port, process));
    }
    assert!(
        await_leader(&ground.store, Duration::from_secs(20)).await,
        "no leader"
    );
    let leadership = ground
        .store
        .leader()
        .await
        .expect("leader")
        .expect("leader");
    let address = |port: u16| format!("https://localhost:{port}");
    let port_of = |leading: bool| {
        replicas
            .iter()
            .find(|(id, _, _)| (*id == leadership.leader) == leading)
            .map(|(_, port, _)| *port)
            .expect("replica")
    };
    let (leader_port, follower_port) = (port_of(true), port_of(false));

    // Every replica names the store's leader and epoch; only the leader says it leads. The
    // follower learns the leader at its next campaign.
    for (id, port, _) in &replicas {
        let channel = channel_as(&address(*port), &ground.pki, "operator-ops").await;
        let mut client = FleetServiceClient::new(channel);
        let knows = wait_until(Duration::from_secs(10), || {
            let mut client = client.clone();
            async move {
                client
                    .describe_replica(DescribeReplicaRequest {})
                    .await
                    .is_ok_and(|standing| !standing.into_inner().leader_id.is_empty())
            }
        })
        .await;
        assert!(knows, "{id} never knew the leader");
        let standing = client
            .describe_replica(DescribeReplicaRequest {})
            .await
            .expect("standing")
            .into_inner();
        assert_eq!(standing.coordinator_id, *id);
        assert_eq!(standing.leading, *id == leadership.leader, "{standing:?}");
        assert_eq!(standing.leader_id, leadership.leader, "{standing:?}");
        assert_eq!(standing.epoch, leadership.epoch.0, "{standing:?}");
    }

    // Viewers only: an operator without a role is refused.
    let channel = channel_as(&address(leader_port), &ground.pki, "operator-stranger").await;
    let refused = FleetServiceClient::new(channel)
        .describe_replica(DescribeReplicaRequest {})
        .await
        .expect_err("a stranger is refused");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");

    // The CLI lists both, the leader marked; a replica that does not answer is named and
    // fails the command.
    let both = format!("{},{}", address(leader_port), address(follower_port));
    let listed = fleetshift_as(
        &both,
        &ground.pki,
        "operator-ops",
        &["replicas", "--output", "json"],
    )
    .await;
    assert_exit(&listed, 0);
    let listed = json(&listed);
    let rows = listed["replicas"].as_array().expect("rows");
    assert_eq!(rows.len(), 2, "{listed}");
    assert_eq!(rows[0]["coordinator"], leadership.leader.as_str());
    assert_eq!(rows[0]["leading"], true);
    assert_eq!(rows[1]["leading"], false);
    assert_eq!(rows[1]["leader"], leadership.leader.as_str());
    let with_a_dead_one = format!("{both},https://localhost:1");
    let degraded =
        fleetshift_as(&with_a_dead_one, &ground.pki, "operator-ops", &["replicas"]).await;
    assert_exit(&degraded, 6);
    let text = String::from_utf8_lossy(&degraded.stdout);
    assert!(text.contains("https://localhost:1: no answer"), "{text}");
    let stranger = fleetshift_as(&both, &ground.pki, "operator-stranger", &["replicas"]).await;
    assert_exit(&stranger, 9);

    // A watch given the leader first runs on the follower.
    let log = ground.home.path().join("events.log");
    let file = |name: &str| ground.pki.join(name).to_string_lossy().into_owned();
    let environment = [
        ("FLEETSHIFT_COORDINATOR".to_owned(), both.clone()),
        ("FLEETSHIFT_TLS_CERT".to_owned(), file("operator-ops.pem")),
        ("FLEETSHIFT_TLS_KEY".to_owned(), file("operator-ops.key")),
        ("FLEETSHIFT_TLS_CA".to_owned(), file(pki::CA_CERTIFICATE)),
    ];
    let _watch = Process::spawn_with(&binary::fleetshift(), &["events"], &log, &environment);
    let expected = format!(
        "watching on {} ({}, which does not lead; {} leads)",
        address(follower_port),
        replicas
            .iter()
            .find(|(_, port, _)| *port == follower_port)
            .map(|(id, _, _)| *id)
            .expect("follower"),
        leadership.leader
    );
    let placed = wait_until(Duration::from_secs(20), || {
        let log = log.clone();
        let expected = expected.clone();
        async move { std::fs::read_to_string(&log).is_ok_and(|text| text.contains(&expected)) }
    })
    .await;
    assert!(
        placed,
        "the watch did not say it runs on the follower:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}
