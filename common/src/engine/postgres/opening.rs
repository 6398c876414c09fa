//! How a PostgreSQL shard opens a fenced transaction: `BEGIN`, then one call of the ledger's
//! `fleetshift.open_revision_v1`, which sets the transaction's timeouts, moves the fence and
//! checks the guard on the server. The function fails (and with it the rest of a batch) when
//! a newer token holds the fence or the guard does not hold, so nothing after it runs. Inside
//! the function the guard is read by a statement of its own after the fence update: a
//! volatile function takes a fresh snapshot per statement, so having waited for the fence
//! row, the guard sees what the previous holder committed. One planned call instead of
//! several statements parsed each time.

use sqlx::{PgConnection, Postgres};

use super::ledger_sql::PgLedger;
use crate::engine::fenced::{Literal, Step, batch, batch_raw, fenced_out, observe_guard};
use crate::engine::{Timeouts, TxError, bookkeeping_error};
use crate::ledger::{Guard, RevisionStatus, Writer};

/// The SQLSTATE the function raises when a newer token holds the fence.
const FENCED_OUT: &str = "FS001";
/// The SQLSTATE the function raises when the guard does not hold.
const GUARD_FAILED: &str = "FS002";

/// What the call is doing, in errors.
pub(super) const OPENING: &str = "moving the fence";

/// Opens the transaction (one round trip).
pub(super) async fn open(
    connection: &mut PgConnection,
    ledger: &PgLedger,
    timeouts: &Timeouts,
    writer: &Writer,
    guard: &Guard,
) -> Result<(), TxError> {
    let begin = steps(ledger, timeouts, writer, guard)?;
    match batch_raw::<Postgres>(connection, &begin).await {
        Ok(_) => Ok(()),
        Err((failed, error)) if failed + 1 == begin.len() => {
            Err(refused(connection, ledger, guard, error).await)
        }
        Err((failed, error)) => {
            let doing = begin.get(failed).map_or(OPENING, |step| step.doing);
            Err(bookkeeping_error(doing)(error))
        }
    }
}

/// `BEGIN` and the call (last).
pub(super) fn steps(
    ledger: &PgLedger,
    timeouts: &Timeouts,
    writer: &Writer,
    guard: &Guard,
) -> Result<Vec<Step>, TxError> {
    let versions: Vec<Literal> = guard
        .expectations
        .iter()
        .map(|(version, _)| Literal::Text(version))
        .collect();
    let accepted: Vec<String> = guard
        .expectations
        .iter()
        .map(|(_, expect)| {
            let statuses: Vec<&str> = expect
                .allowed()
                .iter()
                .map(|status| status.map_or("none", RevisionStatus::as_str))
                .collect();
            statuses.join(",")
        })
        .collect();
    let accepted: Vec<Literal> = accepted.iter().map(|text| Literal::Text(text)).collect();
    let lock_wait = super::millis(timeouts.lock_timeout);
    let statement_limit = super::millis(timeouts.statement_timeout);
    let idle_limit = super::millis(timeouts.idle_in_transaction);
    let call = Step::rendered(
        &ledger.sql,
        &ledger.open_call,
        &[
            Literal::Integer(writer.fence_token.get()),
            Literal::Array(&versions),
            Literal::Array(&accepted),
            Literal::Text(&lock_wait),
            Literal::Text(&statement_limit),
            Literal::Text(&idle_limit),
        ],
        OPENING,
    )?;
    Ok(vec![Step::new("BEGIN", "beginning a transaction"), call])
}

/// Why the call failed: fenced out (the fence read again), the guard (the guarded revisions
/// read again, to say which and in what state), or the database's own error. The transaction
/// is rolled back first.
pub(super) async fn refused(
    connection: &mut PgConnection,
    ledger: &PgLedger,
    guard: &Guard,
    error: sqlx::Error,
) -> TxError {
    let code = error
        .as_database_error()
        .and_then(|database| database.code().map(|code| code.into_owned()));
    let refusal = match code.as_deref() {
        Some(FENCED_OUT) => Refusal::FencedOut,
        Some(GUARD_FAILED) => Refusal::Guard,
        _ => return bookkeeping_error(OPENING)(error),
    };
    let rollback = [Step::new("ROLLBACK", "rolling back")];
    if let Err(error) = batch::<Postgres>(connection, &rollback).await {
        return error;
    }
    match refusal {
        Refusal::FencedOut => fenced_out::<Postgres>(connection, &ledger.sql).await,
        Refusal::Guard => match observe_guard::<Postgres>(connection, &ledger.sql, guard)
            .await
        {
            Ok(()) => TxError::Database {
                context: "reading the ledger",
                detail: "the ledger guard did not hold, and the ledger changed before it could be read again; run again".to_owned(),
            },
            Err(error) => error,
        },
    }
}

enum Refusal {
    FencedOut,
    Guard,
}
