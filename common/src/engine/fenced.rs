//! The fenced transaction's parts, written once for every engine. An engine takes a
//! connection (SQLite: a [`Session`] from its pool; PostgreSQL: its migration session), opens
//! the transaction (its own `BEGIN` and timeouts, the fence
//! and the guard: [`open_checked_by_client`], or PostgreSQL's server-side opening), runs the
//! [`body`] and [`close`]s (the records and `COMMIT`) with its [`LedgerSql`]; anything in
//! between (data checksums) is the engine's own.
//!
//! The ledger's statements travel in simple-protocol batches ([`batch`]), one round trip
//! each, values written as literals ([`literal`]). In READ COMMITTED each statement of a
//! batch still takes its own snapshot, which the guard relies on.

mod literal;
mod session;

pub(crate) use literal::{Dialect, Literal};
pub(crate) use session::Session;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use futures_util::TryStreamExt as _;
use sqlx::{AssertSqlSafe, Database, Decode, Either, Executor, Row as _, Type};
use tracing::Instrument as _;

use super::{FencedTransaction, TxError, VersionTableRows, bookkeeping_error, statement_error};
use crate::fence::FenceToken;
use crate::ledger::{Guard, LedgerRecord, RevisionStatus, Writer};
use crate::source::Script;
use crate::statements::Statement;
use crate::telemetry::traces::{mark_failed, statement_span};
use literal::LiteralError;

/// Where a body statement stands, for its span: `file:line`, or its number in the body when
/// the script is not known.
pub(crate) struct Place<'a> {
    pub script: Option<&'a Script>,
    pub statement: &'a Statement,
    pub index: usize,
}

impl fmt::Display for Place<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.script {
            Some(script) => formatter.write_str(&script.locate(self.statement)),
            None => write!(formatter, "statement {}", self.index + 1),
        }
    }
}

/// Watches a fenced transaction's body from inside it, on its connection: a rehearsal's
/// tracer reads the catalog before the body and after each statement. The protocol runs the
/// same with or without one; `()` watches nothing.
pub(crate) trait BodyObserver<DB: Database>: Send {
    fn before_body(
        &mut self,
        connection: &mut DB::Connection,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

    /// After body statement `index` succeeded in `elapsed`.
    fn after_statement(
        &mut self,
        connection: &mut DB::Connection,
        index: usize,
        elapsed: Duration,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
}

impl<DB: Database> BodyObserver<DB> for () {
    async fn before_body(&mut self, _connection: &mut DB::Connection) -> Result<(), sqlx::Error> {
        Ok(())
    }

    async fn after_statement(
        &mut self,
        _connection: &mut DB::Connection,
        _index: usize,
        _elapsed: Duration,
    ) -> Result<(), sqlx::Error> {
        Ok(())
    }
}

/// The ledger SQL of one database. Parameters are `$n` in every dialect; they are written in
/// as literals of [`LedgerSql::dialect`].
#[derive(Debug)]
pub(crate) struct LedgerSql {
    pub dialect: Dialect,
    pub read_fence: Cow<'static, str>,
    /// The history table, for the guard's `version IN (…)` query.
    pub history_table: Cow<'static, str>,
    /// `$1` version, `$2` name, `$3` checksum, `$4` status, `$5` transactional, `$6` fence
    /// token, `$7` plan id, `$8` agent id, `$9` duration ms, `$10` statements run, `$11` error,
    /// `$12` keep the existing `started_at`.
    pub upsert_history: Cow<'static, str>,
    /// `$1` action, `$2` version, `$3` reason, `$4` agent id, `$5` fence token.
    pub insert_audit: Cow<'static, str>,
    /// `$1` version, `$2` fingerprint: inserts or replaces the version's fingerprint.
    pub upsert_fingerprint: Cow<'static, str>,
    /// `$1` version, `$2` last key, `$3` rows, `$4` batches, `$5` fence token: inserts or
    /// replaces a backfill job's mark.
    pub upsert_backfill: Cow<'static, str>,
    /// `$1` version: a backfill job's mark (`after_key`, `rows_done`, `batches`).
    pub select_backfill: Cow<'static, str>,
}

/// Between two statements of a batch: the line break first, so a statement ending in a `--`
/// comment does not comment the semicolon out.
pub(crate) const SEPARATOR: &str = "\n;\n";

/// One statement of a batch and what it does, to name in an error.
pub(crate) struct Step {
    pub sql: String,
    pub doing: &'static str,
}

impl Step {
    pub(crate) fn new(sql: impl Into<String>, doing: &'static str) -> Self {
        Self {
            sql: sql.into(),
            doing,
        }
    }

    pub(crate) fn rendered(
        sql: &LedgerSql,
        template: &str,
        values: &[Literal<'_>],
        doing: &'static str,
    ) -> Result<Self, TxError> {
        sql.dialect
            .render(template, values)
            .map(|text| Self::new(text, doing))
            .map_err(|error: LiteralError| TxError::Database {
                context: doing,
                detail: error.to_string(),
            })
    }
}

/// Sends `steps` as one batch (one round trip) and returns each statement's rows. An error
/// names what the statement that failed was doing; the statements after it did not run.
pub(crate) async fn batch<DB>(
    connection: &mut DB::Connection,
    steps: &[Step],
) -> Result<Vec<Vec<DB::Row>>, TxError>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    batch_raw::<DB>(connection, steps)
        .await
        .map_err(|(failed, error)| {
            let doing = steps
                .get(failed)
                .or(steps.last())
                .map_or("running the ledger's statements", |step| step.doing);
            bookkeeping_error(doing)(error)
        })
}

/// [`batch`], failing with the index of the statement that failed and the driver's error.
pub(crate) async fn batch_raw<DB>(
    connection: &mut DB::Connection,
    steps: &[Step],
) -> Result<Vec<Vec<DB::Row>>, (usize, sqlx::Error)>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let text: Vec<&str> = steps.iter().map(|step| step.sql.as_str()).collect();
    let mut results: Vec<Vec<DB::Row>> = vec![Vec::new()];
    let mut stream =
        sqlx::raw_sql(AssertSqlSafe(text.join(SEPARATOR))).fetch_many(&mut *connection);
    loop {
        match stream.try_next().await {
            Ok(Some(Either::Left(_))) => results.push(Vec::new()),
            Ok(Some(Either::Right(row))) => {
                if let Some(rows) = results.last_mut() {
                    rows.push(row);
                }
            }
            Ok(None) => break,
            Err(error) => return Err((results.len() - 1, error)),
        }
    }
    results.truncate(steps.len());
    Ok(results)
}

/// Begins the transaction with the engine's `begin` statements, moves the fence with
/// `move_fence` (`$1` = token; moves it only when `token <= $1`, `RETURNING token, <server
/// `; no row: fenced out) and reads the guarded revisions, in one batch, then
/// checks them here. The guard is read by a statement of its own AFTER the fence update:
/// having waited for the fence row, it takes a fresh snapshot (READ COMMITTED takes one per
/// statement, also within a batch) and sees what the previous holder committed. Folding both
/// into one statement would reuse the older snapshot and could let a revision apply twice.
pub(crate) async fn open_checked_by_client<DB>(
    connection: &mut DB::Connection,
    sql: &LedgerSql,
    move_fence: &str,
    begin: Vec<Step>,
    writer: &Writer,
    guard: &Guard,
) -> Result<(), TxError>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> i64: Decode<'q, DB> + Type<DB>,
    for<'q> String: Decode<'q, DB> + Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let mut steps = begin;
    let fence_at = steps.len();
    steps.push(Step::rendered(
        sql,
        move_fence,
        &[Literal::Integer(writer.fence_token.get())],
        "moving the fence",
    )?);
    let guard_at = steps.len();
    let reads_guard = !guard.expectations.is_empty();
    if reads_guard {
        steps.push(guard_read(sql, guard)?);
    }
    let results = batch::<DB>(connection, &steps).await?;
    if results.get(fence_at).is_none_or(Vec::is_empty) {
        return Err(fenced_out::<DB>(connection, sql).await);
    }
    if reads_guard {
        let rows = results.get(guard_at).map_or(&[][..], Vec::as_slice);
        check_guard::<DB>(rows, guard)?;
    }
    Ok(())
}

/// A newer token holds the fence: the error naming it, read now.
pub(crate) async fn fenced_out<DB>(connection: &mut DB::Connection, sql: &LedgerSql) -> TxError
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> i64: Decode<'q, DB> + Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let reading = Step::new(sql.read_fence.as_ref(), "reading the fence");
    let read = match batch::<DB>(connection, std::slice::from_ref(&reading)).await {
        Ok(read) => read,
        Err(error) => return error,
    };
    match read.first().and_then(|rows| rows.first()) {
        Some(row) => match row.try_get::<i64, _>(0) {
            Ok(current) => TxError::FencedOut {
                current: FenceToken::from_raw(current),
            },
            Err(error) => bookkeeping_error(reading.doing)(error),
        },
        None => TxError::Database {
            context: reading.doing,
            detail: "the fence row is missing".to_owned(),
        },
    }
}

/// The statement reading the guarded revisions' statuses.
fn guard_read(sql: &LedgerSql, guard: &Guard) -> Result<Step, TxError> {
    let placeholders: Vec<String> = (1..=guard.expectations.len())
        .map(|n| format!("${n}"))
        .collect();
    let template = format!(
        "SELECT version, status FROM {} WHERE version IN ({})",
        sql.history_table,
        placeholders.join(", ")
    );
    let values: Vec<Literal> = guard
        .expectations
        .iter()
        .map(|(version, _)| Literal::Text(version))
        .collect();
    Step::rendered(sql, &template, &values, "reading the ledger")
}

/// Checks `guard` against the statuses in `rows` (`version`, `status`).
fn check_guard<DB>(rows: &[DB::Row], guard: &Guard) -> Result<(), TxError>
where
    DB: Database,
    for<'q> String: Decode<'q, DB> + Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let reading = bookkeeping_error("reading the ledger");
    let mut observed: HashMap<String, RevisionStatus> = HashMap::new();
    for row in rows {
        let version: String = row.try_get(0).map_err(&reading)?;
        let status: String = row.try_get(1).map_err(&reading)?;
        if let Some(status) = RevisionStatus::parse(&status) {
            observed.insert(version, status);
        }
    }
    guard.check(&observed).map_err(TxError::Guard)
}

/// Reads the guarded revisions' statuses now and checks `guard` against them.
pub(crate) async fn observe_guard<DB>(
    connection: &mut DB::Connection,
    sql: &LedgerSql,
    guard: &Guard,
) -> Result<(), TxError>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> String: Decode<'q, DB> + Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let read = batch::<DB>(connection, &[guard_read(sql, guard)?]).await?;
    let rows = read.first().map_or(&[][..], Vec::as_slice);
    check_guard::<DB>(rows, guard)
}

/// The body of `work`, statement by statement (each timed, each told to `observer`), inside
/// the open transaction.
pub(crate) async fn body<DB>(
    connection: &mut DB::Connection,
    work: &FencedTransaction<'_>,
    observer: &mut impl BodyObserver<DB>,
) -> Result<Vec<Duration>, TxError>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let observing = bookkeeping_error("tracing the revision's statements");
    observer
        .before_body(&mut *connection)
        .await
        .map_err(&observing)?;
    let mut durations = Vec::with_capacity(work.body.len());
    for (index, statement) in work.body.iter().enumerate() {
        if let Some(starts) = work.on_statement {
            (starts.0)(index);
        }
        let started = Instant::now();
        let span = statement_span(&Place {
            script: work.script,
            statement,
            index,
        });
        let ran = sqlx::raw_sql(AssertSqlSafe(statement.sql.as_str()))
            .execute(&mut *connection)
            .instrument(span.clone())
            .await;
        if let Err(error) = ran {
            let failure = statement_error(Some(index), &error);
            mark_failed(&span, &failure.message);
            return Err(TxError::Statement(failure));
        }
        let elapsed = started.elapsed();
        observer
            .after_statement(&mut *connection, index, elapsed)
            .await
            .map_err(&observing)?;
        durations.push(elapsed);
    }
    Ok(durations)
}

/// Writes `work`'s records (history rows, fingerprint, another tool's version table, audit
/// entry) and commits: one batch. A failure leaves the transaction to roll back.
pub(crate) async fn close<DB>(
    connection: &mut DB::Connection,
    sql: &LedgerSql,
    writer: &Writer,
    work: &FencedTransaction<'_>,
) -> Result<(), TxError>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let mut steps = record_steps(sql, writer, work)?;
    steps.push(Step::new("COMMIT", "committing"));
    batch::<DB>(connection, &steps).await.map(drop)
}

/// The statements writing `work`'s records, in order.
pub(crate) fn record_steps(
    sql: &LedgerSql,
    writer: &Writer,
    work: &FencedTransaction<'_>,
) -> Result<Vec<Step>, TxError> {
    let mut steps = Vec::with_capacity(work.records.len() + 4);
    for record in work.records {
        steps.push(Step::rendered(
            sql,
            &sql.upsert_history,
            &history_values(record, writer),
            "recording the revision",
        )?);
    }
    if let Some(recorded) = work.fingerprint {
        steps.push(Step::rendered(
            sql,
            &sql.upsert_fingerprint,
            &[
                Literal::Text(recorded.version.as_str()),
                Literal::Text(recorded.fingerprint.as_str()),
            ],
            "recording the schema fingerprint",
        )?);
    }
    if let Some(mark) = work.backfill {
        steps.push(Step::rendered(
            sql,
            &sql.upsert_backfill,
            &[
                Literal::Text(mark.version.as_str()),
                mark.after.as_deref().into(),
                Literal::Integer(mark.rows),
                Literal::Integer(mark.batches),
                Literal::Integer(writer.fence_token.get()),
            ],
            "recording the backfill's progress",
        )?);
    }
    if let Some(rows) = work.version_table {
        steps.extend(version_table_steps(sql, rows)?);
    }
    if let Some(audit) = work.audit {
        steps.push(Step::rendered(
            sql,
            &sql.insert_audit,
            &[
                Literal::Text(audit.action.as_str()),
                audit.version.as_deref().into(),
                Literal::Text(audit.reason.as_str()),
                Literal::Text(writer.agent_id.as_str()),
                Literal::Integer(writer.fence_token.get()),
            ],
            "recording the audit entry",
        )?);
    }
    Ok(steps)
}

/// The history row's values, in [`LedgerSql::upsert_history`]'s order.
fn history_values<'a>(record: &'a LedgerRecord, writer: &'a Writer) -> [Literal<'a>; 12] {
    [
        Literal::Text(record.version.as_str()),
        Literal::Text(record.name.as_str()),
        Literal::Text(record.checksum.as_str()),
        Literal::Text(record.status.as_str()),
        Literal::Boolean(record.transactional),
        Literal::Integer(writer.fence_token.get()),
        writer.plan_id.as_deref().into(),
        Literal::Text(writer.agent_id.as_str()),
        record.duration_ms.into(),
        Literal::Integer(record.statements_run),
        record.error.as_deref().into(),
        Literal::Boolean(record.keep_started_at),
    ]
}

/// Replaces an Alembic version table's rows with `rows.heads`.
fn version_table_steps(sql: &LedgerSql, rows: &VersionTableRows) -> Result<Vec<Step>, TxError> {
    let doing = "rewriting the Alembic version table";
    let table = rows.table.as_str();
    let mut steps = vec![Step::new(format!("DELETE FROM {table}"), doing)];
    for head in &rows.heads {
        steps.push(Step::rendered(
            sql,
            &format!("INSERT INTO {table} (version_num) VALUES ($1)"),
            &[Literal::Text(head.as_str())],
            doing,
        )?);
    }
    Ok(steps)
}
