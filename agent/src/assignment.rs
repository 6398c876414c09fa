//! Running one assignment on one of this host's shards: the shipped migration set is written
//! to a fresh directory and loaded again, and must hash to the digest the coordinator pinned;
//! then the plan's host duties (pre-flight checks, a verified backup when required), then the
//! fenced executor under the claim's token, which stops when told.

use std::time::{Duration, Instant};

use fleetshift_common::engine::{self, Connected, ShardEngine, Timeouts};
use fleetshift_common::error::{ErrorKind as ExecErrorKind, ExecError};
use fleetshift_common::executor::{
    ExecutionEvent, Executor, ExecutorSettings, Identity, LockRetryPolicy, Request, StepOutcome,
};
use fleetshift_common::proto::v1::progress_event::Event;
use fleetshift_common::proto::v1::{
    self, Assignment, AssignmentResult, BackupRecord, Direction, ErrorDetail, ErrorKind, LockRetry,
    PreflightCheck, ProgressEvent, RevisionFinished, RevisionOutcome, RevisionStarted,
    StatementFinished,
};
use fleetshift_common::shipped;
use fleetshift_common::source::MigrationSet;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;
use crate::duties::backup::Manifest;
use crate::duties::{self, DutyFailure, DutyReport, ShardDuties};
use crate::tally::RunTally;

/// Runs `assignment`, reporting its progress to `progress`; every failure becomes a result
/// naming its kind and what to do.
/// `lease_ttl` is the session lease's time to live: the shard's own safeguards against a frozen
/// agent (the server ending an idle transaction, the migrator lock's session lease) lapse on
/// the same scale, so a newer claim is not kept waiting much longer than the fleet's lease.
pub async fn execute(
    config: &AgentConfig,
    assignment: Assignment,
    lease_ttl: Duration,
    stop: CancellationToken,
    progress: mpsc::UnboundedSender<ProgressEvent>,
) -> AssignmentResult {
    let started = Instant::now();
    let (events, mut reported) = mpsc::unbounded_channel();
    let mut tally = RunTally::default();
    let forward = async {
        while let Some(event) = reported.recv().await {
            tally.count(&event);
            // The session may be gone; the run goes on regardless.
            let _ = progress.send(progress_event(&assignment, event));
        }
    };
    let duties = DutyProgress {
        assignment: &assignment,
        progress: &progress,
    };
    let mut backup = None;
    let (outcome, ()) = tokio::join!(
        run(
            config,
            &assignment,
            lease_ttl,
            stop,
            events,
            &duties,
            &mut backup
        ),
        forward
    );
    let (succeeded, current_version, error) = match outcome {
        Ok(version) => (true, version.unwrap_or_default(), None),
        Err(error) => (false, String::new(), Some(error)),
    };
    AssignmentResult {
        assignment_id: assignment.assignment_id,
        shard_id: assignment.shard_id,
        fence_token: assignment.fence_token,
        succeeded,
        current_version,
        error,
        metrics: Some(tally.metrics(started.elapsed())),
        backup,
    }
}

/// Duty steps go to the session as they end.
struct DutyProgress<'a> {
    assignment: &'a Assignment,
    progress: &'a mpsc::UnboundedSender<ProgressEvent>,
}

impl DutyReport for DutyProgress<'_> {
    fn check(&self, check: PreflightCheck) {
        if check.passed {
            tracing::info!(shard = %self.assignment.shard_id, check = %check.name, detail = %check.detail, "pre-flight check passed");
        } else {
            tracing::warn!(shard = %self.assignment.shard_id, check = %check.name, detail = %check.detail, "pre-flight check failed");
        }
        let _ = self
            .progress
            .send(wrap(self.assignment, Event::PreflightCheck(check)));
    }

    fn backup(&self, manifest: &Manifest) {
        tracing::info!(shard = %self.assignment.shard_id, backup = %manifest.backup_id, location = %manifest.location.display(), size_bytes = manifest.size_bytes, sha256 = %manifest.sha256, "verified backup recorded");
        let _ = self.progress.send(wrap(
            self.assignment,
            Event::BackupFinished(manifest.record()),
        ));
    }
}

fn refused(kind: ErrorKind, message: String) -> ErrorDetail {
    ErrorDetail {
        kind: kind.into(),
        message,
    }
}

/// Unpacks, connects, does the plan's duties and moves the shard; `backup` receives the backup
/// taken before the revisions, which stands even when they then fail.
async fn run(
    config: &AgentConfig,
    assignment: &Assignment,
    lease_ttl: Duration,
    stop: CancellationToken,
    events: mpsc::UnboundedSender<ExecutionEvent>,
    report: &dyn DutyReport,
    backup: &mut Option<BackupRecord>,
) -> Result<Option<String>, ErrorDetail> {
    let shard = config
        .shards
        .iter()
        .find(|shard| shard.id == assignment.shard_id)
        .ok_or_else(|| {
            refused(
                ErrorKind::BadInput,
                format!(
                    "shard {} is not one of agent {}'s shards",
                    assignment.shard_id, config.agent_id
                ),
            )
        })?;
    let shipped = assignment.migration_set.as_ref().ok_or_else(|| {
        refused(
            ErrorKind::BadInput,
            "the assignment carries no migration set".to_owned(),
        )
    })?;
    let directory = tempfile::Builder::new()
        .prefix("fleetshift-assignment-")
        .tempdir()
        .map_err(|error| {
            refused(
                ErrorKind::Failed,
                format!("cannot create a working directory: {error}"),
            )
        })?;
    let set = shipped::unpack(shipped, directory.path()).map_err(|error| {
        let kind = if error.is_bad_input() {
            ErrorKind::BadInput
        } else {
            ErrorKind::Failed
        };
        refused(kind, error.to_string())
    })?;
    let limits = assignment.limits.unwrap_or_default();
    let timeouts =
        timeouts(&limits, lease_ttl).map_err(|message| refused(ErrorKind::BadInput, message))?;
    let connected = engine::connect(&shard.database_url, timeouts)
        .await
        .map_err(|error| exec_failure(&error))?;
    let identity = Identity {
        agent_id: config.agent_id.clone(),
        plan_id: Some(assignment.plan_id.clone()),
        fence_token: Some(assignment.fence_token),
    };
    let settings = ExecutorSettings {
        lock_retry: LockRetryPolicy {
            max_retries: usize::try_from(limits.lock_retries).unwrap_or(usize::MAX),
            ..LockRetryPolicy::default()
        },
        lock_timeout: timeouts.lock_timeout,
        ..ExecutorSettings::default()
    };
    let request = Request {
        target: Some(assignment.target_version.clone()).filter(|target| !target.is_empty()),
        allow_drift: None,
    };
    let direction = Direction::try_from(assignment.direction).unwrap_or(Direction::Unspecified);
    let duties = assignment.duties.unwrap_or_default();
    let shard_duties = ShardDuties {
        shard_id: &shard.id,
        plan_id: &assignment.plan_id,
        url: &shard.database_url,
        duties: &duties,
        backups: config.backups.as_ref(),
    };
    match &connected {
        Connected::Postgres(engine) => {
            let ledger = engine
                .read_ledger()
                .await
                .map_err(|error| exec_failure(&error))?;
            let tables =
                duties::touched_tables(&set, &ledger, direction, request.target.as_deref());
            let taken = duties::before_revisions(engine, shard_duties, &tables, report, &stop)
                .await
                .map_err(duty_failure)?;
            *backup = taken.map(|manifest| manifest.record());
        }
        Connected::Sqlite(_) if duties.require_backup => {
            return Err(refused(
                ErrorKind::Precondition,
                format!(
                    "shard {}: the plan requires a backup, but backups of SQLite shards are not supported; nothing ran",
                    shard.id
                ),
            ));
        }
        Connected::Sqlite(_) => {}
    }
    let parts = RunParts {
        identity,
        settings,
        stop,
        events,
    };
    match connected {
        Connected::Postgres(engine) => {
            move_shard(engine.as_ref(), &set, parts, direction, &request).await
        }
        Connected::Sqlite(engine) => move_shard(&engine, &set, parts, direction, &request).await,
    }
}

/// What an executor is built from, whatever the engine.
struct RunParts {
    identity: Identity,
    settings: ExecutorSettings,
    stop: CancellationToken,
    events: mpsc::UnboundedSender<ExecutionEvent>,
}

async fn move_shard<E: ShardEngine>(
    engine: &E,
    set: &MigrationSet,
    parts: RunParts,
    direction: Direction,
    request: &Request,
) -> Result<Option<String>, ErrorDetail> {
    let executor = Executor::new(engine, parts.identity, parts.settings)
        .stop_when(parts.stop)
        .report_to(parts.events);
    let report = match direction {
        Direction::Up => executor.up(set, request).await,
        Direction::Down => executor.down(set, request).await,
        Direction::Unspecified => {
            return Err(refused(
                ErrorKind::BadInput,
                "the assignment names no direction".to_owned(),
            ));
        }
    };
    report
        .map(|report| report.current_version)
        .map_err(|error| exec_failure(&error))
}

/// The shortest migrator-lock session lease the engine accepts.
const MIN_LOCK_SESSION_LEASE: Duration = Duration::from_secs(1);

/// The plan's limits, with the shard-side timeouts tied to the session's lease.
fn timeouts(limits: &v1::ExecutionLimits, lease_ttl: Duration) -> Result<Timeouts, String> {
    let defaults = Timeouts::default();
    let given = |value: Option<prost_types::Duration>, default: Duration| {
        value
            .and_then(|value| Duration::try_from(value).ok())
            .unwrap_or(default)
    };
    let timeouts = Timeouts {
        lock_timeout: given(limits.lock_timeout, defaults.lock_timeout),
        statement_timeout: given(limits.statement_timeout, defaults.statement_timeout),
        idle_in_transaction: lease_ttl,
        lock_session_lease: lease_ttl.max(MIN_LOCK_SESSION_LEASE),
    };
    timeouts.validate()?;
    Ok(timeouts)
}

fn duty_failure(failure: DutyFailure) -> ErrorDetail {
    match failure {
        DutyFailure::Stopped => refused(
            ErrorKind::Stopped,
            "stopped before the revisions ran; nothing changed".to_owned(),
        ),
        DutyFailure::Refused(message) => refused(ErrorKind::Precondition, message),
    }
}

/// An event of `assignment`, stamped now.
fn wrap(assignment: &Assignment, event: Event) -> ProgressEvent {
    ProgressEvent {
        assignment_id: assignment.assignment_id.clone(),
        shard_id: assignment.shard_id.clone(),
        at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
        event: Some(event),
    }
}

/// An executor event as the wire carries it.
fn progress_event(assignment: &Assignment, event: ExecutionEvent) -> ProgressEvent {
    let duration = |value: Duration| prost_types::Duration::try_from(value).ok();
    let count = |value: usize| u32::try_from(value).unwrap_or(u32::MAX);
    let body = match event {
        ExecutionEvent::RevisionStarted {
            version,
            name,
            transactional,
            statements,
        } => Event::RevisionStarted(RevisionStarted {
            version,
            name,
            transactional,
            statements: count(statements),
        }),
        ExecutionEvent::StatementFinished {
            version,
            location,
            duration: took,
        } => Event::StatementFinished(StatementFinished {
            version,
            location,
            duration: duration(took),
        }),
        ExecutionEvent::LockRetry {
            version,
            location,
            attempt,
            wait,
            sqlstate,
        } => Event::LockRetry(LockRetry {
            version,
            location,
            attempt: count(attempt),
            wait: duration(wait),
            sqlstate: sqlstate.unwrap_or_default(),
        }),
        ExecutionEvent::RevisionFinished {
            version,
            outcome,
            duration: took,
            statements_run,
            lock_retries,
        } => {
            let outcome = match outcome {
                StepOutcome::Applied => RevisionOutcome::Applied,
                StepOutcome::Resumed => RevisionOutcome::Resumed,
                StepOutcome::Reverted => RevisionOutcome::Reverted,
                StepOutcome::AlreadyDone => RevisionOutcome::AlreadyDone,
            };
            Event::RevisionFinished(RevisionFinished {
                version,
                outcome: outcome.into(),
                duration: duration(took),
                statements_run: count(statements_run),
                lock_retries: count(lock_retries),
            })
        }
    };
    wrap(assignment, body)
}

fn exec_failure(error: &ExecError) -> ErrorDetail {
    let kind = match error.kind() {
        ExecErrorKind::BadInput => ErrorKind::BadInput,
        ExecErrorKind::Drift => ErrorKind::Drift,
        ExecErrorKind::FencedOut => ErrorKind::FencedOut,
        ExecErrorKind::LockTimeout => ErrorKind::LockTimeout,
        ExecErrorKind::Unreachable => ErrorKind::Unreachable,
        ExecErrorKind::NeedsOperator => ErrorKind::NeedsOperator,
        ExecErrorKind::Failed => ErrorKind::Failed,
        ExecErrorKind::Stopped => ErrorKind::Stopped,
    };
    refused(kind, error.to_string())
}
