//! Moving one shard under one executor identity: up or down through the fenced executor,
//! watched by the plan's rollback triggers and timed against its baselines, with an
//! automatic rollback when a trigger fires.

use fleetshift_common::engine::{CountedPool, ShardEngine};
use fleetshift_common::executor::{
    self, ExecutionEvent, Executor, ExecutorSettings, Identity, Request, RunReport, StepOutcome,
    Throttle,
};
use fleetshift_common::proto::v1::{
    BaselineMeasured, BaselinePhase, Direction, ErrorDetail, ErrorKind, RevisionDuration,
    RollbackRecord, RollbackStarted, SchemaFingerprints, ValidationReport,
};
use fleetshift_common::schema::wire;
use fleetshift_common::schema_baseline::SchemaBaseline;
use fleetshift_common::source::MigrationSet;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::validating::{self, Validating};
use super::window_gate::WindowGate;
use super::wire::{duty_failure, exec_failure, refused};
use super::{BASE, RunRecord, applied_but, duty_step, lost_or_final, retried_on_loss};
use crate::duties::rollback::Triggers;
use crate::duties::{DutyFailure, DutyReport};
use crate::outage::Patience;
use fleetshift_common::baseline::Baselines;
use std::sync::Arc;

/// What an executor is built from, whatever the engine.
pub(super) struct RunParts {
    pub(super) identity: Identity,
    pub(super) settings: ExecutorSettings,
    pub(super) stop: CancellationToken,
    pub(super) events: mpsc::UnboundedSender<ExecutionEvent>,
    /// Asked before each revision applied: the shard's maintenance windows.
    pub(super) gate: Option<Arc<WindowGate>>,
}

/// What watches the revisions: the plan's rollback triggers and where a rollback goes.
pub(super) struct Watch<'a> {
    pub(super) shard_id: &'a str,
    pub(super) triggers: Triggers,
    /// The plan's earlier record of the shard's version before it; empty: what this run finds.
    pub(super) revert_to: &'a str,
    pub(super) report: &'a dyn DutyReport,
}

/// One shard's migration set under one executor identity.
pub(super) struct Moving<'a, E: ShardEngine> {
    pub(super) engine: &'a E,
    pub(super) set: &'a MigrationSet,
    pub(super) parts: &'a RunParts,
    pub(super) validating: Validating<'a>,
    /// What the run waits on between revisions: the plan's thresholds and the fleet throttles.
    pub(super) throttle: &'a dyn Throttle,
    /// A verified schema baseline to seed the shard from when its ledger is empty.
    pub(super) baseline: Option<&'a SchemaBaseline>,
}

/// What moving a shard up works with.
struct Up<'r, 'a, E: ShardEngine> {
    executor: &'r Executor<'a, E>,
    request: &'r Request,
    watch: &'r Watch<'r>,
    timing: &'r Timing<'r>,
    validation: &'r validating::Before,
}

/// Whether the shard's ledger records nothing: a shard a baseline may seed.
fn ledger_empty(status: &executor::ShardStatus) -> bool {
    status.unknown.is_empty() && status.revisions.iter().all(|state| state.status.is_none())
}

/// A run whose revisions left the shard failing its validation: they stand.
fn not_valid(shard_id: &str, invalid: &str) -> ErrorDetail {
    refused(
        ErrorKind::Failed,
        format!(
            "shard {shard_id}: post-migration validation failed: {invalid}; the revisions stand: fix the shard, or revert it with `fleetshift rollback`"
        ),
    )
}

impl<E: ShardEngine> Moving<'_, E> {
    fn executor(&self) -> Executor<'_, E> {
        let executor = Executor::new(
            self.engine,
            self.parts.identity.clone(),
            self.parts.settings,
        )
        .interrupt_when(self.parts.stop.clone())
        .report_to(self.parts.events.clone())
        .verify_data(self.validating.verify_data);
        let executor = match &self.parts.gate {
            Some(gate) => executor.gate(gate.as_ref()),
            None => executor,
        };
        executor.throttle(self.throttle)
    }

    /// Moves the shard, with baselines around the revisions (PostgreSQL), validation after
    /// them, and a rollback when a trigger fires; the shard's version afterwards. Each step
    /// runs again after a loss of the database server, within `patience`'s bound, resuming
    /// from the shard's ledger.
    pub(super) async fn supervised(
        &self,
        direction: Direction,
        request: &Request,
        watch: &Watch<'_>,
        baselines: Option<(Baselines<'_>, &CountedPool)>,
        mut patience: Patience<'_>,
        record: &mut RunRecord,
    ) -> Result<Option<String>, ErrorDetail> {
        let executor = self.executor();
        let mut status = patience
            .persist("reading the ledger", || async {
                executor.status(self.set).await.map_err(lost_or_final)
            })
            .await?;
        if let Some(baseline) = self.baseline
            && direction == Direction::Up
            && ledger_empty(&status)
        {
            // One fenced transaction: interrupted, it left nothing, and the next run seeds
            // again; done, the ledger is no longer empty and the next run only goes on.
            executor
                .seed(self.set, baseline, "a new, empty shard")
                .await
                .map_err(|error| exec_failure(&error))?;
            status = executor
                .status(self.set)
                .await
                .map_err(|error| exec_failure(&error))?;
        }
        record.previous_version = status
            .current_version
            .clone()
            .unwrap_or_else(|| BASE.to_owned());
        let moving = match direction {
            Direction::Up => executor::Direction::Up,
            Direction::Down => executor::Direction::Down,
            // An Order never carries it (checked where the run began).
            Direction::Unspecified => {
                return Err(refused(
                    ErrorKind::BadInput,
                    "the assignment names no direction".to_owned(),
                ));
            }
        };
        let revisions = status
            .revisions_to_run(self.set.for_engine(E::ENGINE), moving, request)
            .map_err(|error| exec_failure(&error))?;
        let validation = self
            .validating
            .before(&revisions, moving, &mut patience)
            .await?;
        if moving == executor::Direction::Down {
            let report = patience
                .persist("reverting revisions", || async {
                    retried_on_loss(executor.down(self.set, request).await)
                })
                .await?
                .map_err(|error| exec_failure(&error))?;
            record.left(&report);
            let validated = self.validating.after(&validation, &mut patience).await?;
            let invalid = record.validated(validated);
            return match invalid {
                Some(invalid) => Err(not_valid(watch.shard_id, &invalid)),
                None => Ok(report.current_version),
            };
        }
        let timing = Timing {
            baselines,
            stop: &self.parts.stop,
            report: watch.report,
        };
        let moving_up = Up {
            executor: &executor,
            request,
            watch,
            timing: &timing,
            validation: &validation,
        };
        self.up(moving_up, patience, record).await
    }

    /// Applies the revisions between the baselines, validates them, and rolls the shard back
    /// when a trigger fires.
    async fn up(
        &self,
        up: Up<'_, '_, E>,
        mut patience: Patience<'_>,
        record: &mut RunRecord,
    ) -> Result<Option<String>, ErrorDetail> {
        let Up {
            executor,
            request,
            watch,
            timing,
            validation,
        } = up;
        let before = timing
            .phase(BaselinePhase::Before, None, &mut patience, duty_failure)
            .await?;
        record.baselines.extend(before.clone());
        let outcome = patience
            .persist("applying revisions", || async {
                retried_on_loss(executor.up(self.set, request).await)
            })
            .await?;
        if let Ok(report) = &outcome {
            record.left(report);
        }
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
        let invalid = match &outcome {
            Ok(_) => {
                let validated = self.validating.after(validation, &mut patience).await?;
                record.validated(validated)
            }
            Err(_) => None,
        };
        let degradation = timing.degradation(after.as_ref());
        let Some(reason) =
            watch
                .triggers
                .reason(&outcome, degradation.as_deref(), invalid.as_deref())
        else {
            let report = outcome.map_err(|error| exec_failure(&error))?;
            return match invalid {
                Some(invalid) => Err(not_valid(watch.shard_id, &invalid)),
                None => Ok(report.current_version),
            };
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
        self.revert(executor, watch, timing, rollback, patience, record)
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
        record.left(&reverted);
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
pub(super) struct Rollback<'a> {
    pub(super) reason: String,
    /// The error kind the shard ends with: the failure's, or FAILED.
    pub(super) cause: ErrorKind,
    pub(super) before: Option<&'a BaselineMeasured>,
}

/// The plan's baselines on this shard, when it has any: each phase is timed, reported and
/// kept in the run's record.
pub(super) struct Timing<'a> {
    pub(super) baselines: Option<(Baselines<'a>, &'a CountedPool)>,
    pub(super) stop: &'a CancellationToken,
    pub(super) report: &'a dyn DutyReport,
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
                let measuring = async {
                    baselines
                        .measure(pool, phase, before, self.stop)
                        .await
                        .map_err(DutyFailure::from)
                }
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

impl RunRecord {
    /// What the run's revisions left: the schema change and the schema itself.
    fn left(&mut self, report: &RunReport) {
        self.schema = report.schema.as_ref().map(|change| SchemaFingerprints {
            before: change.before.to_string(),
            after: change.after.to_string(),
            objects_changed: u32::try_from(change.objects_changed).unwrap_or(u32::MAX),
        });
        self.schema_snapshot = report
            .schema
            .as_ref()
            .map(|change| wire::pack(&change.left))
            .unwrap_or_default();
        self.durations.extend(
            report
                .steps
                .iter()
                .filter(|step| matches!(step.outcome, StepOutcome::Applied | StepOutcome::Resumed))
                .map(|step| RevisionDuration {
                    version: step.version.clone(),
                    duration: prost_types::Duration::try_from(std::time::Duration::from_millis(
                        step.duration_ms,
                    ))
                    .ok(),
                    source: String::new(),
                }),
        );
    }

    /// Keeps the validation report, with the baselines timed after the revisions; its
    /// failures, one line, when it failed.
    fn validated(&mut self, mut report: ValidationReport) -> Option<String> {
        let after = self
            .baselines
            .iter()
            .rev()
            .find(|measured| measured.phase() == BaselinePhase::After);
        if let Some(after) = after {
            report.performance.clone_from(&after.queries);
            report
                .notes
                .extend(
                    after
                        .queries
                        .iter()
                        .filter(|timing| timing.degraded)
                        .map(|timing| {
                            format!(
                                "baseline {} degraded: median {:.2} ms, {:.1}x its median before",
                                timing.name, timing.p50_ms, timing.p50_ratio
                            )
                        }),
                );
        }
        let invalid = (!report.passed).then(|| report.failures.join("; "));
        self.validation = Some(report);
        invalid
    }
}
