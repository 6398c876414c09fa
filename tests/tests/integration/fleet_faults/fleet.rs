//! The fault tests' fleet: etcd, two replicas, one agent process serving two PostgreSQL
//! databases, and a migration set whose every transactional revision logs itself.

use super::super::support;
use fleetshift_common::engine::ShardEngine;
use fleetshift_common::proto::v1::fleet_service_client::FleetServiceClient;
use fleetshift_common::proto::v1::{
    CreatePlanRequest, ExecutionLimits, GetPlanRequest, Plan, PlanState, ShardState, WavePolicy,
};
use fleetshift_common::source::MigrationSet;
use fleetshift_common::tls::identity::Role;
use fleetshift_coordinator::claims;
use fleetshift_coordinator::store::{EtcdStore, Store};
use fleetshift_testkit::etcd::EtcdServer;
use fleetshift_tests::binary;
use fleetshift_tests::fleet::{
    FleetGround, Process, agent_config_text, channel_as, shard_tables, shards_announced,
};
use fleetshift_tests::postgres::PostgresCluster;
use fleetshift_tests::rollout;
use fleetshift_tests::wait::wait_until;
use sqlx::PgPool;
use std::time::Duration;
use tonic::transport::Channel;

pub(super) const ROLES: &str = "viewers = [\"ops\"]\noperators = [\"ops\"]\napprovers = [\"ops\"]";
pub(super) const SHARDS: usize = 2;
pub(super) const REVISIONS: usize = 11;

/// The revision that runs outside a transaction.
pub(super) const OUTSIDE_TRANSACTION: usize = 5;

/// The revisions that build an index concurrently (outside a transaction), and the indexes.
pub(super) const INDEX_BUILDS: [(usize, &str); 2] =
    [(10, "work_log_version"), (11, "work_log_version_again")];

/// Nine revisions; each transactional one logs itself, then takes a moment (so a process can
/// be stopped in the middle of one); revision 5 is one slow autocommit statement.
pub(super) fn logging_set() -> tempfile::TempDir {
    let files: Vec<(String, String)> = (1..=REVISIONS)
        .map(|version| {
            let script = match version {
                1 => "CREATE TABLE work_log (version int NOT NULL);\n\
                      INSERT INTO work_log VALUES (1);\nSELECT pg_sleep(0.8);\n"
                    .to_owned(),
                OUTSIDE_TRANSACTION => "-- no-transaction\n\
                     CREATE TABLE IF NOT EXISTS paused_work AS SELECT 1 AS slept FROM pg_sleep(2.5);\n"
                    .to_owned(),
                build if INDEX_BUILDS.iter().any(|(version, _)| *version == build) => {
                    let (_, index) = INDEX_BUILDS
                        .iter()
                        .find(|(version, _)| *version == build)
                        .expect("an index build");
                    format!(
                        "-- no-transaction\nCREATE INDEX CONCURRENTLY {index} ON work_log (version);\n"
                    )
                }
                _ => format!("INSERT INTO work_log VALUES ({version});\nSELECT pg_sleep(0.8);\n"),
            };
            (format!("{version}_step_{version}.sql"), script)
        })
        .collect();
    let named: Vec<(&str, &str)> = files
        .iter()
        .map(|(name, content)| (name.as_str(), content.as_str()))
        .collect();
    fleetshift_tests::fixtures::migrations(&named)
}

pub(super) struct Replica {
    pub(super) id: &'static str,
    pub(super) process: Process,
    pub(super) client: FleetServiceClient<Channel>,
}

pub(super) struct Fleet {
    pub(super) home: tempfile::TempDir,
    pub(super) store: EtcdStore,
    /// Each replica with an operator's client of it.
    pub(super) replicas: Vec<Replica>,
    pub(super) agent: Option<Process>,
    /// The log of the agent process started last.
    pub(super) agent_log: String,
    pub(super) admins: Vec<PgPool>,
    pub(super) urls: Vec<String>,
    pub(super) migrations: tempfile::TempDir,
    pub(super) set: MigrationSet,
    /// The replicas' ports, in `replicas`' first order.
    pub(super) ports: Vec<u16>,
    // Dropped last: the processes above stop before their services.
    pub(super) cluster: PostgresCluster,
    pub(super) _etcd: EtcdServer,
}

impl Fleet {
    pub(super) async fn start() -> Self {
        Self::start_with("").await
    }

    /// A fleet whose agent's configuration begins with `agent_settings` (top-level keys).
    pub(super) async fn start_with(agent_settings: &str) -> Self {
        let ground = FleetGround::start().await;
        ground.issue(Role::Operator, "ops");
        ground.issue(Role::Agent, "a");
        let mut replicas = Vec::new();
        for id in ["c1", "c2"] {
            let (port, process) = ground.replica(id, ROLES);
            replicas.push((id, port, process));
        }
        let FleetGround {
            etcd,
            store,
            home,
            pki,
        } = ground;
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
            format!(
                "{agent_settings}\n{}",
                agent_config_text("a", &ports, &shards)
            ),
        )
        .expect("agent config");
        let migrations = logging_set();
        let set = MigrationSet::load(migrations.path(), None).expect("set");
        let mut fleet = Self {
            home,
            store,
            replicas: connected,
            agent: None,
            agent_log: String::new(),
            admins,
            urls,
            migrations,
            set,
            ports,
            cluster,
            _etcd: etcd,
        };
        fleet.start_agent("agent-a.log");
        fleet.await_shards().await;
        fleet
    }

    /// An operator's client of a replica that is up.
    pub(super) fn client(&self) -> FleetServiceClient<Channel> {
        self.replicas[0].client.clone()
    }

    pub(super) fn start_agent(&mut self, log: &str) {
        self.agent_log = log.to_owned();
        let config = self.home.path().join("agent-a.toml");
        self.agent = Some(Process::spawn(
            &binary::agent(),
            &["--config", config.to_str().expect("path"), "run"],
            &self.home.path().join(log),
        ));
    }

    /// Stops the agent as a supervisor does (SIGTERM), waits for it to exit, and starts it
    /// again logging to `log`.
    pub(super) fn stop_agent_and_restart(&mut self, log: &str) {
        let mut agent = self.agent.take().expect("running");
        agent.signal("TERM");
        agent
            .wait_for_exit(Duration::from_secs(60))
            .expect("the agent stops on SIGTERM");
        drop(agent);
        self.start_agent(log);
    }

    pub(super) async fn await_shards(&self) {
        let announced = shards_announced(&self.client(), SHARDS, Duration::from_secs(30)).await;
        assert!(
            announced,
            "the agent's shards were not announced\n{}",
            self.logs()
        );
    }

    pub(super) fn log_of(&self, name: &str) -> String {
        std::fs::read_to_string(self.home.path().join(name)).unwrap_or_default()
    }

    pub(super) fn logs(&self) -> String {
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
    pub(super) async fn start_rollout(&self, target: usize) -> String {
        self.start_rollout_with(target, rollout::policy(1, 2, 2), None)
            .await
    }

    /// Like [`Fleet::start_rollout`], with the waves and limits given.
    pub(super) async fn start_rollout_with(
        &self,
        target: usize,
        waves: WavePolicy,
        limits: Option<ExecutionLimits>,
    ) -> String {
        let mut rollout = rollout::prepare(
            &self.client(),
            CreatePlanRequest {
                migration_set: Some(fleetshift_tests::fixtures::shipped(self.migrations.path())),
                target_version: target.to_string(),
                selector: [("env".to_owned(), "test".to_owned())].into(),
                waves: Some(waves),
                limits,
                duties: None,
                allow_drift_shards: String::new(),
                schedule: None,
                updates: None,
                gates: Vec::new(),
            },
        )
        .await
        .expect("plan");
        rollout.start().await.expect("start");
        rollout.plan_id
    }

    pub(super) async fn plan(&self, plan_id: &str) -> Plan {
        self.client()
            .get_plan(GetPlanRequest {
                plan_id: plan_id.to_owned(),
            })
            .await
            .expect("plan")
            .into_inner()
    }

    /// The plan once it ended, whatever its end.
    pub(super) async fn await_end(&self, plan_id: &str) -> Plan {
        let ended = wait_until(Duration::from_secs(120), || async {
            let plan = self.plan(plan_id).await;
            fleetshift_coordinator::rollout::plan_ended(plan.state())
                && plan.waves.iter().flat_map(|wave| &wave.shards).all(|task| {
                    fleetshift_coordinator::rollout::task_ended(task.state())
                        || task.state() == ShardState::Pending
                })
        })
        .await;
        let plan = self.plan(plan_id).await;
        assert!(ended, "{plan:?} did not end\n{}", self.logs());
        plan
    }

    /// Runs the `fleetshift` CLI as the operator against the first replica.
    pub(super) async fn cli(&self, arguments: &[&str]) -> std::process::Output {
        fleetshift_tests::fleet::fleetshift_as(
            &format!("https://localhost:{}", self.ports[0]),
            &self.home.path().join("pki"),
            "operator-ops",
            arguments,
        )
        .await
    }

    pub(super) async fn await_success(&self, plan_id: &str) -> Plan {
        let finished = wait_until(Duration::from_secs(90), || async {
            self.plan(plan_id).await.state == i32::from(PlanState::Succeeded)
        })
        .await;
        let plan = self.plan(plan_id).await;
        assert!(finished, "{plan:?} did not succeed\n{}", self.logs());
        plan
    }

    /// A shard inside the second logging revision of a plan, `logged` rows having been
    /// logged before the plan (so one of the plan's revisions is committed and one more is
    /// still to come).
    pub(super) async fn await_mid_revision(&self, logged: usize) -> usize {
        self.await_shard(|rows, running| rows == logged + 1 && running.contains("pg_sleep"))
            .await
    }

    /// The first shard whose work-log length and running query satisfy `wanted`.
    pub(super) async fn await_shard(&self, wanted: impl Fn(usize, &str) -> bool) -> usize {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while tokio::time::Instant::now() < deadline {
            for (index, admin) in self.admins.iter().enumerate() {
                let running = running_query(admin).await.unwrap_or_default();
                if wanted(work_log(admin).await.len(), &running) {
                    return index;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no shard got where the test waits\n{}", self.logs());
    }

    /// The index in `replicas` of the replica holding the agent's session (as its log says).
    pub(super) fn agents_replica(&self) -> usize {
        let log = self.log_of(&self.agent_log);
        let established = log
            .lines()
            .rfind(|line| line.contains("session established"))
            .unwrap_or_else(|| panic!("the agent holds no session\n{}", self.logs()));
        self.replicas
            .iter()
            .position(|replica| established.contains(&format!("coordinator={}", replica.id)))
            .unwrap_or_else(|| panic!("no replica named in {established:?}"))
    }

    pub(super) async fn claim_token(&self, shard: usize) -> Option<i64> {
        self.store
            .read(&claims::key(&shard_id(shard)))
            .await
            .expect("read the claim")
            .map(|entry| entry.create_revision)
    }

    /// Every revision's work exactly once, up to `target`, and a sound ledger.
    pub(super) async fn assert_each_revision_once(&self, target: usize) {
        for (index, admin) in self.admins.iter().enumerate() {
            let expected: Vec<i32> = (1..=target)
                .filter(|version| {
                    *version != OUTSIDE_TRANSACTION
                        && INDEX_BUILDS.iter().all(|(build, _)| build != version)
                })
                .map(|version| i32::try_from(version).expect("small"))
                .collect();
            assert_eq!(
                work_log(admin).await,
                expected,
                "shard {index}: each revision's work exactly once"
            );
            if target >= OUTSIDE_TRANSACTION {
                let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM paused_work")
                    .fetch_one(admin)
                    .await
                    .expect("paused_work");
                assert_eq!(rows, 1, "shard {index}: revision 5 created its table once");
            }
            let shard = support::postgres(&self.urls[index]).await;
            support::assert_sound_ledger(&shard, &self.set, Some(&target.to_string())).await;
        }
    }

    /// The fencing tokens recorded for `plan_id`'s revisions on `shard`, in version order.
    pub(super) async fn ledger_tokens(&self, shard: usize, plan_id: &str) -> Vec<i64> {
        let engine = support::postgres(&self.urls[shard]).await;
        let ledger = engine.read_ledger().await.expect("ledger");
        ledger
            .iter()
            .filter(|entry| entry.plan_id.as_deref() == Some(plan_id))
            .map(|entry| entry.fence_token.get())
            .collect()
    }
}

pub(super) fn shard_id(index: usize) -> String {
    format!("a-db{index}")
}

pub(super) async fn work_log(admin: &PgPool) -> Vec<i32> {
    sqlx::query_scalar("SELECT version FROM work_log ORDER BY version")
        .fetch_all(admin)
        .await
        .unwrap_or_default()
}

/// The statement another session is running in this database, if any.
pub(super) async fn running_query(admin: &PgPool) -> Option<String> {
    sqlx::query_scalar(
        "SELECT query FROM pg_stat_activity
         WHERE datname = current_database() AND state = 'active' AND pid <> pg_backend_pid()
           AND query LIKE '%pg_sleep%'
         LIMIT 1",
    )
    .fetch_optional(admin)
    .await
    .ok()
    .flatten()
}

pub(super) fn task_token(plan: &Plan, shard: usize) -> i64 {
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
