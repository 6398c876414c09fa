//! `fleetshift demo`: the product end to end on its embedded default, in one process: a
//! coordinator with the in-memory store, N agents each with one SQLite shard, talking gRPC
//! over mutual TLS on loopback with freshly generated certificates. The bundled migration set
//! is planned, approved and rolled out canary first, then the rest, with live progress and a
//! per-shard summary; finally a stale holder of one shard is shown being fenced out.
//! `--postgres` puts the shards in throwaway local PostgreSQL clusters instead, `--etcd` keeps
//! the fleet's state in a real etcd.

use fleetshift_common::fence::FenceToken;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use fleetshift_agent::config::{
    AgentConfig, CoordinatorEndpoint, CoordinatorLink, DEFAULT_FACTS_REFRESH, DEFAULT_SCHEMA_CHECK,
    ShardConfig,
};
use fleetshift_agent::session::SessionTelemetry;
use fleetshift_common::engine::{self, Connected, ShardEngine, Timeouts};
use fleetshift_common::error::ExecError;
use fleetshift_common::executor::{Executor, ExecutorSettings, Identity, Request};
use fleetshift_common::lease::SessionIntervals;
use fleetshift_common::proto::v1::{
    ApprovePlanRequest, CreatePlanRequest, ListShardsRequest, Plan, RiskLevel, ShardState,
    WavePolicy,
};
use fleetshift_common::rollout_names::risk_level_name;
use fleetshift_common::secrets::DatabaseUrl;
use fleetshift_common::shipped;
use fleetshift_common::source::MigrationSet;
use fleetshift_common::tls::identity::{Role, SpiffeId};
use fleetshift_common::tls::mtls::TlsFiles;
use fleetshift_common::tls::pki::{self, LeafRequest, Validity};
use fleetshift_coordinator::authz::{OperatorRole, Roles};
use fleetshift_coordinator::config::{CoordinatorConfig, StoreChoice, WebConsole};
use fleetshift_coordinator::peer_limits::PeerLimits;
use fleetshift_coordinator::rollout::waves;
use fleetshift_coordinator::serve::run_replica;
use fleetshift_coordinator::store::{EtcdStore, MemoryStore};
use fleetshift_testkit::postgres::LocalPostgres;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::cli::{Output, progress};
use crate::exit;

mod console;

const TRUST_DOMAIN: &str = "fleetshift.demo";
const OPERATOR: &str = "demo-operator";

/// The embedded migration set (sqlx layout), written to the demo's directory.
const MIGRATIONS: [(&str, &str); 8] = [
    (
        "1_create_accounts.up.sql",
        include_str!("demo/migrations/1_create_accounts.up.sql"),
    ),
    (
        "1_create_accounts.down.sql",
        include_str!("demo/migrations/1_create_accounts.down.sql"),
    ),
    (
        "2_add_account_plan.up.sql",
        include_str!("demo/migrations/2_add_account_plan.up.sql"),
    ),
    (
        "2_add_account_plan.down.sql",
        include_str!("demo/migrations/2_add_account_plan.down.sql"),
    ),
    (
        "3_create_invoices.up.sql",
        include_str!("demo/migrations/3_create_invoices.up.sql"),
    ),
    (
        "3_create_invoices.down.sql",
        include_str!("demo/migrations/3_create_invoices.down.sql"),
    ),
    (
        "4_seed_operator_account.up.sql",
        include_str!("demo/migrations/4_seed_operator_account.up.sql"),
    ),
    (
        "4_seed_operator_account.down.sql",
        include_str!("demo/migrations/4_seed_operator_account.down.sql"),
    ),
];

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Agents in the demo fleet, each with one SQLite shard.
    #[arg(long, visible_alias = "shards", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=500))]
    agents: u16,
    /// Shards in throwaway local PostgreSQL clusters (one per 8 agents, one database per
    /// shard, deleted at exit) instead of SQLite files; needs the PostgreSQL server binaries.
    #[arg(long)]
    postgres: bool,
    /// Keep the fleet's state in this etcd (comma-separated endpoints) instead of in memory.
    #[arg(long, value_name = "URL", value_delimiter = ',')]
    etcd: Vec<String>,
    /// Keep the fleet up after the rollout, its web console too, until Ctrl-C; then keep the
    /// working directory (shards, certificates, migrations) and print where it is.
    #[arg(long)]
    keep: bool,
    /// Human-readable progress, or JSON events and a JSON summary on stdout.
    #[arg(long, value_enum, default_value = "human")]
    output: Output,
}

pub async fn run(arguments: DemoArgs) -> ExitCode {
    match demo(&arguments).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(exit::FAILED)
        }
    }
}

/// Certificates for the coordinator, the operator and every agent.
fn issue_certificates(directory: &Path, agents: u16) -> anyhow::Result<()> {
    let validity = || Validity::days_from_now(1);
    pki::init(directory, TRUST_DOMAIN, validity(), false)?;
    let mut leaves = vec![
        // Browsers check the console's address against the certificate.
        (
            Role::Coordinator,
            "demo".to_owned(),
            vec!["localhost".to_owned()],
            vec![std::net::IpAddr::from([127, 0, 0, 1])],
        ),
        (Role::Operator, OPERATOR.to_owned(), Vec::new(), Vec::new()),
    ];
    for number in 1..=agents {
        leaves.push((Role::Agent, agent_name(number), Vec::new(), Vec::new()));
    }
    for (role, name, dns_names, ip_addresses) in leaves {
        let request = LeafRequest {
            identity: SpiffeId::new(TRUST_DOMAIN, role, &name)?,
            dns_names,
            ip_addresses,
            validity: validity(),
        };
        pki::issue(directory, &request, false)?;
    }
    Ok(())
}

fn agent_name(number: u16) -> String {
    format!("agent-{number:03}")
}

fn shard_id(number: u16) -> String {
    format!("shard-{number:03}")
}

/// Agents per local PostgreSQL cluster with `--postgres`.
const AGENTS_PER_CLUSTER: u16 = 8;

/// Where the demo's shards live: SQLite files in its directory, or databases in throwaway
/// PostgreSQL clusters (stopped and deleted when this is dropped).
struct Shards {
    /// Agent `n`'s shard at index `n - 1`.
    urls: Vec<DatabaseUrl>,
    clusters: Vec<LocalPostgres>,
}

impl Shards {
    async fn create(arguments: &DemoArgs, root: &Path) -> anyhow::Result<Self> {
        let mut shards = Self {
            urls: Vec::new(),
            clusters: Vec::new(),
        };
        if !arguments.postgres {
            shards.urls = (1..=arguments.agents)
                .map(|number| {
                    let file = root.join(format!("{}.db", shard_id(number)));
                    DatabaseUrl::new(format!("sqlite:{}?mode=rwc", file.display()))
                })
                .collect();
            return Ok(shards);
        }
        let numbers: Vec<u16> = (1..=arguments.agents).collect();
        for group in numbers.chunks(usize::from(AGENTS_PER_CLUSTER)) {
            let cluster = tokio::task::spawn_blocking(LocalPostgres::start)
                .await?
                .context("starting a local PostgreSQL cluster (--postgres)")?;
            for number in group {
                let name = shard_id(*number).replace('-', "_");
                shards
                    .urls
                    .push(DatabaseUrl::new(cluster.create_database(&name).await?));
            }
            shards.clusters.push(cluster);
        }
        Ok(shards)
    }

    fn kind(&self) -> String {
        if self.clusters.is_empty() {
            "SQLite shard".to_owned()
        } else {
            format!(
                "PostgreSQL database on {} local cluster(s)",
                self.clusters.len()
            )
        }
    }

    /// The URL of the shard named `shard`.
    fn url_of(&self, shard: &str) -> anyhow::Result<DatabaseUrl> {
        shard
            .strip_prefix("shard-")
            .and_then(|number| number.parse::<usize>().ok())
            .and_then(|number| self.urls.get(number.checked_sub(1)?))
            .cloned()
            .with_context(|| format!("{shard} is not one of the demo's shards"))
    }
}

fn tls_files(directory: &Path, leaf: &str) -> TlsFiles {
    TlsFiles {
        certificate: directory.join(format!("{leaf}.pem")),
        private_key: directory.join(format!("{leaf}.key")),
        trust_bundle: directory.join(pki::CA_CERTIFICATE),
    }
}

async fn demo(arguments: &DemoArgs) -> anyhow::Result<ExitCode> {
    let workspace = tempfile::Builder::new()
        .prefix("fleetshift-demo-")
        .tempdir()?;
    let root = workspace.path();
    let migrations = root.join("migrations");
    std::fs::create_dir(&migrations)?;
    for (name, content) in MIGRATIONS {
        std::fs::write(migrations.join(name), content)?;
    }
    let set = MigrationSet::load(&migrations, None)?;
    let pki_dir = root.join("pki");
    issue_certificates(&pki_dir, arguments.agents).context("generating certificates")?;
    let human = arguments.output == Output::Human;
    let shards = Shards::create(arguments, root).await?;
    if human {
        let store = if arguments.etcd.is_empty() {
            "in-memory store".to_owned()
        } else {
            format!("etcd at {}", arguments.etcd.join(","))
        };
        println!(
            "fleetshift demo: 1 coordinator ({store}), {} agents with one {} each, mutual TLS on loopback",
            arguments.agents,
            shards.kind()
        );
        println!(
            "migration set: {} revisions ({} format, digest {})",
            set.revisions.len(),
            set.format,
            &set.digest[..16]
        );
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = format!("https://127.0.0.1:{}", listener.local_addr()?.port());
    let web = console::free_loopback_address()?;
    let console = format!("https://{web}");
    let config = coordinator_config(arguments, listener.local_addr()?, web, &pki_dir);
    if human {
        println!("web console: {console}");
    }
    let stop = CancellationToken::new();
    let shutdown = stop.clone().cancelled_owned();
    let coordinator = if arguments.etcd.is_empty() {
        let store = Arc::new(MemoryStore::new());
        tokio::spawn(async move { run_replica(store, &config, listener, shutdown).await })
    } else {
        let store = EtcdStore::connect(&arguments.etcd)
            .await
            .context("connecting to etcd")?;
        let store = Arc::new(store);
        tokio::spawn(async move { run_replica(store, &config, listener, shutdown).await })
    };
    let mut agents = spawn_agents(arguments, &address, &pki_dir, &shards, &stop)?;

    let outcome = roll_out(arguments, &address, &pki_dir, &set, &shards).await;
    if arguments.keep && outcome.is_ok() {
        console::stay_up(&console, &pki_dir, OPERATOR).await;
    }
    stop.cancel();
    while agents.join_next().await.is_some() {}
    coordinator.await??;
    let code = outcome?;
    drop(shards);
    if arguments.keep {
        let kept = workspace.keep();
        if human {
            println!("working directory kept in {}", kept.display());
            if !arguments.postgres {
                println!(
                    "try: fleetshift migrate status --database-url sqlite:{}/shard-001.db --dir {}/migrations",
                    kept.display(),
                    kept.display()
                );
            }
        }
    }
    Ok(code)
}

/// One agent per shard, in process, each holding its session until `stop`.
fn spawn_agents(
    arguments: &DemoArgs,
    address: &str,
    pki_dir: &Path,
    shards: &Shards,
    stop: &CancellationToken,
) -> anyhow::Result<tokio::task::JoinSet<()>> {
    let mut agents = tokio::task::JoinSet::new();
    for number in 1..=arguments.agents {
        let name = agent_name(number);
        let link = CoordinatorLink {
            endpoints: vec![CoordinatorEndpoint {
                address: address.to_owned(),
                server_name: "localhost".to_owned(),
            }],
            tls: tls_files(pki_dir, &format!("agent-{name}")),
            facts_refresh: DEFAULT_FACTS_REFRESH,
            schema_check: DEFAULT_SCHEMA_CHECK,
        };
        let shard = ShardConfig {
            id: shard_id(number),
            labels: [("env".to_owned(), "demo".to_owned())].into(),
            lifecycle: fleetshift_common::proto::v1::ShardLifecycle::Active,
            database_url: shards.url_of(&shard_id(number))?,
            throttle_replicas: Vec::new(),
            scope: fleetshift_common::engine::ShardScope::Database,
        };
        let config = Arc::new(AgentConfig {
            agent_id: name,
            coordinator: Some(link.clone()),
            shards: vec![shard],
            tenant_databases: Vec::new(),
            backups: None,
            rehearsals: Default::default(),
            telemetry_listen: None,
            database_outage_wait: fleetshift_agent::outage::DEFAULT_OUTAGE_WAIT,
        });
        let stop = stop.clone();
        // The demo serves no telemetry: the metrics go unread.
        let telemetry = SessionTelemetry::new(&mut Registry::default());
        agents.spawn(async move {
            fleetshift_agent::session::run(config, &link, &telemetry, stop).await
        });
    }
    Ok(agents)
}

/// The demo's coordinator: every role granted to the demo's operator, heartbeats every 500ms.
fn coordinator_config(
    arguments: &DemoArgs,
    listen: std::net::SocketAddr,
    web: std::net::SocketAddr,
    pki_dir: &Path,
) -> CoordinatorConfig {
    let mut roles = Roles::default();
    for role in [
        OperatorRole::Viewer,
        OperatorRole::Operator,
        OperatorRole::Approver,
    ] {
        roles.grant(OPERATOR, role);
    }
    CoordinatorConfig {
        coordinator_id: "demo".to_owned(),
        listen,
        telemetry_listen: None,
        health_listen: None,
        web: Some(WebConsole {
            listen: web,
            advertise: None,
        }),
        trust_domain: TRUST_DOMAIN.to_owned(),
        intervals: SessionIntervals::from_heartbeat(Duration::from_millis(500)),
        tls: tls_files(pki_dir, "coordinator-demo"),
        store: if arguments.etcd.is_empty() {
            StoreChoice::Memory
        } else {
            StoreChoice::Etcd(arguments.etcd.clone())
        },
        roles,
        webhooks: Vec::new(),
        limits: PeerLimits::default(),
    }
}

async fn operator_client(address: &str, pki_dir: &Path) -> anyhow::Result<progress::FleetClient> {
    let files = tls_files(pki_dir, &format!("operator-{OPERATOR}"));
    let channel = fleetshift_common::tls::channel::connect(address, "localhost", &files).await?;
    Ok(progress::fleet_client(channel))
}

async fn roll_out(
    arguments: &DemoArgs,
    address: &str,
    pki_dir: &Path,
    set: &MigrationSet,
    shards: &Shards,
) -> anyhow::Result<ExitCode> {
    let human = arguments.output == Output::Human;
    let mut client = operator_client(address, pki_dir).await?;
    let wanted = usize::from(arguments.agents);
    wait_for_agents(&mut client, wanted).await?;
    if human {
        println!("{wanted} agents connected\n");
    }
    let request = CreatePlanRequest {
        migration_set: Some(shipped::pack(set)?),
        target_version: String::new(),
        selector: [("env".to_owned(), "demo".to_owned())].into(),
        waves: Some(WavePolicy {
            canary_shards: 1,
            percentages: vec![100],
            max_concurrency_per_wave: 4,
            max_concurrency_per_host: 1,
            failure_threshold: 1,
            max_shard_retries: 0,
        }),
        limits: None,
        duties: None,
        allow_drift_shards: String::new(),
        schedule: None,
        updates: None,
        gates: Vec::new(),
    };
    let plan = client.create_plan(request).await?.into_inner();
    if human {
        print_plan(&plan);
    }
    client
        .approve_plan(ApprovePlanRequest {
            plan_id: plan.plan_id.clone(),
            comment: "demo".to_owned(),
            capacity: "dba".to_owned(),
        })
        .await?;
    if human {
        println!("approved by {OPERATOR}; starting\n");
    }
    let following = progress::Following {
        replicas: None,
        output: arguments.output,
        statements: false,
        start: true,
        since: 0,
    };
    let ending = progress::follow(client.clone(), &plan.plan_id, following).await?;
    show_fencing(&ending.plan, set, shards, human).await?;
    Ok(ending.exit_code())
}

/// Waits until `wanted` agents announce their shards (at most 30 s).
async fn wait_for_agents(client: &mut progress::FleetClient, wanted: usize) -> anyhow::Result<()> {
    let connected = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let listed = client.list_shards(ListShardsRequest::default()).await;
            if listed.is_ok_and(|response| response.into_inner().shards.len() == wanted) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    if connected.is_err() {
        bail!("the demo's agents did not all connect within 30 s");
    }
    Ok(())
}

/// The plan's waves and risk, as the demo tells them.
fn print_plan(plan: &Plan) {
    let canary = plan.waves.first().map_or(0, |wave| wave.shards.len());
    println!(
        "planned {}: canary wave of {canary} shard, then {} more",
        plan.plan_id,
        waves::shard_count(plan) - canary
    );
    if let Some(risk) = &plan.risk {
        let level = RiskLevel::try_from(risk.level).unwrap_or(RiskLevel::Unspecified);
        let reasons: Vec<&str> = risk
            .factors
            .iter()
            .filter(|factor| factor.points > 0)
            .map(|factor| factor.explanation.as_str())
            .collect();
        println!(
            "risk {} ({}/100): {}; lint: {} finding(s) (`fleetshift lint` lists them)",
            risk_level_name(level),
            risk.score,
            if reasons.is_empty() {
                "nothing notable".to_owned()
            } else {
                reasons.join("; ")
            },
            plan.findings.len()
        );
    }
}

/// Hands the first shard that succeeded to a newer claim and shows its previous holder
/// refused by the shard's fence.
async fn show_fencing(
    plan: &Plan,
    set: &MigrationSet,
    shards: &Shards,
    human: bool,
) -> anyhow::Result<()> {
    let first =
        waves::planned_tasks(plan).find(|task| task.state == i32::from(ShardState::Succeeded));
    if let Some(task) = first {
        let url = shards.url_of(&task.shard_id)?;
        // As agents name shards: by id and server, never by URL.
        let name = format!("{} ({})", task.shard_id, url.server());
        let refusal = match engine::connect_named(name, &url, Timeouts::default()).await? {
            Connected::Postgres(shard) => {
                fence_out_stale_agent(shard.as_ref(), set, FenceToken::from_raw(task.fence_token))
                    .await?
            }
            Connected::Sqlite(shard) => {
                fence_out_stale_agent(&shard, set, FenceToken::from_raw(task.fence_token)).await?
            }
        };
        if human {
            println!(
                "\n{} is handed to a newer claim; its previous holder ({}, token {}) then tries to revert a revision:",
                task.shard_id, task.agent_id, task.fence_token
            );
            println!("  refused: {refusal}");
        } else {
            let fencing = serde_json::json!({
                "stale_holder": { "shard": task.shard_id, "token": task.fence_token, "refusal": refusal }
            });
            println!("{fencing}");
        }
    }
    Ok(())
}

fn identity(agent: &str, token: FenceToken) -> Identity {
    Identity {
        agent_id: agent.to_owned(),
        plan_id: Some("demo-fencing".to_owned()),
        fence_token: Some(token),
    }
}

/// Hands the shard to a newer claim, then lets the stale holder try; returns its refusal.
async fn fence_out_stale_agent<E: ShardEngine>(
    shard: &E,
    set: &MigrationSet,
    token: FenceToken,
) -> anyhow::Result<String> {
    // The next claim of the shard: the store issues it a higher token.
    let newer = FenceToken::from_raw(token.get() + 1);
    Executor::new(
        shard,
        identity("newer-holder", newer),
        ExecutorSettings::default(),
    )
    .up(set, &Request::default())
    .await?;
    let stale = Executor::new(
        shard,
        identity("stale-holder", token),
        ExecutorSettings::default(),
    );
    match stale.down(set, &Request::default()).await {
        Err(error @ ExecError::FencedOut { .. }) => Ok(error.to_string()),
        Err(other) => bail!("the stale holder failed for the wrong reason: {other}"),
        Ok(_) => bail!("the stale holder was not fenced out: the fence is broken"),
    }
}
