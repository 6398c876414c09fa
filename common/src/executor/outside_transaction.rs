//! Non-transactional revisions: a fenced `started` record, statements in autocommit (the
//! fence re-read before each, index builds verified), a fenced completion record.

use std::time::Instant;

use tracing::Instrument as _;

use super::ExecutionEvent;
use super::failure::{describe_tx_error, is_lock_conflict, with_aftermath};
use super::{Executor, StepOutcome, StepReport, step_report};
use crate::engine::{
    AutocommitOutcome, FencedTransaction, ShardEngine, StatementError, TxError, VersionTableRows,
};
use crate::error::{ExecError, StatementFailure};
use crate::ledger::{BackfillMark, Expect, Guard, LedgerRecord, RevisionStatus, Writer};
use crate::source::{Revision, Script};
use crate::statements::Statement;
use crate::telemetry::traces::{mark_failed, statement_span};

/// A revision about to run outside one transaction, for [`Executor::record_started`].
pub(super) struct Start<'r> {
    pub revision: &'r Revision,
    pub predecessor: Option<&'r Revision>,
    pub resuming: bool,
    /// A backfill job's mark, written with the record (a fresh start's).
    pub backfill: Option<&'r BackfillMark>,
    /// The statements an error names.
    pub statements: &'r [Statement],
}

/// What a revision run outside one transaction did, for [`Executor::record_applied`].
pub(super) struct Ran<'r> {
    pub started: Instant,
    /// Statements run, or a backfill's batches.
    pub count: usize,
    /// The statements an error names.
    pub statements: &'r [Statement],
}

impl<E: ShardEngine> Executor<'_, E> {
    /// A non-transactional revision: fenced `started` record → statements in autocommit
    /// (fence re-read before each) → fenced `applied` record.
    pub(super) async fn apply_outside_transaction(
        &self,
        revision: &Revision,
        predecessor: Option<&Revision>,
        resuming: bool,
        writer: &Writer,
        version_table: Option<&VersionTableRows>,
    ) -> Result<StepReport, ExecError> {
        let version = revision.version.as_str();
        let label = revision.label();
        let statements = revision.up.statements();
        tracing::info!(shard = %self.engine.shard(), revision = %label, resuming, statements = statements.len(), fence = %writer.fence_token, "running revision outside a transaction");
        let started = Instant::now();
        let start = Start {
            revision,
            predecessor,
            resuming,
            backfill: None,
            statements,
        };
        if let Some(done) = self.record_started(start, writer).await? {
            return Ok(done);
        }
        let mut lock_retries = 0;
        for (index, statement) in statements.iter().enumerate() {
            if index > 0 {
                let next = format!(
                    "{} of revision {}",
                    revision.up.locate(statement),
                    revision.label()
                );
                self.throttled(&next).await?;
            }
            match self
                .run_autocommit_step(revision, &revision.up, statement, resuming, writer)
                .await
            {
                Ok(retries) => lock_retries += retries,
                Err(ExecError::StatementFailed(failure)) if revision.failure_tolerated => {
                    let tolerated = format!("{}: {}", failure.location, failure.message);
                    let guard = Guard::default().require(version, Expect::Started);
                    return self
                        .tolerate(revision, tolerated, &guard, index, started, writer)
                        .await;
                }
                Err(error) => {
                    return Err(self
                        .leave_started(revision, statements, index, error, writer)
                        .await);
                }
            }
        }
        let ran = Ran {
            started,
            count: statements.len(),
            statements,
        };
        self.record_applied(revision, ran, writer, version_table)
            .await?;
        let outcome = if resuming {
            StepOutcome::Resumed
        } else {
            StepOutcome::Applied
        };
        tracing::info!(shard = %self.engine.shard(), revision = %label, outcome = ?outcome, duration_ms = started.elapsed().as_millis() as u64, "revision finished");
        Ok(step_report(
            revision,
            outcome,
            statements.len(),
            started.elapsed(),
            lock_retries,
        ))
    }

    /// Records `start.revision` `started` in a fenced transaction (its predecessor applied, it
    /// not), with a backfill job's fresh mark; the step's report when another run had applied
    /// it already.
    pub(super) async fn record_started(
        &self,
        start: Start<'_>,
        writer: &Writer,
    ) -> Result<Option<StepReport>, ExecError> {
        let Start {
            revision,
            predecessor,
            resuming,
            backfill,
            statements,
        } = start;
        let version = revision.version.as_str();
        let mut guard = Guard::default().require(version, Expect::NotAppliedOrStarted);
        if let Some(predecessor) = predecessor {
            guard = guard.require(predecessor.version.as_str(), Expect::Applied);
        }
        let started = Instant::now();
        let record = self.record(revision, RevisionStatus::Started, resuming, None, 0, None);
        let opened = self
            .fenced_records_with(
                &guard,
                std::slice::from_ref(&record),
                backfill,
                writer,
                revision,
            )
            .await;
        match opened {
            Ok(()) => Ok(None),
            Err(TxError::Guard(violation))
                if violation.version == version
                    && violation.found == Some(RevisionStatus::Applied) =>
            {
                Ok(Some(step_report(
                    revision,
                    StepOutcome::AlreadyDone,
                    0,
                    started.elapsed(),
                    0,
                )))
            }
            Err(error) => Err(self.step_error(error, revision, &revision.up, statements, writer)),
        }
    }

    /// Records `revision`, `started` until now, applied: with its time and how many statements
    /// (or a backfill's batches) ran.
    pub(super) async fn record_applied(
        &self,
        revision: &Revision,
        ran: Ran<'_>,
        writer: &Writer,
        version_table: Option<&VersionTableRows>,
    ) -> Result<(), ExecError> {
        let guard = Guard::default().require(revision.version.as_str(), Expect::Started);
        let done = self.record(
            revision,
            RevisionStatus::Applied,
            true,
            Some(ran.started.elapsed()),
            ran.count,
            None,
        );
        self.fenced_records(
            &guard,
            std::slice::from_ref(&done),
            writer,
            revision,
            version_table,
        )
        .await
        .map_err(|error| self.step_error(error, revision, &revision.up, ran.statements, writer))
    }

    /// Down of a non-transactional revision: fenced check → statements → fenced `reverted`.
    pub(super) async fn revert_outside_transaction(
        &self,
        revision: &Revision,
        successor: Option<&Revision>,
        writer: &Writer,
        version_table: Option<&VersionTableRows>,
    ) -> Result<StepReport, ExecError> {
        let version = revision.version.as_str();
        let script = self.down_script(revision)?;
        let statements = script.statements();
        let mut guard = Guard::default().require(version, Expect::Applied);
        if let Some(successor) = successor {
            guard = guard.require(successor.version.as_str(), Expect::NotApplied);
        }
        let started = Instant::now();
        self.fenced_records(&guard, &[], writer, revision, None)
            .await
            .map_err(|error| self.step_error(error, revision, script, statements, writer))?;
        let mut lock_retries = 0;
        for (index, statement) in statements.iter().enumerate() {
            match self
                .run_autocommit_step(revision, script, statement, true, writer)
                .await
            {
                Ok(retries) => lock_retries += retries,
                Err(error) => {
                    return Err(with_aftermath(
                        error,
                        format!(
                            "the revert ran outside a transaction: {index} of {} statements finished and the revision is still recorded as applied\nnext: fix the down script (statements that already ran must be safe to repeat) and rerun `down`",
                            statements.len()
                        ),
                    ));
                }
            }
        }
        let reverted = self.record(
            revision,
            RevisionStatus::Reverted,
            false,
            Some(started.elapsed()),
            statements.len(),
            None,
        );
        self.fenced_records(
            &guard,
            std::slice::from_ref(&reverted),
            writer,
            revision,
            version_table,
        )
        .await
        .map_err(|error| self.step_error(error, revision, script, statements, writer))?;
        Ok(step_report(
            revision,
            StepOutcome::Reverted,
            statements.len(),
            started.elapsed(),
            lock_retries,
        ))
    }

    pub(super) async fn fenced_records(
        &self,
        guard: &Guard,
        records: &[LedgerRecord],
        writer: &Writer,
        revision: &Revision,
        version_table: Option<&VersionTableRows>,
    ) -> Result<(), TxError> {
        let work = FencedTransaction {
            records,
            version_table,
            ..FencedTransaction::guarded(guard)
        };
        self.fenced_bookkeeping(work, writer, revision).await
    }

    /// [`Self::fenced_records`] that also writes a backfill job's mark.
    pub(super) async fn fenced_records_with(
        &self,
        guard: &Guard,
        records: &[LedgerRecord],
        backfill: Option<&BackfillMark>,
        writer: &Writer,
        revision: &Revision,
    ) -> Result<(), TxError> {
        let work = FencedTransaction {
            records,
            backfill,
            ..FencedTransaction::guarded(guard)
        };
        self.fenced_bookkeeping(work, writer, revision).await
    }

    /// A fenced transaction of bookkeeping only, retried on lock conflicts.
    async fn fenced_bookkeeping(
        &self,
        work: FencedTransaction<'_>,
        writer: &Writer,
        revision: &Revision,
    ) -> Result<(), TxError> {
        self.settings
            .lock_retry
            .run(
                is_lock_conflict,
                |error: &TxError, attempt, wait| {
                    if let TxError::Statement(failure) = error {
                        self.lock_retried(
                            revision,
                            "fleetshift bookkeeping",
                            attempt,
                            wait,
                            failure,
                        );
                    }
                },
                || self.engine.fenced_transaction(writer, work),
            )
            .await
            .result
            .map(drop)
    }

    /// One autocommit statement, after checking the fence; returns the lock retries spent.
    pub(super) async fn run_autocommit_step(
        &self,
        revision: &Revision,
        script: &Script,
        statement: &Statement,
        resuming: bool,
        writer: &Writer,
    ) -> Result<usize, ExecError> {
        self.check_stop(&format!("the statement at {}", script.locate(statement)))?;
        let current = self.engine.current_fence().await?;
        if current > writer.fence_token {
            return Err(ExecError::FencedOut {
                shard: self.shard(),
                ours: writer.fence_token,
                current,
            });
        }
        let label = revision.label();
        let location = script.locate(statement);
        let started = Instant::now();
        let span = statement_span(&location);
        self.statement_started(revision, script, statement, false);
        let attempts = self
            .settings
            .lock_retry
            .run(
                StatementError::is_lock_conflict,
                |failure, attempt, wait| {
                    self.lock_retried(revision, &location, attempt, wait, failure)
                },
                || {
                    self.watched(
                        self.interruptible(self.engine.run_autocommit(statement, resuming)),
                    )
                },
            )
            .instrument(span.clone())
            .await;
        if let Err(failure) = &attempts.result {
            mark_failed(&span, &failure.message);
        }
        match attempts.result {
            Err(_) if self.interrupted() => Err(self.stopped_during(format!(
                "the end of the statement at {location} (outside a transaction: the revision stays `started` and the next run resumes it)"
            ))),
            Ok(outcome) => {
                match outcome {
                    AutocommitOutcome::Ran => {}
                    AutocommitOutcome::IndexAlreadyValid => {
                        tracing::info!(shard = %self.engine.shard(), %location, "index already built and valid, statement skipped")
                    }
                    AutocommitOutcome::InvalidIndexRebuilt => {
                        tracing::warn!(shard = %self.engine.shard(), %location, "invalid index from an earlier attempt dropped and rebuilt")
                    }
                    AutocommitOutcome::PartitionsIndexed {
                        built,
                        attached_before,
                    } => {
                        tracing::info!(shard = %self.engine.shard(), %location, built, attached_before, "partitioned table's index built partition by partition")
                    }
                }
                tracing::debug!(shard = %self.engine.shard(), %location, duration_ms = started.elapsed().as_millis() as u64, "statement finished");
                self.emit(ExecutionEvent::StatementFinished {
                    version: revision.version.to_string(),
                    location,
                    duration: started.elapsed(),
                });
                Ok(attempts.attempts - 1)
            }
            Err(failure) if failure.connection_lost => {
                Err(self.connection_lost(&label, &location, failure))
            }
            Err(failure) if failure.is_lock_conflict() => Err(ExecError::LockTimeoutExhausted {
                shard: self.shard(),
                revision: label,
                location,
                attempts: attempts.attempts,
                detail: format!(
                    "lock_timeout {} ms per attempt; last error: {}",
                    self.settings.lock_timeout.as_millis(),
                    failure.message
                ),
            }),
            Err(failure) => Err(ExecError::StatementFailed(Box::new(StatementFailure {
                shard: self.shard(),
                revision: label,
                location,
                sqlstate: failure.sqlstate,
                message: failure.message,
                aftermath: String::new(),
            }))),
        }
    }

    /// A non-transactional revision stopped at `index`: the row stays `started`, with the error.
    pub(super) async fn leave_started(
        &self,
        revision: &Revision,
        statements: &[Statement],
        index: usize,
        error: ExecError,
        writer: &Writer,
    ) -> ExecError {
        if error.is_connection_lost() {
            // The server is gone: there is nothing to record on, and the row stays `started`
            // for the next run to resume.
            return error;
        }
        let message = error.to_string();
        let record = self.record(
            revision,
            RevisionStatus::Started,
            true,
            None,
            index,
            Some(message.clone()),
        );
        let guard = Guard::default().require(revision.version.as_str(), Expect::Started);
        if let Err(record_error) = self
            .fenced_records(
                &guard,
                std::slice::from_ref(&record),
                writer,
                revision,
                None,
            )
            .await
        {
            tracing::warn!(shard = %self.engine.shard(), error = %describe_tx_error(&record_error), "could not record the error on the started revision");
        }
        let aftermath = format!(
            "the revision ran outside a transaction and is left `started` ({index} of {} statements finished)\nnext: fix the cause and rerun `up`: index builds are verified in the catalog (INVALID ones dropped and rebuilt) and repeatable statements run again",
            statements.len()
        );
        with_aftermath(error, aftermath)
    }
}
