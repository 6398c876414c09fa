//! Tolerated failures: a revision marked to go on after a failure (Liquibase
//! `failOnError:false`) whose up script fails on a statement is recorded as applied with the
//! failure, in a fenced transaction like any record, and the run goes on. Only a statement the
//! database refused counts: a lock timeout, a lost connection or a stop is a fault of the run,
//! never tolerated.

use std::time::Instant;

use super::{Executor, StepOutcome, StepReport, step_report};
use crate::engine::{FencedTransaction, ShardEngine};
use crate::error::ExecError;
use crate::ledger::{Guard, RevisionStatus, Writer};
use crate::source::Revision;

impl<E: ShardEngine> Executor<'_, E> {
    /// Records `revision` as applied with `failure`; `guard` is the one its own run used
    /// (for a transactional revision: not applied, predecessor applied; outside a
    /// transaction: started). `statements_run`: those that succeeded before the failure.
    pub(super) async fn tolerate(
        &self,
        revision: &Revision,
        failure: String,
        guard: &Guard,
        statements_run: usize,
        started: Instant,
        writer: &Writer,
    ) -> Result<StepReport, ExecError> {
        let label = revision.label();
        tracing::warn!(shard = %self.engine.shard(), revision = %label, %failure, "revision failed; the failure is tolerated (failOnError:false) and the run goes on");
        let message = format!("failure tolerated (failOnError:false): {failure}");
        let record = self.record(
            revision,
            RevisionStatus::Applied,
            !revision.transactional,
            Some(started.elapsed()),
            statements_run,
            Some(message),
        );
        let work = FencedTransaction {
            records: std::slice::from_ref(&record),
            ..FencedTransaction::guarded(guard)
        };
        self.engine
            .fenced_transaction(writer, work)
            .await
            .map_err(|error| {
                self.bookkeeping_error(
                    error,
                    writer,
                    &format!("recording the tolerated failure of revision {label}"),
                )
            })?;
        let mut report = step_report(
            revision,
            StepOutcome::Applied,
            statements_run,
            started.elapsed(),
            0,
        );
        report.tolerated_failure = Some(failure);
        Ok(report)
    }
}
