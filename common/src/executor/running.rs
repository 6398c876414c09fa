//! The statement running now: reported as it starts, then every
//! [`super::ExecutorSettings::statement_updates`] while it runs with how long it has run and
//! the locks its server process holds or awaits. A long statement is visible while it runs,
//! and one inside a revision's transaction shows as uncommitted until the revision commits or
//! is rolled back.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use super::{ExecutionEvent, Executor};
use crate::engine::ShardEngine;
use crate::secrets::mask_statement;
use crate::source::{Revision, Script};
use crate::statements::Statement;

/// At most this many characters of a statement's text go into its updates.
const TEXT_LIMIT: usize = 1_000;

/// The statement running now, if one is.
#[derive(Debug, Default)]
pub(super) struct Running(Mutex<Option<Current>>);

impl Running {
    fn slot(&self) -> MutexGuard<'_, Option<Current>> {
        // One value replaced whole: a poisoned lock still holds a consistent one.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug, Clone)]
struct Current {
    version: String,
    location: String,
    text: String,
    in_transaction: bool,
    started: Instant,
}

impl Current {
    fn event(&self, elapsed: Duration, locks: Vec<String>) -> ExecutionEvent {
        ExecutionEvent::StatementRunning {
            version: self.version.clone(),
            location: self.location.clone(),
            text: self.text.clone(),
            elapsed,
            locks,
            in_transaction: self.in_transaction,
        }
    }
}

/// `sql` as an update shows it: passwords masked, cut at [`TEXT_LIMIT`] characters.
fn shown(sql: &str) -> String {
    let masked = mask_statement(sql.trim());
    match masked.char_indices().nth(TEXT_LIMIT) {
        Some((cut, _)) => format!("{}…", &masked[..cut]),
        None => masked,
    }
}

impl<E: ShardEngine> Executor<'_, E> {
    /// `statement` of `revision` (from `script`) starts now: reported at once, then by
    /// [`Executor::watched`] while it runs.
    pub(super) fn statement_started(
        &self,
        revision: &Revision,
        script: &Script,
        statement: &Statement,
        in_transaction: bool,
    ) {
        let current = Current {
            version: revision.version.to_string(),
            location: script.locate(statement),
            text: shown(&statement.sql),
            in_transaction,
            started: Instant::now(),
        };
        self.emit(current.event(Duration::ZERO, Vec::new()));
        *self.running.slot() = Some(current);
    }

    /// Runs `work` (statements on the shard), reporting the statement running every
    /// `statement_updates` until `work` ends.
    pub(super) async fn watched<T>(&self, work: impl Future<Output = T>) -> T {
        let every = self.settings.statement_updates;
        // On the heap: the statements' futures are large, and this one is nested in the
        // run's own (a debug build's thread stack would not hold both).
        let mut work = Box::pin(work);
        let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let done = loop {
            tokio::select! {
                biased;
                done = &mut work => break done,
                _ = ticks.tick() => {
                    let Some(current) = self.running.slot().clone() else {
                        continue;
                    };
                    tokio::select! {
                        biased;
                        done = &mut work => break done,
                        locks = self.engine.working_locks() => {
                            self.emit(current.event(current.started.elapsed(), locks));
                        }
                    }
                }
            }
        };
        *self.running.slot() = None;
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_is_shown_masked_and_cut() {
        assert_eq!(
            shown("  ALTER ROLE app PASSWORD 'x';\n"),
            "ALTER ROLE app PASSWORD '****';"
        );
        let long = format!("SELECT '{}'", "é".repeat(2_000));
        let cut = shown(&long);
        assert_eq!(cut.chars().count(), TEXT_LIMIT + 1);
        assert!(cut.ends_with('…'));
    }
}
