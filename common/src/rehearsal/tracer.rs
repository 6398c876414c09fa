//! The tracer a rehearsal attaches to its scratch database's engine
//! ([`crate::engine::PostgresShard::traced`]): inside every fenced transaction it reads the
//! catalog before the body and after each statement, on the transaction's own connection, and
//! keeps each statement's [`Effects`]. A statement run outside a transaction is read before
//! and after too; its locks ended with it, so none are recorded.

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Postgres};

use super::catalog_state::CatalogState;
use super::effects::{Effects, Readings};
use crate::engine::fenced::BodyObserver;
use crate::source::Script;
use crate::statements::Statement;

/// One statement as the tracer saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TracedStatement {
    /// Where it stands, `file:line` (or its number in the body).
    pub place: String,
    /// Its line in its script, and its text: with them a rehearsal finds its revision.
    pub line: usize,
    pub sql: String,
    pub elapsed_us: u64,
    pub effects: Effects,
}

/// One transaction, or one statement run outside a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TracedRun {
    pub in_transaction: bool,
    /// The transaction committed (a failed statement rolls everything back).
    pub committed: bool,
    pub statements: Vec<TracedStatement>,
}

/// Collects the runs of one rehearsal, in the order they ran.
#[derive(Debug, Default)]
pub struct Tracer {
    runs: Mutex<Vec<TracedRun>>,
}

impl Tracer {
    /// Watches one fenced transaction's body.
    pub(crate) fn transaction<'t>(
        &'t self,
        body: &'t [Statement],
        script: Option<&'t Script>,
    ) -> TransactionTrace<'t> {
        TransactionTrace {
            tracer: self,
            body,
            script,
            origin: CatalogState::default(),
            last: CatalogState::default(),
            statements: Vec::new(),
        }
    }

    /// Records a statement run outside a transaction, from readings before and after it.
    pub(crate) fn autocommit(
        &self,
        statement: &Statement,
        before: &CatalogState,
        after: &CatalogState,
        elapsed: Duration,
    ) {
        let readings = Readings {
            origin: before,
            before,
            after,
        };
        self.push(TracedRun {
            in_transaction: false,
            committed: true,
            statements: vec![TracedStatement {
                place: format!("line {}", statement.line),
                line: statement.line,
                sql: statement.sql.clone(),
                elapsed_us: micros(elapsed),
                effects: readings.effects(true),
            }],
        });
    }

    /// Every run so far, in order; the tracer keeps nothing.
    pub fn take(&self) -> Vec<TracedRun> {
        std::mem::take(
            &mut *self
                .runs
                .lock()
                .unwrap_or_else(|poison| poison.into_inner()),
        )
    }

    fn push(&self, run: TracedRun) {
        self.runs
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .push(run);
    }
}

/// The tracer inside one fenced transaction.
#[derive(Debug)]
pub(crate) struct TransactionTrace<'t> {
    tracer: &'t Tracer,
    body: &'t [Statement],
    script: Option<&'t Script>,
    origin: CatalogState,
    last: CatalogState,
    statements: Vec<TracedStatement>,
}

impl TransactionTrace<'_> {
    /// Hands the transaction's statements to the tracer, whether it committed or not.
    pub(crate) fn finish(self, committed: bool) {
        self.tracer.push(TracedRun {
            in_transaction: true,
            committed,
            statements: self.statements,
        });
    }
}

impl BodyObserver<Postgres> for TransactionTrace<'_> {
    async fn before_body(&mut self, connection: &mut PgConnection) -> Result<(), sqlx::Error> {
        self.origin = CatalogState::read(connection).await?;
        self.last = self.origin.clone();
        Ok(())
    }

    async fn after_statement(
        &mut self,
        connection: &mut PgConnection,
        index: usize,
        elapsed: Duration,
    ) -> Result<(), sqlx::Error> {
        let after = CatalogState::read(connection).await?;
        let readings = Readings {
            origin: &self.origin,
            before: &self.last,
            after: &after,
        };
        let effects = readings.effects(false);
        if let Some(statement) = self.body.get(index) {
            let place = self.script.map_or_else(
                || format!("statement {}", index + 1),
                |script| script.locate(statement),
            );
            self.statements.push(TracedStatement {
                place,
                line: statement.line,
                sql: statement.sql.clone(),
                elapsed_us: micros(elapsed),
                effects,
            });
        }
        self.last = after;
        Ok(())
    }
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}
