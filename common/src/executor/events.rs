//! What a run reports as it goes, for live progress (the agent streams these to coordinators).
//! Sent on an unbounded channel and never awaited: reporting cannot slow a migration down.

use std::time::Duration;

use super::StepOutcome;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecutionEvent {
    RevisionStarted {
        version: String,
        name: String,
        transactional: bool,
        statements: usize,
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
