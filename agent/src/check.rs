//! `fleetshift-agent check`: connect to every shard of the host and report its ledger.

use fleetshift_common::fence::FenceToken;
use std::process::ExitCode;

use fleetshift_common::engine::{Connected, ShardEngine, ShardScope, Timeouts, catalog, server};
use fleetshift_common::error::ExecError;
use fleetshift_common::ledger::RevisionStatus;
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
    let mut report = ShardReport {
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
    };
    let result = match shard.connect(Timeouts::default()).await {
        Ok(Connected::Postgres(engine)) => {
            let summarized = summarize(engine.as_ref(), &mut report).await;
            match catalog::table_facts(engine.pool()).await {
                Ok(tables) => report.tables = in_scope(tables, &shard.scope),
                Err(error) => {
                    tracing::warn!(shard = %shard.id, error = %shard.database_url.scrub(&error.to_string()), "cannot read the shard's catalog; plans will not weigh its tables")
                }
            }
            match server::identity(engine.pool()).await {
                Ok((identifier, version)) => {
                    report.system_identifier = identifier;
                    report.server_version = version;
                }
                Err(error) => {
                    tracing::warn!(shard = %shard.id, error = %shard.database_url.scrub(&error.to_string()), "cannot read the shard's server identity; the per-host cap counts it by address")
                }
            }
            summarized
        }
        Ok(Connected::Sqlite(engine)) => {
            let summarized = summarize(&engine, &mut report).await;
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
    if let Err(error) = result {
        report.error = Some(shard.database_url.scrub(&error.to_string()));
    }
    report
}

async fn summarize<E: ShardEngine>(engine: &E, report: &mut ShardReport) -> Result<(), ExecError> {
    report.reachable = true;
    let ledger = engine.read_ledger().await?;
    let applied: Vec<&str> = ledger
        .iter()
        .filter(|entry| entry.status == RevisionStatus::Applied)
        .map(|entry| entry.version.as_str())
        .collect();
    report.applied = applied.len();
    report.latest_applied = ledger
        .iter()
        .filter(|entry| entry.status == RevisionStatus::Applied)
        .max_by(|left, right| left.finished_at.cmp(&right.finished_at))
        .map(|entry| entry.version.clone());
    report.unfinished = ledger
        .iter()
        .filter(|entry| entry.status == RevisionStatus::Started)
        .map(|entry| entry.version.clone())
        .collect();
    if !ledger.is_empty() {
        report.fence_token = Some(engine.current_fence().await?);
    }
    Ok(())
}

/// The tables of the shard's scope: all of a database's; a tenant's own, named as its SQL
/// names them (without the schema).
fn in_scope(tables: Vec<TableFacts>, scope: &ShardScope) -> Vec<TableFacts> {
    let Some(schema) = scope.schema_name() else {
        return tables;
    };
    let prefix = format!("{schema}.");
    tables
        .into_iter()
        .filter_map(|facts| {
            let table = facts.table.strip_prefix(&prefix)?.to_owned();
            Some(TableFacts { table, ..facts })
        })
        .collect()
}
