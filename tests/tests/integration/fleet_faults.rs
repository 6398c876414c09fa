//! Faults of the processes in a rollout, one plan each, on one fleet: etcd, two coordinator
//! replicas, and one agent process serving two PostgreSQL databases, configured with both
//! replicas. Every revision appends one row to `work_log` in its own transaction, so a
//! revision that ran twice would leave two rows.
//!
//! 1. The agent is SIGKILLed mid-revision and restarted: its claim lapses with its lease, the
//!    shard is claimed again under a newer token, and every revision runs exactly once.
//! 2. The agent is SIGSTOPped mid-revision until its claim has lapsed, then continued: the
//!    revision it had in flight never commits (the server ends the frozen transaction), and the
//!    shard finishes under a newer claim, each revision once.
//! 3. The replica holding the agent's session is SIGKILLed: the agent moves to the other
//!    replica and resumes its lease, so its claims (and fencing tokens) survive.

use std::time::Duration;

use fleetshift_common::engine::ShardEngine;
use fleetshift_common::proto::v1::fleet_service_client::FleetServiceClient;
use fleetshift_common::proto::v1::{
    ApprovePlanRequest, CreatePlanRequest, GetPlanRequest, ListShardsRequest, Plan, PlanAction,
    PlanState, ShardState, WavePolicy,
};
use fleetshift_common::source::MigrationSet;
use fleetshift_common::tls::identity::Role;
use fleetshift_coordinator::store::{EtcdStore, Store, keys};
use fleetshift_tests::binary;
use fleetshift_tests::etcd::EtcdServer;
use fleetshift_tests::fleet::{
    Process, agent_config_text, channel_as, free_port, init_pki, issue, shard_tables,
    write_replica_config,
};
use fleetshift_tests::postgres::PostgresCluster;
use fleetshift_tests::wait::wait_until;
use sqlx::PgPool;
use tonic::transport::Channel;

use super::support;

const ROLES: &str = "viewers = [\"ops\"]\noperators = [\"ops\"]\napprovers = [\"ops\"]";
const SHARDS: usize = 2;
const REVISIONS: usize = 9;

/// Nine transactional revisions; each logs itself, then takes a moment (so a process can be
/// stopped in the middle of one).
fn logging_set() -> tempfile::TempDir {
    let files: Vec<(String, String)> = (1..=REVISIONS)
        .map(|version| {
            let create = if version == 1 {
                "CREATE TABLE work_log (version int NOT NULL);\n"
            } else {
                ""
            };
            (
                format!("{version}_step_{version}.sql"),
                format!(
                    "{create}INSERT INTO work_log VALUES ({version});\nSELECT pg_sleep(0.8);\n"
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

struct Replica {
    id: &'static str,
    process: Process,
    client: FleetServiceClient<Channel>,
}

struct Fleet {
    home: tempfile::TempDir,
    store: EtcdStore,
    /// Each replica with an operator's client of it.
    replicas: Vec<Replica>,
    agent: Option<Process>,
    admins: Vec<PgPool>,
    urls: Vec<String>,
    migrations: tempfile::TempDir,
    set: MigrationSet,
    // Dropped last: the processes above stop before their services.
    _cluster: PostgresCluster,
    _etcd: EtcdServer,
}

impl Fleet {
    async fn start() -> Self {
        let etcd = EtcdServer::start().expect("etcd");
        let store = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint))
            .await
            .expect("store");
        let home = tempfile::tempdir().expect("fleet directory");
        let pki = home.path().join("pki");
        init_pki(&pki);
        issue(&pki, Role::Operator, "ops", &[]);
        issue(&pki, Role::Agent, "a", &[]);
        let mut replicas = Vec::new();
        for id in ["c1", "c2"] {
            issue(&pki, Role::Coordinator, id, &["localhost"]);
            let port = free_port();
            let config = write_replica_config(home.path(), id, port, &etcd.endpoint, ROLES);
            let process = Process::spawn(
                &binary::fleetshift(),
                &["serve", "--config", config.to_str().expect("path")],
                &home.path().join(format!("{id}.log")),
            );
            replicas.push((id, port, process));
        }
        let cluster = PostgresCluster::start().expect("cluster");
        let mut urls = Vec::new();
        let mut admins = Vec::new();
        for index in 0..SHARDS {
            let name = format!("shard_{index}");
            urls.push(cluster.create_database(&name).await.expect("database"));
            admins.push(cluster.admin_pool(&name).await.expect("admin pool"));
        }
        let ports: Vec<u16> = replicas.iter().map(|(_, port, _)| *port).collect();
        let mut connected = Vec::new();
        for (id, port, process) in replicas {
            let address = format!("https://localhost:{port}");
            let client = FleetServiceClient::new(channel_as(&address, &pki, "operator-ops").await);
            connected.push(Replica {
                id,
                process,
                client,
            });
        }
        let shards = shard_tables(home.path(), "a", &urls);
        std::fs::write(
            home.path().join("agent-a.toml"),
            agent_config_text("a", &ports, &shards),
        )
        .expect("agent config");
        let migrations = logging_set();
        let set = MigrationSet::load(migrations.path(), None).expect("set");
        let mut fleet = Self {
            home,
            store,
            replicas: connected,
            agent: None,
            admins,
            urls,
            migrations,
            set,
            _cluster: cluster,
            _etcd: etcd,
        };
        fleet.start_agent("agent-a.log");
        fleet.await_shards().await;
        fleet
    }

    /// An operator's client of a replica that is up.
    fn client(&self) -> FleetServiceClient<Channel> {
        self.replicas[0].client.clone()
    }

    fn start_agent(&mut self, log: &str) {
        let config = self.home.path().join("agent-a.toml");
        self.agent = Some(Process::spawn(
            &binary::agent(),
            &["--config", config.to_str().expect("path"), "run"],
            &self.home.path().join(log),
        ));
    }

    async fn await_shards(&self) {
        let announced = wait_until(Duration::from_secs(30), || {
            let mut client = self.client();
            async move {
                client
                    .list_shards(ListShardsRequest::default())
                    .await
                    .is_ok_and(|response| response.into_inner().shards.len() == SHARDS)
            }
        })
        .await;
        assert!(
            announced,
            "the agent's shards were not announced\n{}",
            self.logs()
        );
    }

    fn logs(&self) -> String {
        let mut text = String::new();
        let mut names: Vec<_> = std::fs::read_dir(self.home.path())
            .expect("fleet directory")
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|extension| extension == "log"))
            .collect();
        names.sort();
        for path in names {
            let log = std::fs::read_to_string(&path).unwrap_or_default();
            text.push_str(&format!("--- {}\n{log}\n", path.display()));
        }
        text
    }

    /// Plans, approves and starts a rollout to `target` across both shards at once.
    async fn start_rollout(&self, target: usize) -> String {
        let mut client = self.client();
        let plan = client
            .create_plan(CreatePlanRequest {
                migration_set: Some(fleetshift_tests::fixtures::shipped(self.migrations.path())),
                target_version: target.to_string(),
                selector: [("env".to_owned(), "test".to_owned())].into(),
                waves: Some(WavePolicy {
                    canary_shards: 0,
                    percentages: vec![100],
                    max_concurrency_per_wave: 2,
                    max_concurrency_per_host: 2,
                    failure_threshold: 1,
                }),
                limits: None,
            })
            .await
            .expect("plan")
            .into_inner();
        client
            .approve_plan(ApprovePlanRequest {
                plan_id: plan.plan_id.clone(),
                comment: String::new(),
            })
            .await
            .expect("approve");
        client
            .start_rollout(PlanAction {
                plan_id: plan.plan_id.clone(),
                reason: String::new(),
            })
            .await
            .expect("start");
        plan.plan_id
    }

    async fn plan(&self, plan_id: &str) -> Plan {
        self.client()
            .get_plan(GetPlanRequest {
                plan_id: plan_id.to_owned(),
            })
            .await
            .expect("plan")
            .into_inner()
    }

    async fn await_success(&self, plan_id: &str) -> Plan {
        let finished = wait_until(Duration::from_secs(90), || async {
            self.plan(plan_id).await.state == i32::from(PlanState::Succeeded)
        })
        .await;
        let plan = self.plan(plan_id).await;
        assert!(finished, "{plan:?} did not succeed\n{}", self.logs());
        plan
    }

    /// A shard inside the second revision of a plan whose first is `after + 1` (so one of
    /// the plan's revisions is committed and one more is still to come).
    async fn await_mid_revision(&self, after: usize) -> usize {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while tokio::time::Instant::now() < deadline {
            for (index, admin) in self.admins.iter().enumerate() {
                if work_log(admin).await.len() == after + 1 && sleeping(admin).await {
                    return index;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no shard got mid-revision\n{}", self.logs());
    }

    /// The index in `replicas` of the replica holding the agent's session (as its log says).
    fn agents_replica(&self) -> usize {
        let log = std::fs::read_dir(self.home.path())
            .expect("fleet directory")
            .filter_map(Result::ok)
            .filter(|entry| entry.file_name().to_string_lossy().starts_with("agent-a"))
            .max_by_key(|entry| entry.metadata().and_then(|meta| meta.modified()).ok())
            .map(|entry| std::fs::read_to_string(entry.path()).unwrap_or_default())
            .unwrap_or_default();
        let established = log
            .lines()
            .rfind(|line| line.contains("session established"))
            .unwrap_or_else(|| panic!("the agent holds no session\n{}", self.logs()));
        self.replicas
            .iter()
            .position(|replica| established.contains(&format!("coordinator={}", replica.id)))
            .unwrap_or_else(|| panic!("no replica named in {established:?}"))
    }

    async fn claim_token(&self, shard: usize) -> Option<i64> {
        self.store
            .read(&keys::claim(&shard_id(shard)))
            .await
            .expect("read the claim")
            .map(|entry| entry.create_revision)
    }

    /// Every revision in `work_log` exactly once, up to `target`, and a sound ledger.
    async fn assert_each_revision_once(&self, target: usize) {
        for (index, admin) in self.admins.iter().enumerate() {
            let expected: Vec<i32> = (1..=i32::try_from(target).expect("small")).collect();
            assert_eq!(
                work_log(admin).await,
                expected,
                "shard {index}: each revision's work exactly once"
            );
            let shard = support::postgres(&self.urls[index]).await;
            support::assert_sound_ledger(&shard, &self.set, Some(&target.to_string())).await;
        }
    }

    /// The fencing tokens recorded for `plan_id`'s revisions on `shard`, in version order.
    async fn ledger_tokens(&self, shard: usize, plan_id: &str) -> Vec<i64> {
        let engine = support::postgres(&self.urls[shard]).await;
        let ledger = engine.read_ledger().await.expect("ledger");
        ledger
            .iter()
            .filter(|entry| entry.plan_id.as_deref() == Some(plan_id))
            .map(|entry| entry.fence_token)
            .collect()
    }
}

fn shard_id(index: usize) -> String {
    format!("a-db{index}")
}

async fn work_log(admin: &PgPool) -> Vec<i32> {
    sqlx::query_scalar("SELECT version FROM work_log ORDER BY version")
        .fetch_all(admin)
        .await
        .unwrap_or_default()
}

/// Whether the agent's connection to this database is inside a revision's `pg_sleep`.
async fn sleeping(admin: &PgPool) -> bool {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                        WHERE datname = current_database() AND state = 'active'
                          AND query LIKE '%pg_sleep%' AND pid <> pg_backend_pid())",
    )
    .fetch_one(admin)
    .await
    .unwrap_or(false)
}

fn task_token(plan: &Plan, shard: usize) -> i64 {
    plan.waves
        .iter()
        .flat_map(|wave| &wave.shards)
        .find(|task| task.shard_id == shard_id(shard))
        .map(|task| {
            assert_eq!(task.state, i32::from(ShardState::Succeeded), "{task:?}");
            task.fence_token
        })
        .expect("the shard's task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_survives_its_agent_being_killed_frozen_and_moved_between_replicas() {
    let mut fleet = Fleet::start().await;

    // 1. SIGKILL mid-revision, then a restart (as a supervisor would).
    let first = fleet.start_rollout(3).await;
    let killed = fleet.await_mid_revision(0).await;
    let before = fleet
        .claim_token(killed)
        .await
        .expect("a claim while running");
    fleet.agent.take().expect("running").signal("KILL");
    fleet.start_agent("agent-a-restarted.log");
    let plan = fleet.await_success(&first).await;
    fleet.assert_each_revision_once(3).await;
    let after = task_token(&plan, killed);
    assert!(
        after > before,
        "claimed again under a newer token: {before} then {after}\n{}",
        fleet.logs()
    );
    let tokens = fleet.ledger_tokens(killed, &first).await;
    assert!(
        tokens.contains(&before) && tokens.last() == Some(&after),
        "revisions before the kill under the old claim, the rest under the new: {tokens:?}"
    );

    // 2. SIGSTOP mid-revision until the claim has lapsed, then SIGCONT.
    let second = fleet.start_rollout(6).await;
    let frozen = fleet.await_mid_revision(3).await;
    let stale = fleet
        .claim_token(frozen)
        .await
        .expect("a claim while running");
    let agent = fleet.agent.as_ref().expect("running");
    agent.signal("STOP");
    let lapsed = wait_until(Duration::from_secs(30), || async {
        fleet.claim_token(frozen).await.is_none()
    })
    .await;
    // Past the claim's lapse, the shard's own safeguards (idle transaction, migrator lock
    // session) end on the same scale; give them that long before the agent wakes.
    tokio::time::sleep(Duration::from_secs(4)).await;
    agent.signal("CONT");
    assert!(
        lapsed,
        "the frozen agent's claim never lapsed\n{}",
        fleet.logs()
    );
    let plan = fleet.await_success(&second).await;
    fleet.assert_each_revision_once(6).await;
    let fresh = task_token(&plan, frozen);
    assert!(fresh > stale, "finished under a newer claim");
    let tokens = fleet.ledger_tokens(frozen, &second).await;
    assert_eq!(
        tokens.last(),
        Some(&fresh),
        "the revision in flight at the freeze committed under the newer claim: {tokens:?}"
    );

    // 3. The replica holding the agent's session dies: the agent moves to the other one.
    let third = fleet.start_rollout(9).await;
    let moving = fleet.await_mid_revision(6).await;
    let held = fleet
        .claim_token(moving)
        .await
        .expect("a claim while running");
    let serving = fleet.replicas.remove(fleet.agents_replica());
    serving.process.signal("KILL");
    drop(serving);
    let plan = fleet.await_success(&third).await;
    fleet.assert_each_revision_once(9).await;
    for shard in 0..SHARDS {
        let token = task_token(&plan, shard);
        let tokens = fleet.ledger_tokens(shard, &third).await;
        assert!(
            tokens.iter().all(|recorded| *recorded == token),
            "shard {shard}: the claim survived the move, one token throughout: {tokens:?}"
        );
        if shard == moving {
            assert_eq!(
                token, held,
                "the claim held before the move is the one used"
            );
        }
    }
}
