//! A fenced transaction in as many round trips as its body has statements: `BEGIN` and the
//! opening call (timeouts, fence, guard: see [`super::opening`]) travel with the first body
//! statement, the records and `COMMIT` with the last, each batch as one simple-protocol
//! query; a one-statement revision is one round trip. The server runs a batch in order and
//! stops at its first error, so a refused opening stops the batch before the body. Each
//! statement takes its own snapshot (READ COMMITTED).
//!
//! Every body statement still goes in a batch of its own or with bookkeeping only, so each is
//! timed, reported as running when it is sent, and bounded by `statement_timeout` on its own;
//! a `batched` transaction sends its whole body with the opening and the records instead.

use std::time::{Duration, Instant};

use futures_util::TryStreamExt as _;
use sqlx::postgres::{PgDatabaseError, PgErrorPosition};
use sqlx::{AssertSqlSafe, PgConnection};

use super::ledger_sql::PgLedger;
use super::opening;
use crate::engine::fenced::{Place, SEPARATOR, Step, record_steps};
use crate::engine::{FencedTransaction, TxError, bookkeeping_error, statement_error};
use crate::ledger::Writer;
use crate::telemetry::traces::{mark_failed, statement_span};

/// What a statement of a batch is, to name its failure.
#[derive(Debug, Clone, Copy)]
enum Role {
    Ledger(&'static str),
    Opening,
    Body(usize),
}

/// One round trip: statements and what each is.
#[derive(Debug, Default)]
struct Batch {
    roles: Vec<Role>,
    texts: Vec<String>,
}

impl Batch {
    fn push(&mut self, role: Role, text: String) {
        self.roles.push(role);
        self.texts.push(text);
    }

    /// The body statement this batch carries, if any.
    fn body(&self) -> Option<usize> {
        self.roles.iter().find_map(|role| match role {
            Role::Body(index) => Some(*index),
            _ => None,
        })
    }
}

/// The transaction's batches: the opening (`begin`, the call last) with the first body
/// statement, the middle statements alone, the last statement with the records and `COMMIT`.
fn batches(
    ledger: &PgLedger,
    begin: Vec<Step>,
    writer: &Writer,
    work: &FencedTransaction<'_>,
) -> Result<Vec<Batch>, TxError> {
    let mut first = Batch::default();
    let opening_at = begin.len().saturating_sub(1);
    for (index, step) in begin.into_iter().enumerate() {
        let role = if index == opening_at {
            Role::Opening
        } else {
            Role::Ledger(step.doing)
        };
        first.push(role, step.sql);
    }
    let mut batches = vec![first];
    for (index, statement) in work.body.iter().enumerate() {
        if index > 0 && !work.batched {
            batches.push(Batch::default());
        }
        if let Some(batch) = batches.last_mut() {
            batch.push(Role::Body(index), statement.sql.clone());
        }
    }
    if let Some(last) = batches.last_mut() {
        for step in record_steps(&ledger.sql, writer, work)? {
            last.push(Role::Ledger(step.doing), step.sql);
        }
        last.push(Role::Ledger("committing"), "COMMIT".to_owned());
    }
    Ok(batches)
}

/// Runs `work` on `connection`, opened by `begin`; each body statement's duration.
pub(super) async fn run(
    connection: &mut PgConnection,
    ledger: &PgLedger,
    begin: Vec<Step>,
    writer: &Writer,
    work: &FencedTransaction<'_>,
) -> Result<Vec<Duration>, TxError> {
    let mut durations = Vec::with_capacity(work.body.len());
    for batch in batches(ledger, begin, writer, work)? {
        let statement = batch.body();
        let span = statement.and_then(|index| {
            if let Some(starts) = work.on_statement {
                (starts.0)(index);
            }
            work.body.get(index).map(|text| {
                statement_span(&Place {
                    script: work.script,
                    statement: text,
                    index,
                })
            })
        });
        let started = Instant::now();
        let (completed, failure) = send(connection, &batch).await;
        if statement.is_some() {
            durations.push(started.elapsed());
        }
        let Some(error) = failure else {
            continue;
        };
        let role = parse_failure(&error, &batch)
            .or_else(|| batch.roles.get(completed).copied())
            .unwrap_or(Role::Ledger("running the ledger's statements"));
        return Err(match role {
            Role::Body(index) => {
                let failure = statement_error(Some(index), &error);
                if let Some(span) = &span {
                    mark_failed(span, &failure.message);
                }
                TxError::Statement(failure)
            }
            Role::Opening => opening::refused(connection, ledger, work.guard, error).await,
            Role::Ledger(doing) => bookkeeping_error(doing)(error),
        });
    }
    Ok(durations)
}

/// Sends `batch`; how many of its statements completed, and the error that stopped it.
async fn send(connection: &mut PgConnection, batch: &Batch) -> (usize, Option<sqlx::Error>) {
    let mut completed = 0;
    let text = batch.texts.join(SEPARATOR);
    let mut results = sqlx::raw_sql(AssertSqlSafe(text)).execute_many(&mut *connection);
    loop {
        match results.try_next().await {
            Ok(Some(_)) => completed += 1,
            Ok(None) => return (completed, None),
            Err(error) => return (completed, Some(error)),
        }
    }
}

/// The statement a syntax error points into: the server parses a whole batch before it runs
/// any of it, so such an error comes before the first result, with its position (in
/// characters) in the batch's text.
fn parse_failure(error: &sqlx::Error, batch: &Batch) -> Option<Role> {
    let database = error.as_database_error()?;
    let PgErrorPosition::Original(position) =
        database.try_downcast_ref::<PgDatabaseError>()?.position()?
    else {
        return None;
    };
    let mut end = 0;
    for (index, text) in batch.texts.iter().enumerate() {
        end += text.chars().count() + SEPARATOR.chars().count();
        if position <= end {
            return batch.roles.get(index).copied();
        }
    }
    None
}
