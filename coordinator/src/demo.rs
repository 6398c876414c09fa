//! `fleetshift demo`: the engine end to end on an embedded default — a fleet of SQLite
//! shards in a temporary directory and an embedded migration set. Every shard is migrated
//! under the fenced protocol; then one shard is handed to a newer claim and the old,
//! stale holder is shown being fenced out without changing anything.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use fleetshift_common::engine::{SqliteShard, Timeouts};
use fleetshift_common::error::ExecError;
use fleetshift_common::executor::{Executor, ExecutorSettings, Identity, Request};
use fleetshift_common::secrets::DatabaseUrl;
use fleetshift_common::source::MigrationSet;
use serde::Serialize;

use crate::cli::Output;
use crate::exit;

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
    /// Number of SQLite shards in the demo fleet.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1000))]
    shards: u16,
    /// Keep the shard files (and print where they are) instead of removing them.
    #[arg(long)]
    keep: bool,
    /// Human-readable text, or one JSON document on stdout.
    #[arg(long, value_enum, default_value = "human")]
    output: Output,
}

#[derive(Debug, Serialize)]
struct ShardOutcome {
    shard: String,
    applied: usize,
    version: Option<String>,
    duration_ms: u128,
}

#[derive(Debug, Serialize)]
struct DemoSummary {
    directory: PathBuf,
    set_digest: String,
    shards: Vec<ShardOutcome>,
    stale_agent_refusal: String,
}

pub async fn run(arguments: DemoArgs) -> ExitCode {
    match demo(&arguments).await {
        Ok(()) => ExitCode::from(exit::OK),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(exit::FAILED)
        }
    }
}

async fn demo(arguments: &DemoArgs) -> anyhow::Result<()> {
    let workspace = tempfile::Builder::new()
        .prefix("fleetshift-demo-")
        .tempdir()?;
    let migrations = workspace.path().join("migrations");
    std::fs::create_dir(&migrations)?;
    for (name, content) in MIGRATIONS {
        std::fs::write(migrations.join(name), content)?;
    }
    let set = MigrationSet::load(&migrations, None)?;
    let human = arguments.output == Output::Human;
    if human {
        println!(
            "fleetshift demo: {} SQLite shards, migration set of {} revisions ({} format, digest {})",
            arguments.shards,
            set.revisions.len(),
            set.format,
            &set.digest[..16]
        );
    }
    let mut tasks = tokio::task::JoinSet::new();
    for number in 1..=arguments.shards {
        let set = set.clone();
        let path = workspace.path().join(format!("shard-{number:03}.db"));
        tasks.spawn(async move { migrate_shard(path, set).await });
    }
    let mut outcomes = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let outcome = joined??;
        if human {
            println!(
                "  {}  applied {} revisions in {} ms, now at version {}",
                outcome.shard,
                outcome.applied,
                outcome.duration_ms,
                outcome.version.as_deref().unwrap_or("-")
            );
        }
        outcomes.push(outcome);
    }
    outcomes.sort_by(|left, right| left.shard.cmp(&right.shard));
    let refusal = fence_out_stale_agent(&workspace.path().join("shard-001.db"), &set).await?;
    if human {
        println!("\nshard-001 is handed to agent-b with fencing token 2;");
        println!("agent-a still believes it holds token 1 and tries to revert a revision:");
        println!("  refused: {refusal}");
        println!(
            "\n{} of {} shards at the latest version; the stale agent changed nothing.",
            outcomes
                .iter()
                .filter(|o| o.version.as_deref() == Some("4"))
                .count(),
            outcomes.len()
        );
    }
    let directory = if arguments.keep {
        workspace.keep()
    } else {
        workspace.path().to_path_buf()
    };
    if arguments.output == Output::Json {
        let summary = DemoSummary {
            directory: directory.clone(),
            set_digest: set.digest.clone(),
            shards: outcomes,
            stale_agent_refusal: refusal,
        };
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else if arguments.keep {
        println!("shard files kept in {}", directory.display());
        println!(
            "try: fleetshift migrate status --database-url sqlite:{}/shard-001.db --dir {}/migrations",
            directory.display(),
            directory.display()
        );
    }
    Ok(())
}

fn identity(agent: &str, token: i64) -> Identity {
    Identity {
        agent_id: agent.to_owned(),
        plan_id: Some("demo".to_owned()),
        fence_token: Some(token),
    }
}

async fn open(path: &Path) -> Result<SqliteShard, ExecError> {
    let url = DatabaseUrl::new(format!("sqlite:{}", path.display()));
    SqliteShard::connect(&url, Timeouts::default()).await
}

async fn migrate_shard(path: PathBuf, set: MigrationSet) -> anyhow::Result<ShardOutcome> {
    let shard = open(&path).await?;
    let started = Instant::now();
    let executor = Executor::new(&shard, identity("agent-a", 1), ExecutorSettings::default());
    let report = executor.up(&set, &Request::default()).await?;
    Ok(ShardOutcome {
        shard: path
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_default(),
        applied: report.steps.len(),
        version: report.current_version,
        duration_ms: started.elapsed().as_millis(),
    })
}

/// Hands the shard to a newer claim, then lets the stale holder try; returns its refusal.
async fn fence_out_stale_agent(path: &Path, set: &MigrationSet) -> anyhow::Result<String> {
    let shard = open(path).await?;
    Executor::new(&shard, identity("agent-b", 2), ExecutorSettings::default())
        .up(set, &Request::default())
        .await?;
    let stale = Executor::new(&shard, identity("agent-a", 1), ExecutorSettings::default());
    match stale.down(set, &Request::default()).await {
        Err(error @ ExecError::FencedOut { .. }) => Ok(error.to_string()),
        Err(other) => anyhow::bail!("the stale agent failed for the wrong reason: {other}"),
        Ok(_) => anyhow::bail!("the stale agent was not fenced out: the fence is broken"),
    }
}
