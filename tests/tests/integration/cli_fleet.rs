//! A fleet driven through the real CLI: etcd, one `fleetshift serve` replica and one
//! `fleetshift-agent run` process serving one PostgreSQL shard, with operators alice (operator
//! role) and bob (approver role).

use std::path::{Path, PathBuf};
use std::time::Duration;

use fleetshift_common::proto::v1::ListShardsRequest;
use fleetshift_common::proto::v1::fleet_service_client::FleetServiceClient;
use fleetshift_common::tls::identity::Role;
use fleetshift_testkit::etcd::EtcdServer;
use fleetshift_tests::binary;
use fleetshift_tests::fleet::{
    FleetGround, Process, TELEMETRY_LISTENING, agent_config_text, await_leader, channel_as,
    fleetshift_as_with, logged_port, logs, shard_tables,
};
use fleetshift_tests::wait::wait_until;
use serde_json::Value;

use super::support::{self, Database, assert_exit};

const ROLES: &str =
    "viewers = [\"alice\", \"bob\"]\noperators = [\"alice\"]\napprovers = [\"bob\"]";

/// The running fleet; everything stops when it is dropped.
pub struct CliFleet {
    // Dropped in this order: the processes before their database, store and files.
    pub agent: Process,
    pub replica: Process,
    pub database: Database,
    pub store: fleetshift_coordinator::store::EtcdStore,
    pub cli: Operators,
    /// The first shard's id.
    pub shard: String,
    /// Every shard's database URL, the first shard's first (`a-db0`, `a-db1`, …).
    pub shard_urls: Vec<String>,
    /// Where the replica's and the agent's telemetry endpoints listen (both log JSON).
    pub telemetry: Telemetry,
    pub etcd: EtcdServer,
    pub home: tempfile::TempDir,
}

impl CliFleet {
    /// Starts the fleet on a new database `name`, prepared with `schema`; `agent_sections` go
    /// into the agent's configuration before its shard.
    pub async fn start(
        name: &str,
        schema: &str,
        agent_sections: impl Fn(&Database) -> String,
    ) -> Self {
        Self::start_with(name, schema, agent_sections, Vec::new()).await
    }

    /// Like [`CliFleet::start`], with `environment` added to the inherited one of every
    /// process: the replica, the agent and each CLI run.
    pub async fn start_with(
        name: &str,
        schema: &str,
        agent_sections: impl Fn(&Database) -> String,
        environment: Vec<(String, String)>,
    ) -> Self {
        Self::start_shards(name, schema, 1, agent_sections, environment).await
    }

    /// Like [`CliFleet::start_with`], with `count` shards: databases `name`, `name_1`, …
    /// on one PostgreSQL cluster, each prepared with `schema`, all served by the one agent.
    pub async fn start_shards(
        name: &str,
        schema: &str,
        count: usize,
        agent_sections: impl Fn(&Database) -> String,
        environment: Vec<(String, String)>,
    ) -> Self {
        Self::start_configured(name, schema, count, agent_sections, "", environment).await
    }

    /// Like [`CliFleet::start_shards`], with `replica_sections` added to the replica's
    /// configuration (e.g. `[[webhooks]]`). Shards `agent_sections` add are waited for too
    /// (the agent announces all of its shards at once).
    pub async fn start_configured(
        name: &str,
        schema: &str,
        count: usize,
        agent_sections: impl Fn(&Database) -> String,
        replica_sections: &str,
        environment: Vec<(String, String)>,
    ) -> Self {
        let ground = FleetGround::start().await;
        for operator in ["alice", "bob"] {
            ground.issue(Role::Operator, operator);
        }
        ground.issue(Role::Agent, "a");
        let (port, coordinator_telemetry, replica) =
            ground.observed_replica("c1", ROLES, replica_sections, &environment);
        let FleetGround {
            etcd,
            store,
            home,
            pki,
        } = ground;
        assert!(
            await_leader(&store, Duration::from_secs(20)).await,
            "no leader\n{}",
            diagnose(home.path())
        );
        let database = support::database(name).await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(schema.to_owned()))
            .execute(&database.admin)
            .await
            .expect("schema");
        let mut shard_urls = vec![database.url.clone()];
        for index in 1..count {
            shard_urls.push(prepared(&database, &format!("{name}_{index}"), schema).await);
        }
        let config = home.path().join("agent.toml");
        let shards = format!(
            "{}{}",
            agent_sections(&database),
            shard_tables(home.path(), "a", &shard_urls)
        );
        let text = format!(
            "telemetry_listen = \"127.0.0.1:0\"\n{}",
            agent_config_text("a", &[port], &shards)
        );
        std::fs::write(&config, text).expect("agent config");
        let agent = spawn_agent(home.path(), &environment);
        let agent_telemetry = logged_port(&home.path().join("agent.log"), TELEMETRY_LISTENING);
        let address = format!("https://localhost:{port}");
        let client = FleetServiceClient::new(channel_as(&address, &pki, "operator-alice").await);
        // An agent reads every shard's facts before its first announcement: many tenants of a
        // database on a loaded machine take a while.
        let connected = wait_until(Duration::from_secs(120), || {
            let mut client = client.clone();
            async move {
                client
                    .list_shards(ListShardsRequest::default())
                    .await
                    .is_ok_and(|response| response.into_inner().shards.len() >= count)
            }
        })
        .await;
        assert!(
            connected,
            "the agent never announced\n{}",
            diagnose(home.path())
        );
        Self {
            store,
            database,
            cli: Operators {
                address,
                pki,
                environment,
            },
            shard: "a-db0".to_owned(),
            shard_urls,
            telemetry: Telemetry {
                coordinator: format!("127.0.0.1:{coordinator_telemetry}"),
                agent: format!("127.0.0.1:{agent_telemetry}"),
            },
            home,
            etcd,
            replica,
            agent,
        }
    }

    /// SIGKILLs the agent and starts it again on the same configuration; its first life's log
    /// is kept as `agent-killed.log`.
    pub fn restart_agent(&mut self) {
        self.agent.signal("KILL");
        assert!(
            self.agent.wait_for_exit(Duration::from_secs(10)).is_some(),
            "the agent outlived SIGKILL"
        );
        let home = self.home.path();
        std::fs::rename(home.join("agent.log"), home.join("agent-killed.log")).expect("log");
        self.agent = spawn_agent(home, &self.cli.environment);
        self.telemetry.agent = format!(
            "127.0.0.1:{}",
            logged_port(&home.join("agent.log"), TELEMETRY_LISTENING)
        );
    }

    /// Stops the agent (SIGTERM) and waits for it to exit; its log is kept as
    /// `agent-stopped.log`.
    pub fn stop_agent(&mut self) {
        self.agent.signal("TERM");
        assert!(
            self.agent.wait_for_exit(Duration::from_secs(30)).is_some(),
            "the agent outlived SIGTERM"
        );
        let home = self.home.path();
        std::fs::rename(home.join("agent.log"), home.join("agent-stopped.log")).expect("log");
    }

    /// Starts the stopped agent again, on its configuration as it is now.
    pub fn start_agent(&mut self) {
        let home = self.home.path();
        self.agent = spawn_agent(home, &self.cli.environment);
        self.telemetry.agent = format!(
            "127.0.0.1:{}",
            logged_port(&home.join("agent.log"), TELEMETRY_LISTENING)
        );
    }

    /// A new database prepared with `schema` on the fleet's cluster, added to the agent's
    /// configuration as its next shard (`a-db<N>`), served from the agent's next start; its id.
    pub async fn add_shard(&mut self, schema: &str) -> String {
        let index = self.shard_urls.len();
        let url = prepared(&self.database, &format!("added_{index}"), schema).await;
        let home = self.home.path();
        let secret = home.join(format!("a-{index}.url"));
        std::fs::write(&secret, &url).expect("url file");
        let id = format!("a-db{index}");
        let table = format!(
            "[[shards]]\nid = \"{id}\"\nlabels = {{ env = \"test\" }}\ndatabase_url_file = \"{}\"\n",
            secret.display()
        );
        let config = home.join("agent.toml");
        let mut text = std::fs::read_to_string(&config).expect("agent config");
        text.push_str(&table);
        std::fs::write(&config, text).expect("agent config");
        self.shard_urls.push(url);
        id
    }

    /// The replica's and the agent's logs, for a failed assertion.
    pub fn diagnose(&self) -> String {
        diagnose(self.home.path())
    }
}

/// The agent on `home`'s `agent.toml`, logging JSON to `agent.log`.
/// A new database `name` on the fleet's cluster, prepared with `schema`; its URL.
async fn prepared(database: &Database, name: &str, schema: &str) -> String {
    let url = database
        .cluster
        .create_database(name)
        .await
        .expect("database");
    let admin = database.cluster.admin_pool(name).await.expect("admin pool");
    sqlx::raw_sql(sqlx::AssertSqlSafe(schema.to_owned()))
        .execute(&admin)
        .await
        .expect("schema");
    admin.close().await;
    url
}

fn spawn_agent(home: &Path, environment: &[(String, String)]) -> Process {
    let config = home.join("agent.toml");
    Process::spawn_with(
        &binary::agent(),
        &[
            "--log-format",
            "json",
            "--config",
            config.to_str().expect("path"),
            "run",
        ],
        &home.join("agent.log"),
        environment,
    )
}

fn diagnose(home: &Path) -> String {
    logs(home, &["c1.log", "agent.log"])
}

/// `host:port` of each telemetry endpoint.
#[derive(Debug, Clone)]
pub struct Telemetry {
    pub coordinator: String,
    pub agent: String,
}

/// The CLI as operator alice (operator role) and bob (approver role).
pub struct Operators {
    address: String,
    pki: PathBuf,
    environment: Vec<(String, String)>,
}

impl Operators {
    pub async fn alice(&self, arguments: &[&str]) -> std::process::Output {
        fleetshift_as_with(
            &self.address,
            &self.pki,
            "operator-alice",
            arguments,
            &self.environment,
        )
        .await
    }

    pub async fn bob(&self, arguments: &[&str]) -> std::process::Output {
        fleetshift_as_with(
            &self.address,
            &self.pki,
            "operator-bob",
            arguments,
            &self.environment,
        )
        .await
    }

    /// The coordinator's address and the certificates' directory, for a CLI run elsewhere.
    pub fn endpoint(&self) -> (String, PathBuf) {
        (self.address.clone(), self.pki.clone())
    }

    /// Bob approves `plan_id`, then alice applies it and follows it to the end.
    pub async fn approved_and_applied(&self, plan_id: &str) -> std::process::Output {
        assert_exit(
            &self.bob(&["approve", plan_id, "--output", "json"]).await,
            0,
        );
        self.alice(&["apply", plan_id, "--watch", "--output", "json"])
            .await
    }

    /// Alice plans `arguments` (after `plan`), bob approves and alice applies it to its end;
    /// the plan's id and how `apply --watch` ended.
    pub async fn planned_and_applied(&self, arguments: &[&str]) -> (String, std::process::Output) {
        let plan_id = self.planned(arguments).await;
        let applied = self.approved_and_applied(&plan_id).await;
        (plan_id, applied)
    }

    /// Alice plans `arguments` (after `plan`), bob approves and alice starts it without
    /// watching; the plan's id.
    pub async fn planned_and_started(&self, arguments: &[&str]) -> String {
        let plan_id = self.planned(arguments).await;
        assert_exit(&self.bob(&["approve", &plan_id]).await, 0);
        assert_exit(&self.alice(&["apply", &plan_id]).await, 0);
        plan_id
    }

    /// Alice plans `arguments` (after `plan`); the plan's id.
    async fn planned(&self, arguments: &[&str]) -> String {
        let planned = self
            .alice(&[&["plan"], arguments, &["--output", "json"]].concat())
            .await;
        assert_exit(&planned, 0);
        summary(&planned)["plan"].as_str().expect("id").to_owned()
    }
}

/// The last line of what the command printed, as JSON (the plan's summary).
pub fn summary(output: &std::process::Output) -> Value {
    let text = String::from_utf8_lossy(&output.stdout);
    let last = text.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|error| {
        panic!(
            "not JSON ({error}): {}",
            fleetshift_tests::binary::printed(output)
        )
    })
}
