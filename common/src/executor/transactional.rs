//! Transactional revisions: up or down as ONE fenced transaction, retried on lock
//! conflicts; a failed up is recorded as failed.

use std::time::{Duration, Instant};

use super::failure::{after_body, describe_tx_error, is_lock_conflict, locate};
use super::retry::Attempts;
use super::{Direction, ExecutionEvent, Executor, StepOutcome, StepReport, step_report};
use crate::engine::{FencedTransaction, ShardEngine, StatementStarts, TxError, VersionTableRows};
use crate::error::{ExecError, StatementFailure};
use crate::ledger::{Expect, Guard, RevisionStatus, Writer};
use crate::source::{Revision, Script};
use crate::statements::Statement;

/// One revision's transaction, as each attempt runs it.
#[derive(Debug, Clone, Copy)]
struct Attempt<'a> {
    revision: &'a Revision,
    script: &'a Script,
    statements: &'a [Statement],
    guard: &'a Guard,
    final_status: RevisionStatus,
    started: Instant,
    version_table: Option<&'a VersionTableRows>,
}

impl<E: ShardEngine> Executor<'_, E> {
    /// Up or down of a transactional revision: ONE fenced transaction, retried on lock
    /// conflicts. `neighbour` is the predecessor (up: must be applied) or the successor
    /// (down: must not be applied).
    pub(super) async fn apply_in_transaction(
        &self,
        revision: &Revision,
        neighbour: Option<&Revision>,
        direction: Direction,
        writer: &Writer,
        version_table: Option<&VersionTableRows>,
    ) -> Result<StepReport, ExecError> {
        let version = revision.version.as_str();
        let (script, this_expect, neighbour_expect, final_status) = match direction {
            Direction::Up => (
                &revision.up,
                Expect::NotApplied,
                Expect::Applied,
                RevisionStatus::Applied,
            ),
            Direction::Down => (
                self.down_script(revision)?,
                Expect::Applied,
                Expect::NotApplied,
                RevisionStatus::Reverted,
            ),
        };
        let statements = script.statements();
        let mut guard = Guard::default().require(version, this_expect);
        if let Some(neighbour) = neighbour {
            guard = guard.require(neighbour.version.as_str(), neighbour_expect);
        }
        let label = revision.label();
        tracing::info!(shard = %self.engine.shard(), revision = %label, direction = ?direction, statements = statements.len(), fence = %writer.fence_token, "running revision in one transaction");
        let started = Instant::now();
        let attempt = Attempt {
            revision,
            script,
            statements,
            guard: &guard,
            final_status,
            started,
            version_table,
        };
        let attempts = self.fenced_with_retries(&attempt, writer).await;
        let lock_retries = attempts.attempts - 1;
        let outcome = match attempts.result {
            Ok(durations) => {
                // Reported once committed: a statement of a rolled-back attempt did not count.
                for (statement, duration) in statements.iter().zip(durations) {
                    self.emit(ExecutionEvent::StatementFinished {
                        version: version.to_owned(),
                        location: script.locate(statement),
                        duration,
                    });
                }
                match direction {
                    Direction::Up => StepOutcome::Applied,
                    Direction::Down => StepOutcome::Reverted,
                }
            }
            Err(TxError::Guard(violation)) if violation.version == version => {
                tracing::info!(shard = %self.engine.shard(), revision = %label, "already done by another run");
                StepOutcome::AlreadyDone
            }
            Err(_) if self.interrupted() => {
                return Err(self.stopped_during(format!(
                    "the end of revision {label} (its transaction was rolled back, so none of its statements took effect)"
                )));
            }
            Err(TxError::Statement(failure))
                if direction == Direction::Up
                    && revision.failure_tolerated
                    && !failure.is_lock_conflict()
                    && !failure.connection_lost =>
            {
                let location = locate(script, statements, &failure);
                let failure = format!("{location}: {}", failure.message);
                // The transaction was rolled back: none of the revision's statements count.
                return self
                    .tolerate(revision, failure, &guard, 0, started, writer)
                    .await;
            }
            Err(error) => {
                return Err(self
                    .fail_transactional(revision, script, statements, direction, error, writer)
                    .await);
            }
        };
        let duration = started.elapsed();
        tracing::info!(shard = %self.engine.shard(), revision = %label, outcome = ?outcome, duration_ms = duration.as_millis() as u64, "revision finished");
        Ok(step_report(
            revision,
            outcome,
            statements.len(),
            duration,
            lock_retries,
        ))
    }

    /// Runs `attempt`'s fenced transaction, again after each lock conflict within the
    /// policy's bound; the durations of its statements when it commits.
    async fn fenced_with_retries(
        &self,
        attempt: &Attempt<'_>,
        writer: &Writer,
    ) -> Attempts<Vec<Duration>, TxError> {
        let Attempt {
            revision,
            script,
            statements,
            guard,
            final_status,
            started,
            version_table,
        } = *attempt;
        let started_statement = |index: usize| {
            if let Some(statement) = statements.get(index) {
                self.statement_started(revision, script, statement, true);
            }
        };
        self.settings
            .lock_retry
            .run(
                is_lock_conflict,
                |error: &TxError, attempt, wait| {
                    if let TxError::Statement(failure) = error {
                        self.lock_retried(
                            revision,
                            &locate(script, statements, failure),
                            attempt,
                            wait,
                            failure,
                        );
                    }
                },
                || {
                    let record = self.record(
                        revision,
                        final_status,
                        false,
                        Some(started.elapsed()),
                        statements.len(),
                        None,
                    );
                    async move {
                        let work = FencedTransaction {
                            on_statement: Some(StatementStarts(&started_statement)),
                            guard,
                            body: statements,
                            script: Some(script),
                            records: std::slice::from_ref(&record),
                            audit: None,
                            version_table,
                            fingerprint: None,
                            backfill: None,
                            verify_data: match final_status {
                                RevisionStatus::Applied => self.verify_data,
                                _ => &[],
                            },
                            batched: false,
                        };
                        self.watched(
                            self.interruptible(self.engine.fenced_transaction(writer, work)),
                        )
                        .await
                    }
                },
            )
            .await
    }

    /// Turns a failed transactional step into an error; a failed `up` is recorded as failed.
    pub(super) async fn fail_transactional(
        &self,
        revision: &Revision,
        script: &Script,
        statements: &[Statement],
        direction: Direction,
        error: TxError,
        writer: &Writer,
    ) -> ExecError {
        let (location, sqlstate, message) = match error {
            TxError::Statement(failure)
                if !failure.is_lock_conflict() && !failure.connection_lost =>
            {
                let location = locate(script, statements, &failure);
                (location, failure.sqlstate, failure.message)
            }
            TxError::DataChanged(message) => (after_body(script), None, message),
            other => return self.step_error(other, revision, script, statements, writer),
        };
        let aftermath = match direction {
            Direction::Up => {
                let record = self.record(revision, RevisionStatus::Failed, false, None, 0, Some(format!("{location}: {message}")));
                let guard = Guard::default().require(revision.version.as_str(), Expect::NotApplied);
                let work = FencedTransaction {
                    records: std::slice::from_ref(&record),
                    ..FencedTransaction::guarded(&guard)
                };
                match self.engine.fenced_transaction(writer, work).await {
                    Ok(_) => "its transaction was rolled back, so none of the revision's statements took effect and the shard stays at the version before it; the revision is recorded as failed\nnext: fix the script and rerun `up`".to_owned(),
                    Err(record_error) => format!("its transaction was rolled back, so none of the revision's statements took effect and the shard stays at the version before it (recording the failure also failed: {})", describe_tx_error(&record_error)),
                }
            }
            Direction::Down => "the revert's transaction was rolled back, so none of the down script's statements took effect and the revision is still applied\nnext: fix the down script and rerun `down`".to_owned(),
        };
        ExecError::StatementFailed(Box::new(StatementFailure {
            shard: self.shard(),
            revision: revision.label(),
            location,
            sqlstate,
            message,
            aftermath,
        }))
    }
}
