//! What a run reports as it goes, for live progress (the agent streams these to coordinators),
//! and the executor's side of reporting it.
//! Sent on an unbounded channel and never awaited: reporting cannot slow a migration down.

use std::time::Duration;

use tokio::sync::mpsc;

use super::{Executor, StepOutcome, StepReport};
use crate::engine::{ShardEngine, StatementError};
use crate::source::Revision;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecutionEvent {
    RevisionStarted {
        version: String,
        name: String,
        transactional: bool,
        statements: usize,
    },
    /// A statement is running: once as it starts (`elapsed` zero, no locks), then every
    /// `ExecutorSettings::statement_updates` while it runs.
    StatementRunning {
        version: String,
        location: String,
        /// Its SQL, passwords masked, cut at 1,000 characters.
        text: String,
        elapsed: Duration,
        /// What its server process holds or awaits now (see `ShardEngine::working_locks`).
        locks: Vec<String>,
        /// Inside the revision's transaction: uncommitted until the revision commits.
        in_transaction: bool,
    },
    /// A statement finished: one run outside a transaction as soon as it did, the statements
    /// of a transactional revision once their transaction committed.
    StatementFinished {
        version: String,
        location: String,
        duration: Duration,
    },
    LockRetry {
        version: String,
        /// `path:line` of the statement that waited, when known.
        location: String,
        attempt: usize,
        wait: Duration,
        sqlstate: Option<String>,
    },
    RevisionFinished {
        version: String,
        outcome: StepOutcome,
        duration: Duration,
        statements_run: usize,
        lock_retries: usize,
    },
    /// A backfill job committed a batch.
    BackfillProgress {
        version: String,
        /// Batches and keys done, by this run and earlier ones together.
        batches: i64,
        rows: i64,
        /// The table's rows by the planner's statistics, when known.
        estimated_rows: Option<i64>,
        /// Keys done by this run, and how long it has run: its rate.
        rows_this_run: i64,
        elapsed: Duration,
        /// The longest batch of this run: the longest any batch held its rows' locks.
        longest_batch: Duration,
    },
    /// The run waits for the shard to be less busy before `next` (see [`super::Throttle`]):
    /// once when the wait begins (`waited` zero), once when it ends with the whole wait
    /// (`resumed`, or not when the run gave up waiting).
    Throttled {
        next: String,
        signal: String,
        detail: String,
        waited: Duration,
        resumed: bool,
    },
}

impl<E: ShardEngine> Executor<'_, E> {
    /// Sends progress ([`ExecutionEvent`]) to `events` as the run goes.
    pub fn report_to(mut self, events: mpsc::UnboundedSender<ExecutionEvent>) -> Self {
        self.events = Some(events);
        self
    }

    pub(super) fn emit(&self, event: ExecutionEvent) {
        if let Some(events) = &self.events {
            // Nobody listening any more changes nothing for the run.
            let _ = events.send(event);
        }
    }

    /// A lock conflict about to be retried: logged, and reported as progress.
    pub(super) fn lock_retried(
        &self,
        revision: &Revision,
        location: &str,
        attempt: usize,
        wait: Duration,
        failure: &StatementError,
    ) {
        tracing::warn!(
            shard = %self.engine.shard(),
            revision = %revision.label(),
            %location,
            attempt,
            wait_ms = wait.as_millis() as u64,
            error = %failure.message,
            "lock conflict, retrying after backoff"
        );
        self.emit(ExecutionEvent::LockRetry {
            version: revision.version.to_string(),
            location: location.to_owned(),
            attempt,
            wait,
            sqlstate: failure.sqlstate.clone(),
        });
    }

    pub(super) fn revision_started(&self, revision: &Revision, statements: usize) {
        self.emit(ExecutionEvent::RevisionStarted {
            version: revision.version.to_string(),
            name: revision.name.clone(),
            transactional: revision.transactional,
            statements,
        });
    }

    pub(super) fn revision_finished(&self, report: &StepReport) {
        self.emit(ExecutionEvent::RevisionFinished {
            version: report.version.clone(),
            outcome: report.outcome,
            duration: Duration::from_millis(report.duration_ms),
            statements_run: report.statements_run,
            lock_retries: report.lock_retries,
        });
    }
}
