//! A rollout across real processes: etcd, three coordinator replicas (`fleetshift serve`), two
//! agents (`fleetshift-agent run`) each on its own PostgreSQL instance with four databases,
//! connected to two different followers (so every task crosses replicas through the store).
//! The leader is SIGKILLed once the canary wave is done: another replica takes over, the
//! rollout completes, and every shard's ledger equals the plan with exactly one claim's token
//! on every revision (no shard was dispatched twice).

use std::time::Duration;

use fleetshift_common::proto::v1::fleet_service_client::FleetServiceClient;
use fleetshift_common::proto::v1::rollout_event::Event;
use fleetshift_common::proto::v1::{
    CreatePlanRequest, GetPlanRequest, ListShardsRequest, PlanState, ShardState,
};
use fleetshift_common::tls::identity::Role;
use fleetshift_coordinator::store::Store;
use fleetshift_tests::binary;
use fleetshift_tests::fleet::{
    FleetGround, Process, agent_config_text, await_leader, channel_as, issue, logs, shard_tables,
};
use fleetshift_tests::postgres::PostgresCluster;
use fleetshift_tests::rollout;
use fleetshift_tests::wait::wait_until;

use super::support;

const REPLICAS: [&str; 3] = ["c1", "c2", "c3"];
const DATABASES: usize = 4;
const ROLES: &str = "viewers = [\"ops\"]\noperators = [\"ops\"]\napprovers = [\"ops\"]";

/// Five revisions of a second each: a shard running when the leader dies is still running when
/// the next leader takes over (one lease TTL, 3 s, later), so the takeover must adopt it.
fn slow_set() -> tempfile::TempDir {
    let files: Vec<(String, String)> = (1..=5)
        .map(|version| {
            (
                format!("{version}_step_{version}.sql"),
                format!(
                    "SELECT pg_sleep(1.0);\nCREATE TABLE step_{version} (id bigint PRIMARY KEY);"
                ),
            )
        })
        .collect();
    let named: Vec<(&str, &str)> = files
        .iter()
        .map(|(name, content)| (name.as_str(), content.as_str()))
        .collect();
    fleetshift_tests::fixtures::migrations(&named)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_across_replicas_survives_its_leader_and_runs_each_shard_once() {
    let ground = FleetGround::start().await;
    ground.issue(Role::Operator, "ops");
    let mut replicas = Vec::new();
    for id in REPLICAS {
        let (port, process) = ground.replica(id, ROLES);
        replicas.push((id, port, Some(process)));
    }
    let FleetGround {
        etcd: _etcd,
        store,
        home,
        pki,
    } = ground;
    let logs_in = home.path().to_path_buf();
    let diagnose = move || {
        logs(
            &logs_in,
            &["c1.log", "c2.log", "c3.log", "agent-a.log", "agent-b.log"],
        )
    };
    let elected = await_leader(&store, Duration::from_secs(20)).await;
    assert!(elected, "no leader\n{}", diagnose());
    let leader = store
        .leader()
        .await
        .expect("leader")
        .expect("leader")
        .leader;
    let followers: Vec<u16> = replicas
        .iter()
        .filter(|(id, _, _)| *id != leader)
        .map(|(_, port, _)| *port)
        .collect();

    let clusters = [
        PostgresCluster::start().expect("cluster a"),
        PostgresCluster::start().expect("cluster b"),
    ];
    let mut urls: Vec<Vec<String>> = Vec::new();
    for cluster in &clusters {
        let mut databases = Vec::new();
        for index in 0..DATABASES {
            databases.push(
                cluster
                    .create_database(&format!("shard_{index}"))
                    .await
                    .expect("database"),
            );
        }
        urls.push(databases);
    }
    let mut agents = Vec::new();
    for ((agent, urls), port) in ["a", "b"].iter().zip(&urls).zip(&followers) {
        issue(&pki, Role::Agent, agent, &[]);
        let config = home.path().join(format!("agent-{agent}.toml"));
        let shards = shard_tables(home.path(), agent, urls);
        std::fs::write(&config, agent_config_text(agent, &[*port], &shards)).expect("config");
        agents.push(Process::spawn(
            &binary::agent(),
            &["--config", config.to_str().expect("path"), "run"],
            &home.path().join(format!("agent-{agent}.log")),
        ));
    }

    let follower = format!("https://localhost:{}", followers[0]);
    let mut client = FleetServiceClient::new(channel_as(&follower, &pki, "operator-ops").await);
    let connected = wait_until(Duration::from_secs(30), || {
        let mut client = client.clone();
        async move {
            client
                .list_shards(ListShardsRequest::default())
                .await
                .is_ok_and(|response| response.into_inner().shards.len() == 2 * DATABASES)
        }
    })
    .await;
    assert!(
        connected,
        "the agents never announced their shards\n{}",
        diagnose()
    );

    let migrations = slow_set();
    let set = fleetshift_common::source::MigrationSet::load(migrations.path(), None).expect("set");
    let mut rollout = rollout::prepare(
        &client,
        CreatePlanRequest {
            migration_set: Some(fleetshift_tests::fixtures::shipped(migrations.path())),
            target_version: String::new(),
            selector: [("env".to_owned(), "test".to_owned())].into(),
            waves: Some(rollout::policy(1, 8, 2)),
            limits: None,
            duties: None,
            allow_drift_shards: String::new(),
            schedule: None,
            updates: None,
            gates: Vec::new(),
        },
    )
    .await
    .expect("plan");
    let plan_id = rollout.plan_id.clone();
    let planned = client
        .get_plan(GetPlanRequest {
            plan_id: plan_id.clone(),
        })
        .await
        .expect("plan")
        .into_inner();
    assert_eq!(planned.waves.len(), 2, "canary, then the rest");
    rollout.start().await.expect("start");

    // Once the canary has succeeded and the second wave runs, the leader dies.
    let canary_done = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(event) = rollout.events.message().await.expect("events") {
            if let Some(Event::ShardState(changed)) = event.event
                && changed.wave == 1
                && changed.state == i32::from(ShardState::Running)
            {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        canary_done,
        Ok(true),
        "the second wave never ran\n{}",
        diagnose()
    );
    let (_, _, process) = replicas
        .iter_mut()
        .find(|(id, _, _)| *id == leader)
        .expect("the leader's process");
    process.take().expect("running").signal("KILL");

    let finished = wait_until(Duration::from_secs(90), || {
        let mut client = client.clone();
        let plan_id = plan_id.clone();
        async move {
            client
                .get_plan(GetPlanRequest { plan_id })
                .await
                .is_ok_and(|plan| plan.into_inner().state == i32::from(PlanState::Succeeded))
        }
    })
    .await;
    assert!(
        finished,
        "the rollout did not complete after the leader died\n{}",
        diagnose()
    );
    let new_leader = store
        .leader()
        .await
        .expect("leader")
        .expect("a leader")
        .leader;
    assert_ne!(new_leader, leader, "another replica leads");

    let done = client
        .get_plan(GetPlanRequest {
            plan_id: plan_id.clone(),
        })
        .await
        .expect("plan")
        .into_inner();
    for task in done.waves.iter().flat_map(|wave| &wave.shards) {
        assert_eq!(task.state, i32::from(ShardState::Succeeded), "{task:?}");
        assert_eq!(
            task.metrics.map(|metrics| metrics.revisions_run),
            Some(5),
            "one run did all five revisions, its metrics kept in the task: {task:?}"
        );
        let (agent, index) = task.shard_id.split_once("-db").expect("shard id");
        let cluster = usize::from(agent == "b");
        let index: usize = index.parse().expect("index");
        let shard = support::postgres(&urls[cluster][index]).await;
        support::assert_sound_ledger(&shard, &set, None).await;
        let ledger = fleetshift_common::engine::ShardEngine::read_ledger(&shard)
            .await
            .expect("ledger");
        assert!(
            ledger
                .iter()
                .all(|entry| entry.fence_token.get() == task.fence_token
                    && entry.plan_id.as_deref() == Some(plan_id.as_str())),
            "{}: every revision under the one claim of the plan (dispatched once): {ledger:?}",
            task.shard_id
        );
    }
    drop(agents);
}
