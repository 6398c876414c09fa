//! `fleetshift migrate`: status, up, down, verify, adopt and resolve on one database.

use fleetshift_common::fence::FenceToken;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use fleetshift_common::engine::{self, Connected, ShardEngine, Timeouts};
use fleetshift_common::error::{ErrorKind, ExecError};
use fleetshift_common::executor::{
    Direction, Executor, ExecutorSettings, Identity, LockRetryPolicy, Request, Resolution,
};
use fleetshift_common::rehearsal::scratch;
use fleetshift_common::rehearsal::{self, RehearsalError, RehearsalSettings};
use fleetshift_common::secrets::DatabaseUrl;
use fleetshift_common::source::{MigrationSet, SourceFormat};
use tokio_util::sync::CancellationToken;

use fleetshift_common::duration;

use super::dry_run::DryRun;
use super::rehearse::{self, SampleArgs};
use super::sources::{self, AlembicArgs};
use super::{Output, render};
use crate::exit;

#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(subcommand)]
    command: MigrateCommand,
}

#[derive(Debug, Subcommand)]
enum MigrateCommand {
    /// Show every revision of the set and where the shard stands (reads only).
    Status(Target),
    /// Apply pending revisions in order, each under the fenced protocol.
    /// --to VERSION stops after that version (default: everything pending).
    Up {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        safety: Safety,
        #[command(flatten)]
        movement: Movement,
    },
    /// Revert applied revisions newest first with their down scripts.
    /// --to VERSION returns to that version (`base`: revert everything; default: only the newest).
    Down {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        safety: Safety,
        #[command(flatten)]
        movement: Movement,
    },
    /// Run the pending revisions on a sampled copy of the database (a scratch database on the
    /// same server, always dropped) under a tracer, and report every statement's locks,
    /// rewrites and scans and the hazards they show. The database itself is only read.
    /// Exit 0: passed; 11: a hazard was found; 1: a revision failed on the sample.
    Rehearse {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        safety: Safety,
        #[command(flatten)]
        sample: SampleArgs,
        /// The last version to rehearse (default: everything pending).
        #[arg(long, value_name = "VERSION")]
        to: Option<String>,
    },
    /// Validate the migration files; with a database, also check applied revisions for drift.
    Verify(Target),
    /// Import the history another tool (sqlx, Flyway, golang-migrate, dbmate, diesel, pop, Liquibase,
    /// Alembic) kept.
    Adopt {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        safety: Safety,
        /// Why, recorded on the shard.
        #[arg(long)]
        reason: String,
    },
    /// Record the outcome of an interrupted revision after finishing or undoing it by hand.
    Resolve {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        safety: Safety,
        #[arg(long)]
        version: String,
        #[arg(long = "as", value_enum)]
        resolution: ResolutionArgument,
        /// Why, recorded on the shard.
        #[arg(long)]
        reason: String,
    },
}

/// Where `up` or `down` goes, and how.
#[derive(Debug, Args)]
struct Movement {
    /// Target version (see the command's description).
    #[arg(long, value_name = "VERSION")]
    to: Option<String>,
    /// Print exactly the SQL that would run, per revision and transaction mode; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Proceed although applied revisions changed since; the reason is recorded on the shard.
    #[arg(long, value_name = "REASON")]
    allow_drift: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ResolutionArgument {
    Applied,
    Failed,
}

/// Which database and which migration set.
#[derive(Debug, Args)]
struct Target {
    /// Database URL (postgres://… or sqlite:…). Prefer the environment variable or
    /// --database-url-file: process arguments are visible to every user of the host.
    #[arg(long, env = "FLEETSHIFT_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// A file holding the database URL (e.g. a mounted secret).
    #[arg(
        long,
        env = "FLEETSHIFT_DATABASE_URL_FILE",
        conflicts_with = "database_url"
    )]
    database_url_file: Option<PathBuf>,
    /// Migration directory.
    #[arg(long, env = "FLEETSHIFT_MIGRATIONS_DIR")]
    dir: PathBuf,
    /// Migration layout: sqlx, golang-migrate, diesel, flyway, dbmate, pop, liquibase or alembic;
    /// detected from file names (an Alembic project from `alembic.ini` or `migrations/env.py`)
    /// when omitted.
    #[arg(long, value_parser = parse_format, env = "FLEETSHIFT_MIGRATIONS_FORMAT")]
    format: Option<SourceFormat>,
    #[command(flatten)]
    alembic: AlembicArgs,
    /// Human-readable text, or one JSON document on stdout (errors too).
    #[arg(long, value_enum, default_value = "human", env = "FLEETSHIFT_OUTPUT")]
    output: Output,
}

/// Lock discipline and identity of the run.
#[derive(Debug, Args)]
struct Safety {
    /// How long one statement may wait for a lock before the attempt is retried.
    #[arg(long, default_value = "2s", value_parser = duration::parse, env = "FLEETSHIFT_LOCK_TIMEOUT")]
    lock_timeout: Duration,
    /// How long one statement may run (must exceed --lock-timeout).
    #[arg(long, default_value = "15m", value_parser = duration::parse, env = "FLEETSHIFT_STATEMENT_TIMEOUT")]
    statement_timeout: Duration,
    /// A session idle inside a transaction this long is ended by the server.
    #[arg(long, default_value = "60s", value_parser = duration::parse)]
    idle_in_transaction_timeout: Duration,
    /// The migrator lock's session ends this long after its holder stops heartbeating (a
    /// paused migrator cannot keep the database locked; PostgreSQL 14+).
    #[arg(long, default_value = "30s", value_parser = duration::parse, alias = "lock-session-lease")]
    migrator_lock_idle: Duration,
    /// Retries after a lock conflict (exponential backoff with jitter).
    #[arg(long, default_value_t = 6)]
    lock_retries: usize,
    /// How long to wait for another migrator working on the same database.
    #[arg(long, default_value = "60s", value_parser = duration::parse)]
    migrator_wait: Duration,
    /// Recorded in the shard's history as who applied each revision.
    #[arg(long, default_value = "fleetshift-cli", env = "FLEETSHIFT_AGENT_ID")]
    agent_id: String,
    /// Recorded in the shard's history.
    #[arg(long)]
    plan_id: Option<String>,
    /// Fencing token of this run (default: the shard's current token).
    #[arg(long)]
    fence_token: Option<i64>,
}

pub(super) fn parse_format(text: &str) -> Result<SourceFormat, String> {
    text.parse()
}

/// A failure of the command: the engine's, or the command line's own.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error("{0}")]
    Usage(String),
    /// The rehearsal's scratch database could not be built or dropped.
    #[error("{0}")]
    Rehearsal(String),
}

impl Failure {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Exec(error) => error.kind(),
            Self::Usage(_) => ErrorKind::BadInput,
            Self::Rehearsal(_) => ErrorKind::Failed,
        }
    }
}

pub async fn run(arguments: MigrateArgs) -> ExitCode {
    let output = match &arguments.command {
        MigrateCommand::Status(target) | MigrateCommand::Verify(target) => target.output,
        MigrateCommand::Up { target, .. }
        | MigrateCommand::Down { target, .. }
        | MigrateCommand::Adopt { target, .. }
        | MigrateCommand::Rehearse { target, .. }
        | MigrateCommand::Resolve { target, .. } => target.output,
    };
    match execute(arguments.command).await {
        Ok(code) => code,
        Err(failure) => {
            render::failure(output, &failure.to_string(), failure.kind());
            exit::from_kind(failure.kind())
        }
    }
}

async fn execute(command: MigrateCommand) -> Result<ExitCode, Failure> {
    match &command {
        MigrateCommand::Verify(target)
            if target.database_url.is_none() && target.database_url_file.is_none() =>
        {
            let set = load_set(target)?;
            render::verified(target.output, &set, None);
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let (target, safety) = match &command {
        MigrateCommand::Status(target) | MigrateCommand::Verify(target) => (target, None),
        MigrateCommand::Up { target, safety, .. }
        | MigrateCommand::Down { target, safety, .. }
        | MigrateCommand::Adopt { target, safety, .. }
        | MigrateCommand::Rehearse { target, safety, .. }
        | MigrateCommand::Resolve { target, safety, .. } => (target, Some(safety)),
    };
    let set = load_set(target)?;
    let url = database_url(target)?;
    let timeouts = safety.map_or_else(Timeouts::default, |safety| Timeouts {
        lock_timeout: safety.lock_timeout,
        statement_timeout: safety.statement_timeout,
        idle_in_transaction: safety.idle_in_transaction_timeout,
        migrator_lock_idle: safety.migrator_lock_idle,
    });
    timeouts.validate().map_err(Failure::Usage)?;
    fleetshift_common::database_tls::check(url.expose())
        .map_err(|error| Failure::Usage(format!("the database URL's TLS settings: {error}")))?;
    if let MigrateCommand::Rehearse {
        target,
        safety,
        sample,
        to,
    } = &command
    {
        return rehearse(&url, &set, target, safety, sample, to.clone(), timeouts).await;
    }
    match engine::connect(&url, timeouts).await? {
        Connected::Postgres(shard) => on_engine(shard.as_ref(), &command, &set, timeouts).await,
        Connected::Sqlite(shard) => on_engine(&shard, &command, &set, timeouts).await,
    }
}

async fn on_engine<E: ShardEngine>(
    engine: &E,
    command: &MigrateCommand,
    set: &MigrationSet,
    timeouts: Timeouts,
) -> Result<ExitCode, Failure> {
    // Ctrl-C stops a run between revisions (exit 8) instead of killing it mid-revision.
    let stop = CancellationToken::new();
    let interrupt = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::warn!("interrupted: stopping after the current revision");
            interrupt.cancel();
        }
    });
    let executor = |safety: &Safety| writer(engine, safety, timeouts).stop_when(stop.clone());
    let reader = Executor::new(
        engine,
        Identity {
            agent_id: "fleetshift-cli".to_owned(),
            plan_id: None,
            fence_token: None,
        },
        ExecutorSettings::default(),
    );
    match command {
        MigrateCommand::Status(target) => {
            let status = reader.status(set).await?;
            render::status(target.output, set, &status);
        }
        MigrateCommand::Verify(target) => {
            let status = reader.status(set).await?;
            render::verified(target.output, set, Some(&status));
            if !status.drifted.is_empty() {
                return Ok(ExitCode::from(exit::DRIFT));
            }
        }
        MigrateCommand::Up {
            target,
            safety,
            movement,
        }
        | MigrateCommand::Down {
            target,
            safety,
            movement,
        } => {
            let direction = if matches!(command, MigrateCommand::Up { .. }) {
                Direction::Up
            } else {
                Direction::Down
            };
            move_shard(
                &executor(safety),
                engine.shard(),
                set,
                direction,
                movement,
                target.output,
                timeouts,
            )
            .await?;
        }
        MigrateCommand::Adopt {
            target,
            safety,
            reason,
        } => {
            let report = executor(safety).adopt(set, reason).await?;
            render::report(target.output, &report);
        }
        MigrateCommand::Rehearse { .. } => {
            return Err(Failure::Usage(
                "a rehearsal runs on a scratch copy, never on the database itself".to_owned(),
            ));
        }
        MigrateCommand::Resolve {
            target,
            safety,
            version,
            resolution,
            reason,
        } => {
            let resolution = match resolution {
                ResolutionArgument::Applied => Resolution::Applied,
                ResolutionArgument::Failed => Resolution::Failed,
            };
            let report = executor(safety)
                .resolve(set, version, resolution, reason)
                .await?;
            render::report(target.output, &report);
        }
    }
    Ok(ExitCode::from(exit::OK))
}

/// `rehearse`: the sampled copy, the traced run, the report.
async fn rehearse(
    url: &DatabaseUrl,
    set: &MigrationSet,
    target: &Target,
    safety: &Safety,
    sample: &SampleArgs,
    to: Option<String>,
    timeouts: Timeouts,
) -> Result<ExitCode, Failure> {
    if !url.expose().starts_with("postgres") {
        return Err(Failure::Usage(format!(
            "{url}: rehearsals need PostgreSQL (they trace its locks and catalog)"
        )));
    }
    let settings = RehearsalSettings {
        sample: sample.options(),
        timeouts,
        executor: settings(safety, timeouts),
        plan_id: safety.plan_id.clone(),
        baselines: sample.baselines().map_err(Failure::Usage)?,
    };
    let request = Request {
        target: to,
        allow_drift: None,
    };
    // A rehearsal killed earlier (this command has no agent to clean up after it) left its
    // scratch database behind: drop it first.
    scratch::drop_leftovers(&sample.server(url), rehearse::OWNER)
        .await
        .map_err(|error| Failure::Rehearsal(error.to_string()))?;
    let rehearsal = rehearsal::rehearse(url, set, &request, &settings)
        .await
        .map_err(|error| match error {
            RehearsalError::Exec(error) => Failure::Exec(error),
            other => Failure::Rehearsal(other.to_string()),
        })?;
    rehearse::render(target.output, &rehearsal);
    Ok(ExitCode::from(if rehearsal.failure.is_some() {
        exit::FAILED
    } else if rehearsal.passed() {
        exit::OK
    } else {
        exit::FINDINGS
    }))
}

/// An executor that writes to the shard as `safety` says.
fn writer<'e, E: ShardEngine>(
    engine: &'e E,
    safety: &Safety,
    timeouts: Timeouts,
) -> Executor<'e, E> {
    Executor::new(
        engine,
        Identity {
            agent_id: safety.agent_id.clone(),
            plan_id: safety.plan_id.clone(),
            fence_token: safety.fence_token.map(FenceToken::from_raw),
        },
        settings(safety, timeouts),
    )
}

fn settings(safety: &Safety, timeouts: Timeouts) -> ExecutorSettings {
    ExecutorSettings {
        lock_retry: LockRetryPolicy {
            max_retries: safety.lock_retries,
            ..LockRetryPolicy::default()
        },
        migrator_lock_wait: safety.migrator_wait,
        lock_timeout: timeouts.lock_timeout,
        ..ExecutorSettings::default()
    }
}

/// `up` or `down`: print the plan (dry run) or run it.
async fn move_shard<E: ShardEngine>(
    executor: &Executor<'_, E>,
    shard: &str,
    set: &MigrationSet,
    direction: Direction,
    movement: &Movement,
    output: Output,
    timeouts: Timeouts,
) -> Result<(), Failure> {
    let request = Request {
        target: movement.to.clone(),
        allow_drift: movement.allow_drift.clone(),
    };
    if movement.dry_run {
        let plan = executor.plan(set, direction, &request).await?;
        let dry_run = DryRun {
            target: shard,
            revisions: &plan,
            direction,
            timeouts,
        };
        dry_run.print(output);
    } else {
        let report = match direction {
            Direction::Up => executor.up(set, &request).await?,
            Direction::Down => executor.down(set, &request).await?,
        };
        render::report(output, &report);
    }
    Ok(())
}

fn load_set(target: &Target) -> Result<MigrationSet, Failure> {
    sources::load(&target.dir, target.format, &target.alembic).map_err(Failure::Usage)
}

fn database_url(target: &Target) -> Result<DatabaseUrl, Failure> {
    if let Some(url) = &target.database_url {
        return Ok(DatabaseUrl::new(url.trim()));
    }
    if let Some(path) = &target.database_url_file {
        let text = std::fs::read_to_string(path).map_err(|error| {
            Failure::Usage(format!(
                "{}: cannot read the database URL file: {error}",
                path.display()
            ))
        })?;
        return Ok(DatabaseUrl::new(text.trim()));
    }
    Err(Failure::Usage(
        "no database: set FLEETSHIFT_DATABASE_URL, --database-url or --database-url-file"
            .to_owned(),
    ))
}
