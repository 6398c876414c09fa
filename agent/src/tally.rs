//! What a run did, counted from the executor's events on their way to the coordinator, so a
//! failed run reports its work too.

use std::time::Duration;

use fleetshift_common::executor::{ExecutionEvent, StepOutcome};
use fleetshift_common::proto::v1::ShardMetrics;

#[derive(Debug, Default)]
pub struct RunTally {
    revisions_run: u32,
    statements: u32,
    lock_retries: u32,
    throttled: Duration,
}

impl RunTally {
    pub fn count(&mut self, event: &ExecutionEvent) {
        match event {
            ExecutionEvent::RevisionFinished {
                outcome,
                statements_run,
                ..
            } => {
                if *outcome != StepOutcome::AlreadyDone {
                    self.revisions_run = self.revisions_run.saturating_add(1);
                }
                let statements = u32::try_from(*statements_run).unwrap_or(u32::MAX);
                self.statements = self.statements.saturating_add(statements);
            }
            ExecutionEvent::LockRetry { .. } => {
                self.lock_retries = self.lock_retries.saturating_add(1);
            }
            ExecutionEvent::Throttled { waited, .. } => self.throttled += *waited,
            ExecutionEvent::RevisionStarted { .. }
            | ExecutionEvent::BackfillProgress { .. }
            | ExecutionEvent::StatementRunning { .. }
            | ExecutionEvent::StatementFinished { .. } => {}
        }
    }

    /// The counts, with the run's wall time.
    pub fn metrics(&self, duration: Duration) -> ShardMetrics {
        ShardMetrics {
            revisions_run: self.revisions_run,
            statements: self.statements,
            lock_retries: self.lock_retries,
            duration: prost_types::Duration::try_from(duration).ok(),
            throttled: prost_types::Duration::try_from(self.throttled).ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(outcome: StepOutcome, statements_run: usize) -> ExecutionEvent {
        ExecutionEvent::RevisionFinished {
            version: "1".to_owned(),
            outcome,
            duration: Duration::from_millis(5),
            statements_run,
            lock_retries: 0,
        }
    }

    #[test]
    fn revisions_found_done_are_not_counted_and_every_retry_is() {
        let mut tally = RunTally::default();
        tally.count(&finished(StepOutcome::Applied, 3));
        tally.count(&finished(StepOutcome::AlreadyDone, 0));
        tally.count(&finished(StepOutcome::Resumed, 2));
        tally.count(&ExecutionEvent::LockRetry {
            version: "2".to_owned(),
            location: "2.sql:1".to_owned(),
            attempt: 1,
            wait: Duration::from_millis(100),
            sqlstate: Some("55P03".to_owned()),
        });
        let metrics = tally.metrics(Duration::from_secs(2));
        assert_eq!(
            (
                metrics.revisions_run,
                metrics.statements,
                metrics.lock_retries
            ),
            (2, 5, 1)
        );
        assert_eq!(
            metrics.duration,
            Some(prost_types::Duration {
                seconds: 2,
                nanos: 0
            })
        );
    }
}
