//! The operator API over mutual TLS, between real processes: a viewer lists the fleet's shards
//! (as the agents announced them) and filters them by label; an unknown operator and an agent
//! certificate are refused; a viewer cannot approve, an approver gets past authorisation.

use std::process::Command;
use std::time::Duration;

use fleetshift_common::proto::v1::ApprovePlanRequest;
use fleetshift_common::proto::v1::fleet_service_client::FleetServiceClient;
use fleetshift_common::tls::identity::Role;
use fleetshift_tests::binary;
use fleetshift_tests::fleet::{
    COORDINATOR_LISTENING, FleetGround, Process, channel_as, issue, logged_port,
    write_agent_config, write_coordinator_config,
};
use tonic::Code;
use tonic::transport::Channel;

use super::support;

fn shards(home: &std::path::Path, port: u16, holder: &str, extra: &[&str]) -> std::process::Output {
    let pki = home.join("pki");
    Command::new(binary::fleetshift())
        .arg("shards")
        .args(extra)
        .env(
            "FLEETSHIFT_COORDINATOR",
            format!("https://localhost:{port}"),
        )
        .env("FLEETSHIFT_TLS_CERT", pki.join(format!("{holder}.pem")))
        .env("FLEETSHIFT_TLS_KEY", pki.join(format!("{holder}.key")))
        .env("FLEETSHIFT_TLS_CA", pki.join("ca.pem"))
        .output()
        .expect("run fleetshift shards")
}

async fn grpc_client(
    home: &std::path::Path,
    port: u16,
    holder: &str,
) -> FleetServiceClient<Channel> {
    let address = format!("https://localhost:{port}");
    FleetServiceClient::new(channel_as(&address, &home.join("pki"), holder).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_see_the_fleet_according_to_their_roles() {
    let FleetGround {
        etcd,
        store: _store,
        home,
        pki,
    } = FleetGround::start().await;
    issue(&pki, Role::Coordinator, "c1", &["localhost"]);
    issue(&pki, Role::Agent, "db-host-1", &[]);
    for operator in ["alice", "carol", "mallory"] {
        issue(&pki, Role::Operator, operator, &[]);
    }
    let coordinator_config = write_coordinator_config(
        home.path(),
        0,
        &etcd.endpoint,
        "viewers = [\"alice\"]
approvers = [\"carol\"]",
    );
    let coordinator_log = home.path().join("coordinator.log");
    let _coordinator = Process::spawn(
        &binary::fleetshift(),
        &[
            "serve",
            "--config",
            coordinator_config.to_str().expect("path"),
        ],
        &coordinator_log,
    );
    let port = logged_port(&coordinator_log, COORDINATOR_LISTENING);
    let shard_tables = format!(
        "[[shards]]\nid = \"users-eu\"\nlabels = {{ env = \"production\", region = \"eu\" }}\ndatabase_url = \"sqlite:{}\"\n\
         [[shards]]\nid = \"users-staging\"\nlabels = {{ env = \"staging\" }}\ndatabase_url = \"sqlite:{}\"\n",
        home.path().join("eu.db").display(),
        home.path().join("staging.db").display()
    );
    let agent_config = write_agent_config(home.path(), port, "db-host-1", &shard_tables);
    let _agent = Process::spawn(
        &binary::agent(),
        &["--config", agent_config.to_str().expect("path"), "run"],
        &home.path().join("agent.log"),
    );

    // A viewer lists the shards the agent announced (once it has connected).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let listed = loop {
        let output = shards(home.path(), port, "operator-alice", &["--output", "json"]);
        if output.status.success() {
            let listed: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
            if listed["shards"]
                .as_array()
                .is_some_and(|shards| shards.len() == 2)
            {
                break listed;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no shards listed: {}",
            binary::printed(&output)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(listed["shards"][0]["shard"], "users-eu");
    assert_eq!(listed["shards"][0]["agent"], "db-host-1");
    assert_eq!(
        listed["shards"][0]["agent_version"],
        fleetshift_common::versions::VERSION
    );
    assert_eq!(listed["shards"][0]["health"], "healthy");
    let filtered = shards(
        home.path(),
        port,
        "operator-alice",
        &["--selector", "env=production", "--output", "json"],
    );
    let filtered: serde_json::Value = serde_json::from_slice(&filtered.stdout).expect("JSON");
    assert_eq!(filtered["shards"].as_array().map(Vec::len), Some(1));
    let human = shards(home.path(), port, "operator-alice", &[]);
    assert!(
        String::from_utf8_lossy(&human.stdout).contains("2 shard(s)"),
        "{}",
        binary::printed(&human)
    );

    // No role, or not an operator at all: refused, with their own exit code.
    let stranger = shards(home.path(), port, "operator-mallory", &[]);
    support::assert_exit(&stranger, 9);
    assert!(
        binary::printed(&stranger).contains("needs the viewer role (it has: none)"),
        "{}",
        binary::printed(&stranger)
    );
    let agent = shards(home.path(), port, "agent-db-host-1", &[]);
    support::assert_exit(&agent, 9);
    assert!(
        binary::printed(&agent).contains("is not an operator identity"),
        "{}",
        binary::printed(&agent)
    );

    // A viewer cannot approve; an approver gets past authorisation (to a plan that is not there).
    let approve = ApprovePlanRequest {
        plan_id: "p-1".to_owned(),
        comment: "looks fine".to_owned(),
        capacity: String::new(),
    };
    let refused = grpc_client(home.path(), port, "operator-alice")
        .await
        .approve_plan(approve.clone())
        .await
        .expect_err("viewer");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let passed = grpc_client(home.path(), port, "operator-carol")
        .await
        .approve_plan(approve)
        .await
        .expect_err("not served yet");
    assert_eq!(passed.code(), Code::NotFound, "{passed:?}");
    assert!(
        passed.message().contains("fleetshift status"),
        "says what to do next"
    );
}
