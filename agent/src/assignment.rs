//! Running one assignment on one of this host's shards: the shipped migration set is written
//! to a fresh directory and loaded again, and must hash to the digest the coordinator pinned;
//! then the plan's host duties (pre-flight checks, a verified backup when required, baselines),
//! then the fenced executor under the claim's token, which stops when told. When one of the
//! plan's rollback triggers fires, the same executor reverts the shard to its version before
//! the plan and the baselines are timed again.

use fleetshift_common::fence::FenceToken;
use std::time::{Duration, Instant};

use std::future::Future;

use fleetshift_common::engine::{self, Connected, CountedPool, ShardEngine, Timeouts, health};
use fleetshift_common::error::{ErrorKind as ExecErrorKind, ExecError};
use fleetshift_common::executor::{
    ExecutionEvent, Executor, ExecutorSettings, Identity, LockRetryPolicy, Request, StepOutcome,
};
use fleetshift_common::proto::v1::progress_event::Event;
use fleetshift_common::proto::v1::{
    self, Assignment, AssignmentResult, BackupRecord, BaselineMeasured, BaselinePhase,
    DatabaseOutage, Direction, ErrorDetail, ErrorKind, LockRetry, PreflightCheck, ProgressEvent,
    RevisionFinished, RevisionOutcome, RevisionStarted, RollbackRecord, RollbackStarted,
    StatementFinished,
};
use fleetshift_common::shipped;
use fleetshift_common::source::{Engine, MigrationSet};
use fleetshift_common::telemetry::traces::{self, context};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::config::AgentConfig;
use crate::duties::backup::Manifest;
use crate::duties::baseline::Baselines;
use crate::duties::rollback::Triggers;
use crate::duties::{self, DutyFailure, DutyReport, ShardDuties};
use crate::metrics::{AgentMetrics, PoolFigures};
use crate::outage::{Patience, StepFailure};
use crate::stop::{StopCause, StopSignal};
use crate::tally::RunTally;

/// Runs `assignment`, reporting its progress to `progress`; every failure becomes a result
/// naming its kind and what to do.
/// `lease_ttl` is the session lease's time to live: the shard's own safeguards against a frozen
/// agent (the server ending an idle transaction, the migrator lock's session lease) lapse on
/// the same scale, so a newer claim is not kept waiting much longer than the fleet's lease.
pub async fn execute(
    config: &AgentConfig,
    metrics: &AgentMetrics,
    assignment: Assignment,
    lease_ttl: Duration,
    stop: StopSignal,
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
    let mut record = RunRecord::default();
    let span = run_span(&assignment);
    let (outcome, ()) = async {
        tokio::join!(
            run(
                Host { config, metrics },
                &assignment,
                lease_ttl,
                stop.token().clone(),
                events,
                &duties,
                &mut record
            ),
            forward
        )
    }
    .instrument(span.clone())
    .await;
    let outcome = outcome.map_err(|error| with_stop_cause(error, &assignment.shard_id, &stop));
    if let Err(error) = &outcome {
        traces::mark_failed(&span, &error.message);
    }
    let (succeeded, current_version, error) = match outcome {
        Ok(version) => (true, version.unwrap_or_default(), None),
        Err(error) => {
            // A rolled-back shard is known to be back where it was.
            let reverted_to = record
                .rollback
                .as_ref()
                .map(|rollback| rollback.reverted_to.clone())
                .filter(|version| version != BASE)
                .unwrap_or_default();
            (false, reverted_to, Some(error))
        }
    };
    AssignmentResult {
        assignment_id: assignment.assignment_id,
        shard_id: assignment.shard_id,
        fence_token: assignment.fence_token,
        succeeded,
        current_version,
        error,
        metrics: Some(tally.metrics(started.elapsed())),
        backup: record.backup,
        previous_version: record.previous_version,
        baselines: record.baselines,
        rollback: record.rollback,
    }
}

/// A stopped run's error as its stop's cause makes it: the coordinator's withdrawal stays a
/// stop; the agent's own stop for its safety is an interruption, which the leader runs again.
fn with_stop_cause(error: ErrorDetail, shard: &str, stop: &StopSignal) -> ErrorDetail {
    if error.kind != i32::from(ErrorKind::Stopped) {
        return error;
    }
    match stop.cause() {
        Some(StopCause::Interrupted(cause)) => refused(
            ErrorKind::Interrupted,
            format!("shard {shard}: interrupted: {cause}; {}", error.message),
        ),
        Some(StopCause::Withdrawn) | None => error,
    }
}

/// The span of this run, under the coordinator's span of the shard task when the assignment
/// names it.
fn run_span(assignment: &Assignment) -> tracing::Span {
    let span = tracing::info_span!(
        "assignment",
        fleetshift.plan = %assignment.plan_id,
        fleetshift.shard = %assignment.shard_id,
        fleetshift.assignment = %assignment.assignment_id,
        fleetshift.fence = assignment.fence_token,
        fleetshift.direction = assignment.direction().as_str_name(),
        fleetshift.target_version = %assignment.target_version,
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    );
    context::continue_from(&span, &assignment.trace_context);
    span
}

/// What a run leaves on record besides its outcome; it stands when the revisions fail.
#[derive(Debug, Default)]
struct RunRecord {
    /// Taken before the revisions.
    backup: Option<BackupRecord>,
    /// The shard's version when the run began (`base`: none applied).
    previous_version: String,
    /// Before, after, and after a rollback.
    baselines: Vec<BaselineMeasured>,
    /// The automatic rollback, when one finished.
    rollback: Option<RollbackRecord>,
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

    fn baseline(&self, measured: &BaselineMeasured) {
        tracing::info!(shard = %self.assignment.shard_id, phase = ?measured.phase(), queries = measured.queries.len(), degraded = measured.degraded, "baselines timed");
        let _ = self.progress.send(wrap(
            self.assignment,
            Event::BaselineMeasured(measured.clone()),
        ));
    }

    fn database_outage(&self, outage: &DatabaseOutage) {
        let _ = self
            .progress
            .send(wrap(self.assignment, Event::DatabaseOutage(outage.clone())));
    }

    fn rollback_started(&self, started: &RollbackStarted) {
        tracing::warn!(shard = %self.assignment.shard_id, reason = %started.reason, target = %started.target_version, "rolling the shard back");
        let _ = self.progress.send(wrap(
            self.assignment,
            Event::RollbackStarted(started.clone()),
        ));
    }
}

fn refused(kind: ErrorKind, message: String) -> ErrorDetail {
    ErrorDetail {
        kind: kind.into(),
        message,
    }
}

/// The agent an assignment runs on: its configuration and its metrics.
struct Host<'a> {
    config: &'a AgentConfig,
    metrics: &'a AgentMetrics,
}

/// Unpacks, connects, does the plan's duties and moves the shard; `record` receives what stands
/// even when the revisions then fail (the backup, the baselines, a rollback).
async fn run(
    host: Host<'_>,
    assignment: &Assignment,
    lease_ttl: Duration,
    stop: CancellationToken,
    events: mpsc::UnboundedSender<ExecutionEvent>,
    report: &dyn DutyReport,
    record: &mut RunRecord,
) -> Result<Option<String>, ErrorDetail> {
    let Host { config, metrics } = host;
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
    let mut patience = Patience::new(
        &shard.id,
        shard.database_url.server(),
        config.database_outage_wait,
        &stop,
        report,
    );
    let connected = patience
        .persist("connecting", || async {
            engine::connect(&shard.database_url, timeouts)
                .await
                .map_err(lost_or_final)
        })
        .await?;
    let _pool_reported = metrics.track_pool(&shard.id, pool_figures(&connected));
    let identity = Identity {
        agent_id: config.agent_id.clone(),
        plan_id: Some(assignment.plan_id.clone()),
        fence_token: Some(FenceToken::from_raw(assignment.fence_token)),
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
    let duties = assignment.duties.clone().unwrap_or_default();
    let shard_duties = ShardDuties {
        shard_id: &shard.id,
        plan_id: &assignment.plan_id,
        url: &shard.database_url,
        duties: &duties,
        backups: config.backups.as_ref(),
    };
    match &connected {
        Connected::Postgres(engine) => {
            let taken = patience
                .persist("running the pre-flight checks and backup", || async {
                    let ledger = engine.read_ledger().await.map_err(lost_or_final)?;
                    let tables = duties::touched_tables(
                        set.for_engine(Engine::Postgres),
                        &ledger,
                        direction,
                        request.target.as_deref(),
                    );
                    let duty =
                        duties::before_revisions(engine, shard_duties, &tables, report, &stop);
                    duty_step(engine.pool(), duty, duty_failure).await
                })
                .await?;
            record.backup = taken.map(|manifest| manifest.record());
        }
        Connected::Sqlite(engine) => {
            let unsupported = if duties.restore_test {
                Some("restore-tests its backups")
            } else if Baselines::from_policy(duties.baselines.as_ref()).is_some() {
                Some("times baselines")
            } else {
                None
            };
            if let Some(duty) = unsupported {
                return Err(refused(
                    ErrorKind::Precondition,
                    format!(
                        "shard {}: the plan {duty}, which only PostgreSQL shards support; nothing ran",
                        shard.id
                    ),
                ));
            }
            if duties.require_backup {
                let taken = duties::back_up_sqlite(engine, shard_duties, report)
                    .await
                    .map_err(duty_failure)?;
                record.backup = Some(taken.record());
            }
        }
    }
    let parts = RunParts {
        identity,
        settings,
        stop: stop.clone(),
        events,
    };
    let watch = Watch {
        shard_id: &shard.id,
        triggers: Triggers::from_policy(duties.rollback.as_ref()),
        revert_to: &assignment.revert_to,
        report,
    };
    match connected {
        Connected::Postgres(engine) => {
            let baselines = Baselines::from_policy(duties.baselines.as_ref())
                .map(|baselines| (baselines, engine.pool()));
            let moving = Moving {
                engine: engine.as_ref(),
                set: &set,
                parts: &parts,
            };
            moving
                .supervised(direction, &request, &watch, baselines, patience, record)
                .await
        }
        Connected::Sqlite(engine) => {
            let moving = Moving {
                engine: &engine,
                set: &set,
                parts: &parts,
            };
            moving
                .supervised(direction, &request, &watch, None, patience, record)
                .await
        }
    }
}

/// What an executor is built from, whatever the engine.
struct RunParts {
    identity: Identity,
    settings: ExecutorSettings,
    stop: CancellationToken,
    events: mpsc::UnboundedSender<ExecutionEvent>,
}

/// What watches the revisions: the plan's rollback triggers and where a rollback goes.
struct Watch<'a> {
    shard_id: &'a str,
    triggers: Triggers,
    /// The plan's earlier record of the shard's version before it; empty: what this run finds.
    revert_to: &'a str,
    report: &'a dyn DutyReport,
}

/// One shard's migration set under one executor identity.
struct Moving<'a, E: ShardEngine> {
    engine: &'a E,
    set: &'a MigrationSet,
    parts: &'a RunParts,
}

impl<E: ShardEngine> Moving<'_, E> {
    fn executor(&self) -> Executor<'_, E> {
        Executor::new(
            self.engine,
            self.parts.identity.clone(),
            self.parts.settings,
        )
        .interrupt_when(self.parts.stop.clone())
        .report_to(self.parts.events.clone())
    }

    /// Moves the shard, with baselines around the revisions (PostgreSQL) and a rollback when a
    /// trigger fires; the shard's version afterwards. Each step runs again after a loss of the
    /// database server, within `patience`'s bound, resuming from the shard's ledger.
    async fn supervised(
        &self,
        direction: Direction,
        request: &Request,
        watch: &Watch<'_>,
        baselines: Option<(Baselines<'_>, &CountedPool)>,
        mut patience: Patience<'_>,
        record: &mut RunRecord,
    ) -> Result<Option<String>, ErrorDetail> {
        let executor = self.executor();
        let status = patience
            .persist("reading the ledger", || async {
                executor.status(self.set).await.map_err(lost_or_final)
            })
            .await?;
        record.previous_version = status.current_version.unwrap_or_else(|| BASE.to_owned());
        match direction {
            Direction::Up => {}
            Direction::Down => {
                return patience
                    .persist("reverting revisions", || async {
                        retried_on_loss(executor.down(self.set, request).await)
                    })
                    .await?
                    .map(|report| report.current_version)
                    .map_err(|error| exec_failure(&error));
            }
            Direction::Unspecified => {
                return Err(refused(
                    ErrorKind::BadInput,
                    "the assignment names no direction".to_owned(),
                ));
            }
        }
        let timing = Timing {
            baselines,
            stop: &self.parts.stop,
            report: watch.report,
        };
        let before = timing
            .phase(BaselinePhase::Before, None, &mut patience, duty_failure)
            .await?;
        record.baselines.extend(before.clone());
        let outcome = patience
            .persist("applying revisions", || async {
                retried_on_loss(executor.up(self.set, request).await)
            })
            .await?;
        let after = match (&before, &outcome) {
            (Some(before), Ok(_)) => {
                let after_but = |failure| applied_but(failure, watch.shard_id);
                timing
                    .phase(BaselinePhase::After, Some(before), &mut patience, after_but)
                    .await?
            }
            _ => None,
        };
        record.baselines.extend(after.clone());
        let degradation = timing.degradation(after.as_ref());
        let Some(reason) = watch.triggers.reason(&outcome, degradation.as_deref()) else {
            return outcome
                .map(|report| report.current_version)
                .map_err(|error| exec_failure(&error));
        };
        let cause = match &outcome {
            Err(error) => exec_failure(error).kind(),
            Ok(_) => ErrorKind::Failed,
        };
        let rollback = Rollback {
            reason,
            cause,
            before: before.as_ref(),
        };
        self.revert(&executor, watch, &timing, rollback, patience, record)
            .await
    }

    /// Reverts the shard to its version before the plan and times the baselines again; the
    /// run's outcome, which is an error either way: the rollback, or why it did not finish.
    async fn revert(
        &self,
        executor: &Executor<'_, E>,
        watch: &Watch<'_>,
        timing: &Timing<'_>,
        rollback: Rollback<'_>,
        mut patience: Patience<'_>,
        record: &mut RunRecord,
    ) -> Result<Option<String>, ErrorDetail> {
        let Rollback {
            reason,
            cause,
            before,
        } = rollback;
        let revert_to = if watch.revert_to.is_empty() {
            record.previous_version.clone()
        } else {
            watch.revert_to.to_owned()
        };
        watch.report.rollback_started(&RollbackStarted {
            reason: reason.clone(),
            target_version: revert_to.clone(),
        });
        let back = Request {
            target: Some(revert_to.clone()),
            allow_drift: None,
        };
        let span = tracing::info_span!(
            "rollback",
            fleetshift.reason = %reason,
            fleetshift.target_version = %revert_to
        );
        let reverted = patience
            .persist("rolling back", || async {
                retried_on_loss(executor.down(self.set, &back).await)
            })
            .instrument(span)
            .await?;
        let reverted = reverted.map_err(|error| {
            refused(
                ErrorKind::NeedsOperator,
                format!(
                    "shard {}: {reason}; the automatic rollback to {revert_to} did not finish, so the shard stays where it is for an operator: {error}",
                    watch.shard_id
                ),
            )
        })?;
        let recovered = match before {
            Some(before) => {
                let after_but = |failure| applied_but(failure, watch.shard_id);
                timing
                    .phase(
                        BaselinePhase::Recovered,
                        Some(before),
                        &mut patience,
                        after_but,
                    )
                    .await?
            }
            None => None,
        };
        record.baselines.extend(recovered.clone());
        let still = timing.degradation(recovered.as_ref());
        let recovery = match (&recovered, &still) {
            (None, _) => String::new(),
            (Some(_), None) => "; the baselines recovered".to_owned(),
            (Some(_), Some(still)) => format!("; the baselines did not recover: {still}"),
        };
        let message = format!(
            "shard {}: rolled back to {revert_to} because {reason}{recovery}",
            watch.shard_id
        );
        record.rollback = Some(RollbackRecord {
            reason,
            reverted_to: revert_to,
            revisions: reverted
                .steps
                .iter()
                .filter(|step| step.outcome == StepOutcome::Reverted)
                .map(|step| format!("{}_{}", step.version, step.name))
                .collect(),
            recovered: still.is_none(),
        });
        Err(refused(cause, message))
    }
}

/// Why a shard is rolled back, and the baselines it must get back to.
struct Rollback<'a> {
    reason: String,
    /// The error kind the shard ends with: the failure's, or FAILED.
    cause: ErrorKind,
    before: Option<&'a BaselineMeasured>,
}

/// The plan's baselines on this shard, when it has any: each phase is timed, reported and
/// kept in the run's record.
struct Timing<'a> {
    baselines: Option<(Baselines<'a>, &'a CountedPool)>,
    stop: &'a CancellationToken,
    report: &'a dyn DutyReport,
}

impl Timing<'_> {
    /// The baselines at `phase`, compared with `before` when given, timed again after a loss
    /// of the server; a failure of their own as `failed` makes it.
    async fn phase(
        &self,
        phase: BaselinePhase,
        before: Option<&BaselineMeasured>,
        patience: &mut Patience<'_>,
        failed: impl Fn(DutyFailure) -> ErrorDetail,
    ) -> Result<Option<BaselineMeasured>, ErrorDetail> {
        let Some((baselines, pool)) = self.baselines else {
            return Ok(None);
        };
        let failed = &failed;
        let measured = patience
            .persist("timing the baselines", || async move {
                let measuring = baselines
                    .measure(pool, phase, before, self.stop)
                    .instrument(tracing::info_span!(
                        "baseline",
                        fleetshift.phase = phase.as_str_name()
                    ));
                duty_step(pool, measuring, failed).await
            })
            .await?;
        self.report.baseline(&measured);
        Ok(Some(measured))
    }

    /// The degraded queries of `measured`, described, when any degraded.
    fn degradation(&self, measured: Option<&BaselineMeasured>) -> Option<String> {
        let (baselines, _) = self.baselines?;
        baselines.degradation(measured?)
    }
}

/// An engine failure as a step's: a lost server is retried, anything else is final.
fn lost_or_final(error: ExecError) -> StepFailure {
    if error.is_connection_lost() {
        StepFailure::Lost(first_line(&error.to_string()))
    } else {
        StepFailure::Final(exec_failure(&error))
    }
}

/// A revisions step's outcome, kept whole (rollback triggers read it) unless it lost the
/// server, which retries it.
fn retried_on_loss<T>(outcome: Result<T, ExecError>) -> Result<Result<T, ExecError>, StepFailure> {
    match outcome {
        Err(error) if error.is_connection_lost() => {
            Err(StepFailure::Lost(first_line(&error.to_string())))
        }
        other => Ok(other),
    }
}

/// A host duty's step. A duty that saw its connection lost is retried; one that failed
/// otherwise (a client program such as `pg_dump`) is retried when the server did not answer
/// afterwards, or answered as a server that started since (a restart, a failover);
/// otherwise the failure is the duty's own, as `failed` makes it.
async fn duty_step<T>(
    pool: &CountedPool,
    step: impl Future<Output = Result<T, DutyFailure>>,
    failed: impl Fn(DutyFailure) -> ErrorDetail,
) -> Result<T, StepFailure> {
    let started_at = health::server_started_at(pool).await.ok();
    let refusal = match step.await {
        Ok(value) => return Ok(value),
        Err(DutyFailure::Refused(refusal)) => refusal,
        Err(DutyFailure::ConnectionLost(detail)) => return Err(StepFailure::Lost(detail)),
        Err(stopped) => return Err(StepFailure::Final(failed(stopped))),
    };
    let now = health::server_started_at(pool).await.ok();
    if started_at.is_some() && now == started_at {
        Err(StepFailure::Final(failed(DutyFailure::Refused(refusal))))
    } else {
        Err(StepFailure::Lost(first_line(&refusal)))
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}

/// The version of a shard with no revision applied.
pub(crate) const BASE: &str = "base";

/// A duty that failed after the revisions ran: they stand, and the message says so.
fn applied_but(failure: DutyFailure, shard_id: &str) -> ErrorDetail {
    match failure {
        DutyFailure::Stopped => refused(
            ErrorKind::Stopped,
            format!("shard {shard_id}: stopped while timing baselines; the revisions stand"),
        ),
        DutyFailure::Refused(message) => refused(
            ErrorKind::Failed,
            format!("shard {shard_id}: {message}; the revisions stand"),
        ),
        DutyFailure::ConnectionLost(detail) => refused(
            ErrorKind::Unreachable,
            format!("shard {shard_id}: {detail}; the revisions stand"),
        ),
    }
}

/// The shortest migrator-lock session lease the engine accepts.
const MIN_LOCK_SESSION_LEASE: Duration = Duration::from_secs(1);

/// The engine's connection pool, for the metrics.
fn pool_figures(connected: &Connected) -> Box<dyn PoolFigures> {
    match connected {
        Connected::Postgres(engine) => Box::new(engine.pool().clone()),
        Connected::Sqlite(engine) => Box::new(engine.pool().clone()),
    }
}

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
        DutyFailure::ConnectionLost(detail) => {
            refused(ErrorKind::Unreachable, format!("{detail}; nothing changed"))
        }
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
