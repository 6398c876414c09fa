//! The fenced transaction, written once for every engine. An engine opens the transaction
//! (with its own BEGIN and timeouts), hands it here with its [`LedgerSql`], and commits.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use sqlx::{AssertSqlSafe, Database, Decode, Encode, Executor, IntoArguments, Type};
use tracing::Instrument as _;

use super::{FencedTransaction, TxError, VersionTableRows, bookkeeping_error, statement_error};
use crate::fence::FenceToken;
use crate::ledger::{Guard, LedgerRecord, RevisionStatus, Writer};
use crate::source::Script;
use crate::statements::Statement;
use crate::telemetry::traces::{mark_failed, statement_span};

/// Where a body statement stands, for its span: `file:line`, or its number in the body when
/// the script is not known.
struct Place<'a> {
    script: Option<&'a Script>,
    statement: &'a Statement,
    index: usize,
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

/// The ledger SQL of one database. Parameters are `$n` in every dialect.
#[derive(Debug)]
pub(crate) struct LedgerSql {
    /// `$1` = token; moves the fence only when `token <= $1`, `RETURNING token` (no row:
    /// fenced out).
    pub move_fence: &'static str,
    pub read_fence: &'static str,
    /// The history table, for the guard's `version IN (…)` query.
    pub history_table: &'static str,
    /// `$1` version, `$2` name, `$3` checksum, `$4` status, `$5` transactional, `$6` fence
    /// token, `$7` plan id, `$8` agent id, `$9` duration ms, `$10` statements run, `$11` error,
    /// `$12` keep the existing `started_at`.
    pub upsert_history: &'static str,
    /// `$1` action, `$2` version, `$3` reason, `$4` agent id, `$5` fence token.
    pub insert_audit: &'static str,
    /// `$1` version, `$2` fingerprint: inserts or replaces the version's fingerprint.
    pub upsert_fingerprint: &'static str,
}

/// Moves the fence, checks the guard, runs the body (timing each statement), writes the
/// records — inside the caller's open transaction. The guard is read by a statement of its own
/// AFTER the fence update: having waited for the fence row, it takes a fresh snapshot and sees
/// what the previous holder committed. Folding both into one statement would reuse the older snapshot
/// and could let a revision apply twice.
pub(crate) async fn run<DB>(
    connection: &mut DB::Connection,
    sql: &LedgerSql,
    writer: &Writer,
    work: FencedTransaction<'_>,
    observer: &mut impl BodyObserver<DB>,
) -> Result<Vec<Duration>, TxError>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let moved: Option<i64> = sqlx::query_scalar::<DB, i64>(sql.move_fence)
        .bind(writer.fence_token.get())
        .fetch_optional(&mut *connection)
        .await
        .map_err(bookkeeping_error("moving the fence"))?;
    if moved.is_none() {
        let current: i64 = sqlx::query_scalar::<DB, i64>(sql.read_fence)
            .fetch_one(&mut *connection)
            .await
            .map_err(bookkeeping_error("reading the fence"))?;
        return Err(TxError::FencedOut {
            current: FenceToken::from_raw(current),
        });
    }
    check_guard::<DB>(connection, sql, work.guard).await?;
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
    for record in work.records {
        upsert(record, writer, sql.upsert_history)
            .execute(&mut *connection)
            .await
            .map_err(bookkeeping_error("recording the revision"))?;
    }
    if let Some(recorded) = work.fingerprint {
        sqlx::query::<DB>(sql.upsert_fingerprint)
            .bind(recorded.version.as_str())
            .bind(recorded.fingerprint.as_str())
            .execute(&mut *connection)
            .await
            .map_err(bookkeeping_error("recording the schema fingerprint"))?;
    }
    if let Some(rows) = work.version_table {
        rewrite_version_table::<DB>(connection, rows).await?;
    }
    if let Some(audit) = work.audit {
        sqlx::query::<DB>(sql.insert_audit)
            .bind(audit.action.as_str())
            .bind(audit.version.as_deref())
            .bind(audit.reason.as_str())
            .bind(writer.agent_id.as_str())
            .bind(writer.fence_token.get())
            .execute(&mut *connection)
            .await
            .map_err(bookkeeping_error("recording the audit entry"))?;
    }
    Ok(durations)
}

/// Reads the guarded versions' statuses in the transaction and checks the guard.
async fn check_guard<DB>(
    connection: &mut DB::Connection,
    sql: &LedgerSql,
    guard: &Guard,
) -> Result<(), TxError>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let versions = guard.versions();
    if !versions.is_empty() {
        let placeholders: Vec<String> = (1..=versions.len()).map(|n| format!("${n}")).collect();
        let query_text = format!(
            "SELECT version, status FROM {} WHERE version IN ({})",
            sql.history_table,
            placeholders.join(", ")
        );
        let mut query = sqlx::query_as::<DB, (String, String)>(AssertSqlSafe(query_text));
        for version in &versions {
            query = query.bind(version.as_str());
        }
        let rows = query
            .fetch_all(&mut *connection)
            .await
            .map_err(bookkeeping_error("reading the ledger"))?;
        let observed: HashMap<String, RevisionStatus> = rows
            .into_iter()
            .filter_map(|(version, status)| Some((version, RevisionStatus::parse(&status)?)))
            .collect();
        guard.check(&observed).map_err(TxError::Guard)?;
    }
    Ok(())
}

/// Replaces an Alembic version table's rows with `rows.heads`.
async fn rewrite_version_table<DB>(
    connection: &mut DB::Connection,
    rows: &VersionTableRows,
) -> Result<(), TxError>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
{
    let table = rows.table.as_str();
    sqlx::query::<DB>(AssertSqlSafe(format!("DELETE FROM {table}")))
        .execute(&mut *connection)
        .await
        .map_err(bookkeeping_error("rewriting the Alembic version table"))?;
    for head in &rows.heads {
        sqlx::query::<DB>(AssertSqlSafe(format!(
            "INSERT INTO {table} (version_num) VALUES ($1)"
        )))
        .bind(head.as_str())
        .execute(&mut *connection)
        .await
        .map_err(bookkeeping_error("rewriting the Alembic version table"))?;
    }
    Ok(())
}

fn upsert<'q, DB>(
    record: &'q LedgerRecord,
    writer: &'q Writer,
    sql: &'static str,
) -> sqlx::query::Query<'q, DB, DB::Arguments>
where
    DB: Database,
    for<'e> i64: Encode<'e, DB> + Type<DB>,
    for<'e> bool: Encode<'e, DB> + Type<DB>,
    for<'e> &'e str: Encode<'e, DB> + Type<DB>,
    for<'e> Option<&'e str>: Encode<'e, DB> + Type<DB>,
    for<'e> Option<i64>: Encode<'e, DB> + Type<DB>,
{
    sqlx::query::<DB>(sql)
        .bind(record.version.as_str())
        .bind(record.name.as_str())
        .bind(record.checksum.as_str())
        .bind(record.status.as_str())
        .bind(record.transactional)
        .bind(writer.fence_token.get())
        .bind(writer.plan_id.as_deref())
        .bind(writer.agent_id.as_str())
        .bind(record.duration_ms)
        .bind(record.statements_run)
        .bind(record.error.as_deref())
        .bind(record.keep_started_at)
}
