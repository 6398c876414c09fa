//! The run as the wire carries it: progress events and duty steps sent to the session as they
//! happen, and failures as error details of the kinds the coordinator acts on.

use std::time::Duration;

use fleetshift_common::error::{ErrorKind as ExecErrorKind, ExecError};
use fleetshift_common::executor::{ExecutionEvent, StepOutcome};
use fleetshift_common::proto::v1::progress_event::Event;
use fleetshift_common::proto::v1::{
    BackfillProgress, BaselineMeasured, DatabaseOutage, ErrorDetail, ErrorKind, LockRetry,
    PreflightCheck, ProgressEvent, RevisionFinished, RevisionOutcome, RevisionStarted,
    RollbackStarted, StatementFinished, StatementRunning, Throttled,
};
use tokio::sync::mpsc;

use super::Order;
use crate::duties::backup::Manifest;
use crate::duties::{DutyFailure, DutyReport};

/// Duty steps go to the session as they end.
pub(super) struct DutyProgress<'a> {
    pub(super) order: &'a Order,
    pub(super) progress: &'a mpsc::UnboundedSender<ProgressEvent>,
}

impl DutyReport for DutyProgress<'_> {
    fn check(&self, check: PreflightCheck) {
        if check.passed {
            tracing::info!(shard = %self.order.shard_id, check = %check.name, detail = %check.detail, "pre-flight check passed");
        } else {
            tracing::warn!(shard = %self.order.shard_id, check = %check.name, detail = %check.detail, "pre-flight check failed");
        }
        let _ = self
            .progress
            .send(wrap(self.order, Event::PreflightCheck(check)));
    }

    fn backup(&self, manifest: &Manifest) {
        tracing::info!(shard = %self.order.shard_id, backup = %manifest.backup_id, location = %manifest.location.display(), size_bytes = manifest.size_bytes, sha256 = %manifest.sha256, "verified backup recorded");
        let _ = self
            .progress
            .send(wrap(self.order, Event::BackupFinished(manifest.record())));
    }

    fn baseline(&self, measured: &BaselineMeasured) {
        tracing::info!(shard = %self.order.shard_id, phase = ?measured.phase(), queries = measured.queries.len(), degraded = measured.degraded, "baselines timed");
        let _ = self
            .progress
            .send(wrap(self.order, Event::BaselineMeasured(measured.clone())));
    }

    fn database_outage(&self, outage: &DatabaseOutage) {
        let _ = self
            .progress
            .send(wrap(self.order, Event::DatabaseOutage(outage.clone())));
    }

    fn rollback_started(&self, started: &RollbackStarted) {
        tracing::warn!(shard = %self.order.shard_id, reason = %started.reason, target = %started.target_version, "rolling the shard back");
        let _ = self
            .progress
            .send(wrap(self.order, Event::RollbackStarted(started.clone())));
    }
}

pub(super) fn refused(kind: ErrorKind, message: String) -> ErrorDetail {
    ErrorDetail {
        kind: kind.into(),
        message,
    }
}

pub(super) fn duty_failure(failure: DutyFailure) -> ErrorDetail {
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

/// An event of `order`, stamped now.
pub(super) fn wrap(order: &Order, event: Event) -> ProgressEvent {
    ProgressEvent {
        assignment_id: order.assignment_id.clone(),
        shard_id: order.shard_id.clone(),
        at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
        event: Some(event),
    }
}

/// An executor event as the wire carries it.
pub(super) fn progress_event(order: &Order, event: ExecutionEvent) -> ProgressEvent {
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
        ExecutionEvent::StatementRunning {
            version,
            location,
            text,
            elapsed,
            locks,
            in_transaction,
        } => Event::StatementRunning(StatementRunning {
            version,
            location,
            text,
            elapsed: duration(elapsed),
            locks,
            in_transaction,
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
        ExecutionEvent::BackfillProgress {
            version,
            batches,
            rows,
            estimated_rows,
            rows_this_run,
            elapsed,
            longest_batch,
        } => Event::BackfillProgress(BackfillProgress {
            version,
            batches,
            rows,
            estimated_rows: estimated_rows.unwrap_or_default(),
            rows_this_run,
            elapsed: duration(elapsed),
            longest_batch: duration(longest_batch),
        }),
        ExecutionEvent::Throttled {
            next: _,
            signal,
            detail,
            waited,
            resumed,
        } => Event::Throttled(Throttled {
            signal,
            detail,
            waited: duration(waited),
            resumed,
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
    wrap(order, body)
}

pub(crate) fn exec_failure(error: &ExecError) -> ErrorDetail {
    let kind = match error.kind() {
        ExecErrorKind::BadInput => ErrorKind::BadInput,
        ExecErrorKind::Drift => ErrorKind::Drift,
        ExecErrorKind::FencedOut => ErrorKind::FencedOut,
        ExecErrorKind::LockTimeout => ErrorKind::LockTimeout,
        ExecErrorKind::Unreachable => ErrorKind::Unreachable,
        ExecErrorKind::NeedsOperator => ErrorKind::NeedsOperator,
        ExecErrorKind::Failed => ErrorKind::Failed,
        ExecErrorKind::Stopped => ErrorKind::Stopped,
        ExecErrorKind::OutsideWindow => ErrorKind::OutsideWindow,
    };
    refused(kind, error.to_string())
}
