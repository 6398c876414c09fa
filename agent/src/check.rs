//! `fleetshift-agent check`: connect to every shard of the host and report its ledger.

use fleetshift_common::fence::FenceToken;
use std::process::ExitCode;

use fleetshift_common::engine::{
    Connected, PostgresShard, ShardEngine, ShardScope, Tenant, Timeouts, catalog, server,
};
use fleetshift_common::error::ExecError;
use fleetshift_common::ledger::{LedgerEntry, RevisionStatus};
use fleetshift_common::proto::v1::TableFacts;
use serde::Serialize;

use crate::cli::Output;
use crate::config::{AgentConfig, ShardConfig};

/// Exit code when a shard cannot be reached.
const UNREACHABLE: u8 = 6;

/// What the agent sees of one of its shards.
#[derive(Debug, Serialize)]
pub struct ShardReport {
    pub id: String,
    pub target: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub reachable: bool,
    pub applied: usize,
    pub latest_applied: Option<String>,
    pub unfinished: Vec<String>,
    pub fence_token: Option<FenceToken>,
    pub error: Option<String>,
    /// The shard's tables with sizes and dependents (PostgreSQL), for the Hello.
    #[serde(serialize_with = "tables_as_json")]
    pub tables: Vec<TableFacts>,
    /// The cluster's system identifier (PostgreSQL), empty when unknown.
    pub system_identifier: String,
    /// The server's version, empty when unreachable.
    pub server_version: String,
    /// Sessions connected to the database by `application_name` (PostgreSQL); `None` when
    /// they could not be read.
    pub applications: Option<Vec<(String, i64)>>,
}

fn tables_as_json<S: serde::Serializer>(
    tables: &[TableFacts],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let tables: Vec<serde_json::Value> = tables.iter().map(catalog::facts_json).collect();
    serde::Serialize::serialize(&tables, serializer)
}

pub async fn run(config: &AgentConfig, output: Output) -> ExitCode {
    let mut reports = Vec::with_capacity(config.shards.len());
    for shard in &config.shards {
        reports.push(inspect(shard).await);
    }
    match output {
        Output::Json => match serde_json::to_string_pretty(&serde_json::json!({
            "agent_id": config.agent_id,
            "shards": reports,
        })) {
            Ok(text) => println!("{text}"),
            Err(error) => eprintln!("error: cannot encode the report: {error}"),
        },
        Output::Human => {
            println!("agent {}: {} shard(s)", config.agent_id, reports.len());
            for report in &reports {
                match &report.error {
                    Some(error) => println!("  {:<20} UNREACHABLE  {error}", report.id),
                    None => println!(
                        "  {:<20} ok  {} applied, latest {}, fence {}{}",
                        report.id,
                        report.applied,
                        report.latest_applied.as_deref().unwrap_or("-"),
                        report
                            .fence_token
                            .map_or_else(|| "-".to_owned(), |token| token.to_string()),
                        if report.unfinished.is_empty() {
                            String::new()
                        } else {
                            format!(", UNFINISHED: {}", report.unfinished.join(", "))
                        }
                    ),
                }
            }
        }
    }
    if reports.iter().all(|report| report.reachable) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(UNREACHABLE)
    }
}

/// Connects to the shard and reads its ledger.
pub async fn inspect(shard: &ShardConfig) -> ShardReport {
    let mut report = ShardReport::blank(shard);
    let result = match shard.connect(Timeouts::default()).await {
        Ok(Connected::Postgres(engine)) => {
            let ledger = engine.read_ledger().await;
            let summarized =
                summarize(&mut report, ledger, async || engine.current_fence().await).await;
            DatabaseFacts::read(&engine, shard)
                .await
                .fill(&mut report, &shard.scope);
            summarized
        }
        Ok(Connected::Sqlite(engine)) => {
            let ledger = engine.read_ledger().await;
            let summarized =
                summarize(&mut report, ledger, async || engine.current_fence().await).await;
            if let Ok(version) = sqlx::query_scalar("SELECT sqlite_version()")
                .fetch_one(engine.pool())
                .await
            {
                report.server_version = version;
            }
            summarized
        }
        Err(error) => Err(error),
    };
    report.failed(shard, result);
    report
}

/// Reads the tenant `shard` through `tenant` (its schema seen from an engine of the whole
/// database), with what the database's tenants share (`shared`).
pub async fn inspect_tenant(
    tenant: &Tenant<'_>,
    shard: &ShardConfig,
    shared: &DatabaseFacts,
) -> ShardReport {
    let mut report = ShardReport::blank(shard);
    let ledger = tenant.read_ledger().await;
    let result = summarize(&mut report, ledger, async || tenant.current_fence().await).await;
    shared.fill(&mut report, &shard.scope);
    report.failed(shard, result);
    report
}

/// A shard that could not be read: `error` says why.
pub fn unreachable(shard: &ShardConfig, error: &ExecError) -> ShardReport {
    let mut report = ShardReport::blank(shard);
    report.error = Some(shard.database_url.scrub(&error.to_string()));
    report
}

impl ShardReport {
    /// Nothing read yet of `shard`.
    fn blank(shard: &ShardConfig) -> Self {
        Self {
            id: shard.id.clone(),
            target: shard.database_url.masked(),
            labels: shard.labels.clone(),
            reachable: false,
            applied: 0,
            latest_applied: None,
            unfinished: Vec::new(),
            fence_token: None,
            error: None,
            tables: Vec::new(),
            system_identifier: String::new(),
            server_version: String::new(),
            applications: None,
        }
    }

    /// Records why `result` failed, if it did, without the URL's secrets.
    fn failed(&mut self, shard: &ShardConfig, result: Result<(), ExecError>) {
        if let Err(error) = result {
            self.error = Some(shard.database_url.scrub(&error.to_string()));
        }
    }

    /// Records what `ledger` says: the versions applied, the newest, the unfinished.
    fn record(&mut self, ledger: &[LedgerEntry], fence: Option<FenceToken>) {
        let applied = || {
            ledger
                .iter()
                .filter(|entry| entry.status == RevisionStatus::Applied)
        };
        self.applied = applied().count();
        self.latest_applied = applied()
            .max_by(|left, right| left.finished_at.cmp(&right.finished_at))
            .map(|entry| entry.version.clone());
        self.unfinished = ledger
            .iter()
            .filter(|entry| entry.status == RevisionStatus::Started)
            .map(|entry| entry.version.clone())
            .collect();
        self.fence_token = fence;
    }
}

/// Records a reachable shard's `ledger` as read, and its fence (read by `fence`) when it has
/// rows.
async fn summarize(
    report: &mut ShardReport,
    ledger: Result<Vec<LedgerEntry>, ExecError>,
    fence: impl AsyncFnOnce() -> Result<FenceToken, ExecError>,
) -> Result<(), ExecError> {
    report.reachable = true;
    let ledger = ledger?;
    let fence = if ledger.is_empty() {
        None
    } else {
        Some(fence().await?)
    };
    report.record(&ledger, fence);
    Ok(())
}

/// What every shard of one PostgreSQL database shares: its tables (of every schema) and its
/// server, read once for all of a database's tenants.
#[derive(Debug, Default)]
pub struct DatabaseFacts {
    tables: Vec<TableFacts>,
    /// The cluster's system identifier and the server's version, when read.
    identity: Option<(String, String)>,
    /// Sessions connected to the database by `application_name`, when read.
    applications: Option<Vec<(String, i64)>>,
}

impl DatabaseFacts {
    /// Reads them through `engine`; what cannot be read is logged against `shard` and left
    /// out.
    pub async fn read(engine: &PostgresShard, shard: &ShardConfig) -> Self {
        let tables = catalog::table_facts(engine.pool())
            .await
            .inspect_err(|error| {
                tracing::warn!(shard = %shard.id, error = %shard.database_url.scrub(&error.to_string()), "cannot read the shard's catalog; plans will not weigh its tables");
            })
            .unwrap_or_default();
        let identity = server::identity(engine.pool())
            .await
            .inspect_err(|error| {
                tracing::warn!(shard = %shard.id, error = %shard.database_url.scrub(&error.to_string()), "cannot read the shard's server identity; the per-host cap counts it by address");
            })
            .ok();
        let applications = server::applications(engine.pool())
            .await
            .inspect_err(|error| {
                tracing::warn!(shard = %shard.id, error = %shard.database_url.scrub(&error.to_string()), "cannot read the sessions connected to the shard's database; phase gates waiting on an application will wait");
            })
            .ok();
        Self {
            tables,
            identity,
            applications,
        }
    }

    /// Gives `report` the tables of `scope` and the server's identity.
    fn fill(&self, report: &mut ShardReport, scope: &ShardScope) {
        report.tables = in_scope(&self.tables, scope);
        report.applications.clone_from(&self.applications);
        if let Some((identifier, version)) = &self.identity {
            report.system_identifier.clone_from(identifier);
            report.server_version.clone_from(version);
        }
    }
}

/// The tables of the shard's scope: all of a database's; a tenant's own, named as its SQL
/// names them (without the schema).
fn in_scope(tables: &[TableFacts], scope: &ShardScope) -> Vec<TableFacts> {
    let Some(schema) = scope.schema_name() else {
        return tables.to_vec();
    };
    let prefix = format!("{schema}.");
    tables
        .iter()
        .filter_map(|facts| {
            let table = facts.table.strip_prefix(&prefix)?.to_owned();
            Some(TableFacts {
                table,
                ..facts.clone()
            })
        })
        .collect()
}
