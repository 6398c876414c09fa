//! Running one assignment on one of this host's shards: the shipped migration set is unpacked
//! (once per set: [`UnpackedSets`]) and must hash to the digest the coordinator pinned;
//! then the plan's host duties (pre-flight checks, a verified backup when required, baselines),
//! then the fenced executor under the claim's token, which stops when told. When one of the
//! plan's rollback triggers fires, the same executor reverts the shard to its version before
//! the plan and the baselines are timed again.

use std::time::{Duration, Instant};

use std::future::Future;

use fleetshift_common::engine::{Connected, CountedPool, ShardEngine, Timeouts, health};
use fleetshift_common::error::ExecError;
use fleetshift_common::executor::{
    ExecutionEvent, ExecutorSettings, Identity, LockRetryPolicy, Request,
};
use fleetshift_common::proto::v1::{
    self, Assignment, AssignmentResult, BackupRecord, BaselineMeasured, Direction, ErrorDetail,
    ErrorKind, ProgressEvent, RevisionDuration, RollbackRecord, SchemaFingerprints,
    ValidationReport,
};
use fleetshift_common::source::{Engine, MigrationSet};
use fleetshift_common::telemetry::traces::{self, context};
use fleetshift_common::validation::Validator;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

mod moving;
mod order;
mod paced;
mod throttle;
mod unpacked;
mod validating;
mod window_gate;
pub(crate) mod wire;

pub(crate) use wire::exec_failure;

pub use order::{InvalidAssignment, Order};
pub use paced::FleetThrottles;
pub use throttle::ShardThrottle;
pub use unpacked::UnpackedSets;
pub(crate) use unpacked::unpack;

use moving::{Moving, RunParts, Watch};
use paced::Paced;
use validating::Validating;
use wire::{DutyProgress, duty_failure, progress_event, refused};

use crate::config::{AgentConfig, ShardConfig};
use crate::duties::rollback::Triggers;
use crate::duties::{self, DutyFailure, DutyReport, ShardDuties};
use crate::metrics::{AgentMetrics, PoolFigures};
use crate::outage::{Patience, StepFailure};
use crate::stop::{StopCause, StopSignal};
use crate::tally::RunTally;
use fleetshift_common::baseline::Baselines;

/// Runs `assignment`, reporting its progress to `progress`; every failure becomes a result
/// naming its kind and what to do.
/// `lease_ttl` is the session lease's time to live: the shard's own safeguards against a frozen
/// agent (the server ending an idle transaction, the migrator lock's session lease) lapse on
/// the same scale, so a newer claim is not kept waiting much longer than the fleet's lease.
pub async fn execute(
    host: Host<'_>,
    assignment: Assignment,
    lease_ttl: Duration,
    stop: StopSignal,
    progress: mpsc::UnboundedSender<ProgressEvent>,
) -> AssignmentResult {
    // What a refusal names, kept before the assignment (and its files) moves into the order.
    let (shard_id, fence_token) = (assignment.shard_id.clone(), assignment.fence_token);
    let order = match Order::try_from(assignment) {
        Ok(order) => order,
        Err(invalid) => {
            tracing::warn!(%invalid, "assignment refused: nothing ran");
            return AssignmentResult {
                assignment_id: invalid.assignment.clone(),
                shard_id,
                fence_token,
                error: Some(refused(
                    ErrorKind::BadInput,
                    format!(
                        "{invalid}; nothing ran (the coordinator sent an incomplete assignment)"
                    ),
                )),
                ..AssignmentResult::default()
            };
        }
    };
    // On the heap: a caller that awaits this on its own stack (rather than spawning it) would
    // otherwise hold the whole run's state there, more than a thread's stack in a debug build.
    Box::pin(run_order(host, order, lease_ttl, stop, progress)).await
}

/// Runs a checked assignment; see [`execute`].
async fn run_order(
    host: Host<'_>,
    order: Order,
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
            let _ = progress.send(progress_event(&order, event));
        }
    };
    let duties = DutyProgress {
        order: &order,
        progress: &progress,
    };
    let mut record = RunRecord::default();
    let span = run_span(&order);
    let (outcome, ()) = async {
        tokio::join!(
            run(
                host,
                &order,
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
    let outcome = outcome.map_err(|error| with_stop_cause(error, &order.shard_id, &stop));
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
        assignment_id: order.assignment_id,
        shard_id: order.shard_id,
        fence_token: order.fence_token.get(),
        succeeded,
        current_version,
        error,
        metrics: Some(tally.metrics(started.elapsed())),
        backup: record.backup,
        previous_version: record.previous_version,
        baselines: record.baselines,
        rollback: record.rollback,
        schema: record.schema,
        validation: record.validation,
        schema_snapshot: record.schema_snapshot,
        durations: record.durations,
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
fn run_span(order: &Order) -> tracing::Span {
    let span = tracing::info_span!(
        "assignment",
        fleetshift.plan = %order.plan_id,
        fleetshift.shard = %order.shard_id,
        fleetshift.assignment = %order.assignment_id,
        fleetshift.fence = order.fence_token.get(),
        fleetshift.direction = order.direction.as_str_name(),
        fleetshift.target_version = order.target_version.as_deref().unwrap_or_default(),
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    );
    context::continue_from(&span, &order.trace_context);
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
    /// The schema before the first revision and after the last run's last one.
    schema: Option<SchemaFingerprints>,
    /// The last run's schema, packed for the wire.
    schema_snapshot: Vec<u8>,
    /// The post-migration validation of the revisions that ran.
    validation: Option<ValidationReport>,
    /// How long each revision applied took.
    durations: Vec<RevisionDuration>,
}

/// The agent an assignment runs on: its configuration, its metrics, the fleet throttles its
/// session follows and the migration sets it has unpacked.
#[derive(Debug)]
pub struct Host<'a> {
    pub config: &'a AgentConfig,
    pub metrics: &'a AgentMetrics,
    pub throttles: FleetThrottles,
    pub sets: &'a UnpackedSets,
}

/// Unpacks, connects, does the plan's duties and moves the shard; `record` receives what stands
/// even when the revisions then fail (the backup, the baselines, a rollback).
async fn run(
    host: Host<'_>,
    order: &Order,
    lease_ttl: Duration,
    stop: CancellationToken,
    events: mpsc::UnboundedSender<ExecutionEvent>,
    report: &dyn DutyReport,
    record: &mut RunRecord,
) -> Result<Option<String>, ErrorDetail> {
    let Host {
        config,
        metrics,
        throttles,
        sets,
    } = host;
    let shard = shard_of(config, order)?;
    let set = sets
        .get(&order.set)
        .map_err(|error| refused(error.kind(), error.to_string()))?;
    let limits = order.limits;
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
            shard.connect(timeouts).await.map_err(lost_or_final)
        })
        .await?;
    let _pool_reported = metrics.track_pool(&shard.id, pool_figures(&connected));
    let request = Request {
        target: order.target_version.clone(),
        allow_drift: None,
    };
    let direction = order.direction;
    let duties = &order.duties;
    if duties.require_backup {
        shard
            .whole_database_only("a backup")
            .map_err(|why| refused(ErrorKind::BadInput, why))?;
    }
    let shard_duties = ShardDuties {
        shard_id: &shard.id,
        plan_id: &order.plan_id,
        url: &shard.database_url,
        duties,
        backups: config.backups.as_ref(),
    };
    let before = Before {
        set: &set,
        direction,
        target: request.target.as_deref(),
        report,
        stop: &stop,
    };
    record.backup = before
        .duties(&connected, shard_duties, &mut patience)
        .await?;
    let parts = RunParts {
        identity: Identity {
            agent_id: config.agent_id.clone(),
            plan_id: Some(order.plan_id.clone()),
            fence_token: Some(order.fence_token),
        },
        settings: executor_settings(&limits, &timeouts),
        stop: stop.clone(),
        events,
        gate: order.gate.clone(),
    };
    let paced = Paced::fleet(&shard.labels, throttles);
    let watch = Watch {
        shard_id: &shard.id,
        triggers: Triggers::from_policy(duties.rollback.as_ref()),
        revert_to: &order.revert_to,
        report,
    };
    let validating = |validator| Validating {
        validator,
        verify_data: &duties.verify_data,
        timeouts,
        shard_id: &shard.id,
    };
    match connected {
        Connected::Postgres(engine) => {
            let baselines = Baselines::from_policy(duties.baselines.as_ref())
                .map(|baselines| (baselines, engine.pool()));
            let throttle = throttle::of_shard(duties, engine.pool(), shard).await?;
            let paced = paced.and_shard(throttle.as_ref());
            let moving = Moving {
                engine: engine.as_ref(),
                set: &set,
                parts: &parts,
                validating: validating(Validator::Postgres(engine.pool())),
                throttle: &paced,
                // A baseline is a whole database's schema: a tenant replays.
                baseline: order
                    .baseline
                    .as_ref()
                    .filter(|_| shard.scope.schema_name().is_none()),
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
                validating: validating(Validator::Sqlite(engine.pool())),
                throttle: &paced,
                // A baseline is PostgreSQL's SQL: SQLite shards replay.
                baseline: None,
            };
            moving
                .supervised(direction, &request, &watch, None, patience, record)
                .await
        }
    }
}

/// The executor's settings under the plan's `limits`.
fn executor_settings(limits: &v1::ExecutionLimits, timeouts: &Timeouts) -> ExecutorSettings {
    ExecutorSettings {
        lock_retry: LockRetryPolicy {
            max_retries: usize::try_from(limits.lock_retries).unwrap_or(usize::MAX),
            ..LockRetryPolicy::default()
        },
        lock_timeout: timeouts.lock_timeout,
        ..ExecutorSettings::default()
    }
}

/// The configured shard `order` is for.
fn shard_of<'c>(config: &'c AgentConfig, order: &Order) -> Result<&'c ShardConfig, ErrorDetail> {
    config
        .shards
        .iter()
        .find(|shard| shard.id == order.shard_id)
        .ok_or_else(|| {
            refused(
                ErrorKind::BadInput,
                format!(
                    "shard {} is not one of agent {}'s shards",
                    order.shard_id, config.agent_id
                ),
            )
        })
}

/// The plan's duties before the revisions: pre-flight checks and a backup.
struct Before<'a> {
    set: &'a MigrationSet,
    direction: Direction,
    target: Option<&'a str>,
    report: &'a dyn DutyReport,
    stop: &'a CancellationToken,
}

impl Before<'_> {
    /// Runs them on `connected`; the backup taken, if any.
    async fn duties(
        &self,
        connected: &Connected,
        shard: ShardDuties<'_>,
        patience: &mut Patience<'_>,
    ) -> Result<Option<BackupRecord>, ErrorDetail> {
        match connected {
            Connected::Postgres(engine) => {
                let taken = patience
                    .persist("running the pre-flight checks and backup", || async {
                        let ledger = engine.read_ledger().await.map_err(lost_or_final)?;
                        let tables = duties::touched_tables(
                            self.set.for_engine(Engine::Postgres),
                            &ledger,
                            self.direction,
                            self.target,
                        );
                        let duty = duties::before_revisions(
                            engine,
                            shard,
                            &tables,
                            self.report,
                            self.stop,
                        );
                        duty_step(engine.pool(), duty, duty_failure).await
                    })
                    .await?;
                Ok(taken.map(|manifest| manifest.record()))
            }
            Connected::Sqlite(engine) => {
                let duties = shard.duties;
                let unsupported = if duties.restore_test {
                    Some("restore-tests its backups")
                } else if Baselines::from_policy(duties.baselines.as_ref()).is_some() {
                    Some("times baselines")
                } else if duties.throttle.is_some() {
                    Some("throttles on replica lag, sessions or a query")
                } else {
                    None
                };
                if let Some(duty) = unsupported {
                    return Err(refused(
                        ErrorKind::Precondition,
                        format!(
                            "shard {}: the plan {duty}, which only PostgreSQL shards support; nothing ran",
                            shard.shard_id
                        ),
                    ));
                }
                if !duties.require_backup {
                    return Ok(None);
                }
                let taken = duties::back_up_sqlite(engine, shard, self.report)
                    .await
                    .map_err(duty_failure)?;
                Ok(Some(taken.record()))
            }
        }
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

pub(crate) use fleetshift_common::ledger::BASE;

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
const MIN_MIGRATOR_LOCK_IDLE: Duration = Duration::from_secs(1);

/// The engine's connection pool, for the metrics.
fn pool_figures(connected: &Connected) -> Box<dyn PoolFigures> {
    match connected {
        Connected::Postgres(engine) => Box::new(engine.pool().clone()),
        Connected::Sqlite(engine) => Box::new(engine.pool().clone()),
    }
}

/// The plan's limits, with the shard-side timeouts tied to the session's lease.
fn timeouts(limits: &v1::ExecutionLimits, lease_ttl: Duration) -> Result<Timeouts, String> {
    let timeouts = Timeouts {
        idle_in_transaction: lease_ttl,
        migrator_lock_idle: lease_ttl.max(MIN_MIGRATOR_LOCK_IDLE),
        ..plan_timeouts(limits)
    };
    timeouts.validate()?;
    Ok(timeouts)
}

/// The plan's lock and statement timeouts (the defaults where it sets none), the rest default.
pub(crate) fn plan_timeouts(limits: &v1::ExecutionLimits) -> Timeouts {
    let defaults = Timeouts::default();
    let given = |value: Option<prost_types::Duration>, default: Duration| {
        value
            .and_then(|value| Duration::try_from(value).ok())
            .unwrap_or(default)
    };
    Timeouts {
        lock_timeout: given(limits.lock_timeout, defaults.lock_timeout),
        statement_timeout: given(limits.statement_timeout, defaults.statement_timeout),
        ..defaults
    }
}
