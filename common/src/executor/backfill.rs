//! Backfill jobs (see [`crate::source::Backfill`]): a fenced `started` record, then one short
//! fenced transaction per batch of keys that runs the statement on the batch's range and
//! records how far the job got, the throttle asked between batches; then a fenced `applied`
//! record. A job stopped anywhere resumes after the last batch committed: a batch and its mark
//! commit together, so no row is processed twice and none is skipped.

use std::time::{Duration, Instant};

use super::failure::{is_lock_conflict, with_aftermath};
use super::outside_transaction::{Ran, Start};
use super::{ExecutionEvent, Executor, StepOutcome, StepReport, step_report};
use crate::engine::{FencedTransaction, ShardEngine, TxError, VersionTableRows};
use crate::error::{ExecError, StatementFailure};
use crate::ledger::{BackfillMark, Expect, Guard, Writer};
use crate::source::{Backfill, Revision};
use crate::statements::Statement;

/// A backfill job to run: the revision, how it is split, and its one statement.
pub(super) struct Job<'r> {
    pub revision: &'r Revision,
    pub backfill: &'r Backfill,
    pub statement: &'r Statement,
}

/// How often a running job's progress is logged.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// How far this run took a job.
struct Run {
    mark: BackfillMark,
    started: Instant,
    logged: Instant,
    rows_this_run: i64,
    longest_batch: Duration,
    lock_retries: usize,
}

impl<E: ShardEngine> Executor<'_, E> {
    pub(super) async fn apply_backfill(
        &self,
        job: Job<'_>,
        predecessor: Option<&Revision>,
        resuming: bool,
        writer: &Writer,
        version_table: Option<&VersionTableRows>,
    ) -> Result<StepReport, ExecError> {
        let revision = job.revision;
        let version = revision.version.as_str();
        let backfill = job.backfill;
        if self
            .engine
            .key_indexed(&backfill.table, &backfill.key_column())
            .await?
            == Some(false)
        {
            return Err(ExecError::NeedsOperator {
                shard: self.shard(),
                reason: format!(
                    "backfill {} ({}): no index on {} starts with its key {}, so every batch would read the whole table; nothing ran\nnext: index the key (CREATE INDEX CONCURRENTLY … ({}) in a revision before it) or split by a key that is indexed (key=…)",
                    revision.label(),
                    revision.up.locate(job.statement),
                    backfill.table,
                    backfill.key,
                    backfill.key_column()
                ),
            });
        }
        let started = Instant::now();
        // A fresh start forgets the marks of an earlier, reverted application.
        let fresh = BackfillMark {
            version: version.to_owned(),
            ..BackfillMark::default()
        };
        let start = Start {
            revision,
            predecessor,
            resuming,
            backfill: (!resuming).then_some(&fresh),
            statements: std::slice::from_ref(job.statement),
        };
        if let Some(done) = self.record_started(start, writer).await? {
            return Ok(done);
        }
        let mark = match self.engine.backfill_mark(version).await? {
            Some(mark) if resuming => mark,
            _ => fresh,
        };
        tracing::info!(shard = %self.engine.shard(), revision = %revision.label(), table = %job.backfill.table, key = %job.backfill.key, batch = job.backfill.batch, resuming, after = ?mark.after, rows = mark.rows, fence = %writer.fence_token, "running backfill");
        let estimated_rows = self.engine.estimate_rows(&job.backfill.table).await;
        let mut run = Run {
            mark,
            started,
            logged: started,
            rows_this_run: 0,
            longest_batch: Duration::ZERO,
            lock_retries: 0,
        };
        while self
            .next_batch(&job, &mut run, writer, estimated_rows)
            .await?
        {}
        let batches = usize::try_from(run.mark.batches).unwrap_or(usize::MAX);
        let ran = Ran {
            started,
            count: batches,
            statements: std::slice::from_ref(job.statement),
        };
        self.record_applied(revision, ran, writer, version_table)
            .await?;
        let outcome = if resuming {
            StepOutcome::Resumed
        } else {
            StepOutcome::Applied
        };
        tracing::info!(shard = %self.engine.shard(), revision = %revision.label(), rows = run.mark.rows, batches = run.mark.batches, longest_batch_ms = run.longest_batch.as_millis() as u64, duration_ms = started.elapsed().as_millis() as u64, "backfill finished");
        Ok(step_report(
            revision,
            outcome,
            batches,
            started.elapsed(),
            run.lock_retries,
        ))
    }

    /// Runs the job's next batch; `false` when no key is left.
    async fn next_batch(
        &self,
        job: &Job<'_>,
        run: &mut Run,
        writer: &Writer,
        estimated_rows: Option<i64>,
    ) -> Result<bool, ExecError> {
        let revision = job.revision;
        let location = revision.up.locate(job.statement);
        let next = format!(
            "batch {} of backfill {} ({location})",
            run.mark.batches + 1,
            revision.label()
        );
        if run.rows_this_run > 0 {
            self.throttled(&next).await?;
        }
        self.check_stop(&next)?;
        let query = job.backfill.next_batch_query(run.mark.after.as_deref());
        let batch = match self.interruptible(self.engine.next_batch(&query)).await {
            Ok(Some(batch)) => batch,
            Ok(None) => return Ok(false),
            Err(failure) => {
                let error = if self.interrupted() {
                    self.stopped_during(format!("finding {next}"))
                } else if failure.connection_lost {
                    self.connection_lost(&revision.label(), &location, failure)
                } else {
                    ExecError::StatementFailed(Box::new(StatementFailure {
                        shard: self.shard(),
                        revision: revision.label(),
                        location: location.clone(),
                        sqlstate: failure.sqlstate,
                        message: format!(
                            "finding the next batch of keys of {} by {}: {}",
                            job.backfill.table, job.backfill.key, failure.message
                        ),
                        aftermath: String::new(),
                    }))
                };
                return Err(self.stopped_backfill(job, run, error));
            }
        };
        let body = [job
            .backfill
            .statement(job.statement, run.mark.after.as_deref(), &batch.upto)];
        let mark = BackfillMark {
            version: run.mark.version.clone(),
            after: Some(batch.upto),
            rows: run.mark.rows + batch.keys,
            batches: run.mark.batches + 1,
        };
        let guard = Guard::default().require(revision.version.as_str(), Expect::Started);
        let batch_started = Instant::now();
        let attempts = self
            .settings
            .lock_retry
            .run(
                is_lock_conflict,
                |error: &TxError, attempt, wait| {
                    if let TxError::Statement(failure) = error {
                        self.lock_retried(revision, &location, attempt, wait, failure);
                    }
                },
                || {
                    self.interruptible(self.engine.fenced_transaction(
                        writer,
                        FencedTransaction {
                            body: &body,
                            script: Some(&revision.up),
                            backfill: Some(&mark),
                            ..FencedTransaction::guarded(&guard)
                        },
                    ))
                },
            )
            .await;
        run.lock_retries += attempts.attempts - 1;
        if let Err(error) = attempts.result {
            let error = if self.interrupted() {
                self.stopped_during(format!(
                    "{next} (rolled back whole: the next run starts with it)"
                ))
            } else {
                self.step_error(error, revision, &revision.up, &body, writer)
            };
            return Err(self.stopped_backfill(job, run, error));
        }
        run.longest_batch = run.longest_batch.max(batch_started.elapsed());
        run.rows_this_run += batch.keys;
        run.mark = mark;
        if run.logged.elapsed() >= LOG_EVERY {
            run.logged = Instant::now();
            tracing::info!(shard = %self.engine.shard(), revision = %revision.label(), batches = run.mark.batches, rows = run.mark.rows, estimated_rows, after = ?run.mark.after, longest_batch_ms = run.longest_batch.as_millis() as u64, "backfill under way");
        } else {
            tracing::debug!(shard = %self.engine.shard(), revision = %revision.label(), batch = run.mark.batches, rows = run.mark.rows, "backfill batch committed");
        }
        self.emit(ExecutionEvent::BackfillProgress {
            version: revision.version.to_string(),
            batches: run.mark.batches,
            rows: run.mark.rows,
            estimated_rows,
            rows_this_run: run.rows_this_run,
            elapsed: run.started.elapsed(),
            longest_batch: run.longest_batch,
        });
        Ok(true)
    }

    /// A job stopped between batches: its revision stays `started`, and the next run resumes
    /// after the last batch committed.
    fn stopped_backfill(&self, job: &Job<'_>, run: &Run, error: ExecError) -> ExecError {
        let position = match &run.mark.after {
            Some(after) => format!(
                "after {} batches ({} keys, up to {} = {after})",
                run.mark.batches, run.mark.rows, job.backfill.key
            ),
            None => "before its first batch".to_owned(),
        };
        with_aftermath(
            error,
            format!(
                "the backfill stopped {position}; the revision stays `started`\nnext: fix the cause and rerun `up`: the backfill resumes after its last committed batch"
            ),
        )
    }
}
