//! Real processes on loopback: etcd, a coordinator (`fleetshift serve`) and an agent
//! (`fleetshift-agent run`) holding its session over mutual TLS. A stopped agent releases its
//! lease at once; a killed one holds it until the TTL, as its own clock assumes.

use std::time::Duration;

use fleetshift_common::proto::v1::Hello;
use fleetshift_common::tls::identity::Role;
use fleetshift_coordinator::store::{EtcdStore, Store};
use fleetshift_tests::binary;
use fleetshift_tests::fleet::{
    COORDINATOR_LISTENING, FleetGround, Process, issue, logged_port, write_agent_config,
    write_coordinator_config,
};
use fleetshift_tests::wait::wait_until;
use prost::Message;

async fn announced(store: &EtcdStore) -> Vec<Hello> {
    store
        .agents()
        .await
        .expect("agents")
        .into_iter()
        .map(|(_, facts)| Hello::decode(facts.as_slice()).expect("hello facts"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_process_holds_its_session_and_releases_it_as_it_stops() {
    let FleetGround {
        etcd,
        store,
        home,
        pki,
    } = FleetGround::start().await;
    issue(&pki, Role::Coordinator, "c1", &["localhost"]);
    issue(&pki, Role::Agent, "db-host-1", &[]);
    let coordinator_config = write_coordinator_config(home.path(), 0, &etcd.endpoint, "");
    let coordinator_log = home.path().join("coordinator.log");
    let mut coordinator = Process::spawn(
        &binary::fleetshift(),
        &[
            "serve",
            "--config",
            coordinator_config.to_str().expect("path"),
        ],
        &coordinator_log,
    );
    let port = logged_port(&coordinator_log, COORDINATOR_LISTENING);
    let agent_config = write_agent_config(
        home.path(),
        port,
        "db-host-1",
        &format!(
            "[[shards]]
id = \"cache\"
labels = {{ env = \"test\" }}
database_url = \"sqlite:{}\"
",
            home.path().join("cache.db").display()
        ),
    );
    let agent_arguments = ["--config", agent_config.to_str().expect("path"), "run"];
    let logs = home.path().to_path_buf();
    let diagnose = move || {
        let read = |name: &str| std::fs::read_to_string(logs.join(name)).unwrap_or_default();
        format!(
            "coordinator log:\n{}\nagent log:\n{}",
            read("coordinator.log"),
            read("agent.log")
        )
    };

    // Started: the agent's session announces it with its shard facts.
    let mut agent = Process::spawn(
        &binary::agent(),
        &agent_arguments,
        &home.path().join("agent.log"),
    );
    let up = wait_until(Duration::from_secs(20), || async {
        announced(&store).await.len() == 1
    })
    .await;
    assert!(up, "the agent never held a session\n{}", diagnose());
    let hello = &announced(&store).await[0];
    assert_eq!(hello.agent_id, "db-host-1");
    assert_eq!(hello.shards[0].shard_id, "cache");
    assert!(hello.shards[0].reachable);

    // Stopped (SIGTERM): it closes its session, the lease is revoked at once.
    agent.signal("TERM");
    let status = agent
        .wait_for_exit(Duration::from_secs(10))
        .expect("the agent stops on SIGTERM");
    assert!(status.success(), "{status:?}\n{}", diagnose());
    let released = wait_until(Duration::from_secs(1), || async {
        announced(&store).await.is_empty()
    })
    .await;
    assert!(
        released,
        "a stopped agent's lease must be revoked at once\n{}",
        diagnose()
    );

    // Killed (SIGKILL): it may have been working, so its lease lives until the TTL (3 s).
    let agent = Process::spawn(
        &binary::agent(),
        &agent_arguments,
        &home.path().join("agent.log"),
    );
    let up = wait_until(Duration::from_secs(20), || async {
        announced(&store).await.len() == 1
    })
    .await;
    assert!(up, "the agent did not come back\n{}", diagnose());
    agent.signal("KILL");
    drop(agent);
    // Once the coordinator has seen the stream break, the lease must still stand.
    let noticed = wait_until(Duration::from_secs(15), || async {
        std::fs::read_to_string(&coordinator_log)
            .unwrap_or_default()
            .contains("session ended abruptly")
    })
    .await;
    assert!(
        noticed,
        "the coordinator never noticed the killed agent\n{}",
        diagnose()
    );
    assert_eq!(
        announced(&store).await.len(),
        1,
        "a killed agent's lease outlives it until the TTL"
    );
    let lapsed = wait_until(Duration::from_secs(15), || async {
        announced(&store).await.is_empty()
    })
    .await;
    assert!(
        lapsed,
        "without heartbeats the lease lapses\n{}",
        diagnose()
    );

    coordinator.signal("TERM");
    let status = coordinator
        .wait_for_exit(Duration::from_secs(10))
        .expect("the coordinator stops on SIGTERM");
    assert!(status.success(), "{status:?}\n{}", diagnose());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_restart_does_not_release_an_agents_claims() {
    let FleetGround {
        etcd,
        store,
        home,
        pki,
    } = FleetGround::start().await;
    issue(&pki, Role::Coordinator, "c1", &["localhost"]);
    issue(&pki, Role::Agent, "db-host-1", &[]);
    let first_config = write_coordinator_config(home.path(), 0, &etcd.endpoint, "");
    let first_log = home.path().join("coordinator-1.log");
    let coordinator = Process::spawn(
        &binary::fleetshift(),
        &["serve", "--config", first_config.to_str().expect("path")],
        &first_log,
    );
    let port = logged_port(&first_log, COORDINATOR_LISTENING);
    // The restarted replica takes the same port, so the agent's one address still reaches it.
    let coordinator_config = write_coordinator_config(home.path(), port, &etcd.endpoint, "");
    let serve = [
        "serve",
        "--config",
        coordinator_config.to_str().expect("path"),
    ];
    let shard = format!(
        "[[shards]]\nid = \"cache\"\ndatabase_url = \"sqlite:{}\"\n",
        home.path().join("cache.db").display()
    );
    let agent_config = write_agent_config(home.path(), port, "db-host-1", &shard);
    let _agent = Process::spawn(
        &binary::agent(),
        &["--config", agent_config.to_str().expect("path"), "run"],
        &home.path().join("agent.log"),
    );
    let up = wait_until(Duration::from_secs(20), || async {
        store
            .agent_lease("db-host-1")
            .await
            .expect("read")
            .is_some()
    })
    .await;
    assert!(up, "the agent never connected");
    let lease = store
        .agent_lease("db-host-1")
        .await
        .expect("read")
        .expect("lease");
    let claim = store
        .claim("cache", "db-host-1", lease)
        .await
        .expect("claim under the session lease");

    // The coordinator dies and comes back; the agent reconnects and resumes its lease.
    coordinator.signal("KILL");
    drop(coordinator);
    let _restarted = Process::spawn(
        &binary::fleetshift(),
        &serve,
        &home.path().join("coordinator-2.log"),
    );
    let agent_log = home.path().join("agent.log");
    let sessions = || {
        std::fs::read_to_string(&agent_log)
            .unwrap_or_default()
            .matches("session established")
            .count()
    };
    let reconnected = wait_until(Duration::from_secs(20), || async { sessions() >= 2 }).await;
    assert!(
        reconnected,
        "the agent never reconnected:\n{}",
        std::fs::read_to_string(&agent_log).unwrap_or_default()
    );
    let log = std::fs::read_to_string(&agent_log).unwrap_or_default();
    assert_eq!(
        log.matches("session established").count(),
        2,
        "the agent reconnected once:\n{log}"
    );
    assert_eq!(
        store.agent_lease("db-host-1").await.expect("read"),
        Some(lease),
        "the same lease, resumed:\n{log}"
    );
    assert_eq!(
        store.claim_of("cache").await.expect("read"),
        Some(claim),
        "its claim outlived the restart (TTL 3 s)"
    );
}
