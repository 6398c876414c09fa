//! Shard engines: the database-specific half of the fenced protocol.
//!
//! An engine offers a few primitives; the [`crate::executor`] composes every procedure
//! (up, down, resume, adoption) from them, so the safety protocol is written once:
//!
//! - [`ShardEngine::fenced_transaction`]: ONE transaction that sets the timeouts, moves the
//!   fence (`token <= ours`, else fenced out), checks the ledger [`Guard`], runs the body,
//!   writes the ledger records and commits.
//! - [`ShardEngine::run_autocommit`]: one statement outside a transaction, for revisions that
//!   cannot run inside one; index builds are verified in the catalog.
//! - [`ShardEngine::lock_out_other_migrators`]: a lock other migrators respect, taken without
//!   ever blocking inside a transaction.

pub(crate) mod fenced;
pub mod foreign;
mod pool;
mod postgres;
mod scope;
mod sqlite;

use std::future::Future;
use std::time::Duration;

pub use foreign::{ForeignHistory, ForeignTool};
pub use pool::{POOL, PoolSettings};
pub use postgres::{CountedPool, PostgresShard, Tenant};
pub use postgres::{catalog, health, quote_identifier, quote_qualified, restore_sql, server};
pub use scope::ShardScope;
pub use sqlite::SqliteShard;

use crate::error::ExecError;
use crate::fence::FenceToken;
use crate::ledger::{
    AuditRecord, BackfillMark, Guard, GuardViolation, LedgerEntry, LedgerRecord, RevisionStatus,
    VersionFingerprint, Writer,
};
use crate::proto::v1::DataCheck;
use crate::schema::Snapshot;
use crate::secrets::DatabaseUrl;
use crate::source::Engine;
use crate::source::Script;
use crate::statements::Statement;

/// Time limits every shard session runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// How long one statement may wait for a lock before the attempt is retried.
    pub lock_timeout: Duration,
    /// How long one statement may run; larger than `lock_timeout`.
    pub statement_timeout: Duration,
    /// A session idle inside a transaction this long is ended by the server (a paused
    /// migrator must not hold locks forever).
    pub idle_in_transaction: Duration,
    /// The migrator lock lives in its own session, kept busy by a heartbeat; the server ends
    /// that session (releasing the lock) when the heartbeat stops this long — a paused or
    /// frozen migrator cannot keep the shard locked (PostgreSQL 14+).
    pub migrator_lock_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            lock_timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(15 * 60),
            idle_in_transaction: Duration::from_secs(60),
            migrator_lock_idle: Duration::from_secs(30),
        }
    }
}

impl Timeouts {
    /// Refuses settings that would break the lock discipline.
    pub fn validate(&self) -> Result<(), String> {
        if self.lock_timeout.is_zero() {
            return Err(
                "lock timeout must be greater than zero (zero means wait forever)".to_owned(),
            );
        }
        if self.statement_timeout <= self.lock_timeout {
            return Err(format!(
                "statement timeout ({} ms) must be greater than lock timeout ({} ms)",
                self.statement_timeout.as_millis(),
                self.lock_timeout.as_millis()
            ));
        }
        if self.idle_in_transaction.is_zero() {
            return Err("idle-in-transaction timeout must be greater than zero".to_owned());
        }
        if self.migrator_lock_idle < Duration::from_secs(1) {
            return Err("migrator lock idle timeout must be at least 1s".to_owned());
        }
        Ok(())
    }
}

/// The level of sqlx's event for every connection a pool hands out (target
/// `sqlx::pool::acquire`, field `acquired_after_secs`): the agent times acquisitions from them,
/// and logs show them only at `trace`.
pub const ACQUIRE_EVENTS: log::LevelFilter = log::LevelFilter::Trace;

/// The work of one fenced transaction.
#[derive(Debug, Clone, Copy)]
pub struct FencedTransaction<'a> {
    pub guard: &'a Guard,
    pub body: &'a [Statement],
    /// The script the body comes from, to name each statement's place in traces.
    pub script: Option<&'a Script>,
    pub records: &'a [LedgerRecord],
    pub audit: Option<&'a AuditRecord>,
    /// Another tool's version table, rewritten with the ledger.
    pub version_table: Option<&'a VersionTableRows>,
    /// The schema the shard has at the version this transaction leaves it at.
    pub fingerprint: Option<&'a VersionFingerprint>,
    /// How far a backfill job got once this transaction commits.
    pub backfill: Option<&'a BackfillMark>,
    /// Tables whose data the body must leave as it found them: checksummed before it and
    /// after it, in the transaction; a difference fails it (see [`crate::validation`]).
    pub verify_data: &'a [DataCheck],
    /// Told as each body statement starts, for live progress.
    pub on_statement: Option<StatementStarts<'a>>,
    /// The body goes in one round trip with the opening and the records (PostgreSQL without
    /// a tracer or data checks): no statement is timed or reported on its own. For generated
    /// SQL of many statements, such as a schema baseline's.
    pub batched: bool,
}

/// Told the index of each body statement of a fenced transaction as it starts (every attempt
/// starts again from the first).
#[derive(Clone, Copy)]
pub struct StatementStarts<'a>(pub &'a (dyn Fn(usize) + Sync));

impl std::fmt::Debug for StatementStarts<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("StatementStarts")
    }
}

impl<'a> FencedTransaction<'a> {
    /// A transaction that moves the fence and checks `guard`, and does nothing else: no
    /// statements, records, audit entry or fingerprint. Say what it writes with struct update
    /// syntax.
    pub fn guarded(guard: &'a Guard) -> Self {
        Self {
            guard,
            body: &[],
            script: None,
            records: &[],
            audit: None,
            version_table: None,
            fingerprint: None,
            backfill: None,
            verify_data: &[],
            on_statement: None,
            batched: false,
        }
    }

    /// A transaction that only moves the fence.
    pub fn fence_only() -> Self {
        Self::guarded(&UNGUARDED)
    }
}

static UNGUARDED: Guard = Guard {
    expectations: Vec::new(),
};

/// The rows an Alembic version table holds once a transaction commits: its heads among the
/// applied revisions. Kept current so the team's `alembic current` stays true beside
/// fleetshift; written in the same transaction as the ledger, so both always agree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionTableRows {
    /// As Alembic names it (possibly schema-qualified).
    pub table: String,
    pub heads: Vec<String>,
}

/// A statement that failed: its index in the body, or `None` for the engine's own
/// bookkeeping (fence, ledger, catalog checks) or a lone autocommit statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementError {
    pub index: Option<usize>,
    pub sqlstate: Option<String>,
    pub message: String,
    /// The connection went away under the statement (see [`connection_lost`]); the server
    /// rolled back whatever transaction it was in.
    pub connection_lost: bool,
}

impl StatementError {
    /// Worth another attempt: PostgreSQL's lock not available (55P03) or deadlock detected
    /// (40P01); SQLite's busy (5, and its extended codes 261, 517) or locked (6).
    pub fn is_lock_conflict(&self) -> bool {
        matches!(
            self.sqlstate.as_deref(),
            Some("55P03" | "40P01" | "5" | "261" | "517" | "6")
        )
    }
}

/// Why a fenced transaction rolled back.
#[derive(Debug, Clone)]
pub enum TxError {
    FencedOut {
        current: FenceToken,
    },
    Guard(GuardViolation),
    Statement(StatementError),
    Database {
        context: &'static str,
        detail: String,
    },
    /// The body changed data of the plan's `--verify-data` tables; the transaction was rolled
    /// back.
    DataChanged(String),
}

/// The next batch of a backfill job (see [`crate::source::Backfill`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Its last key, as text.
    pub upto: String,
    /// How many keys it covers.
    pub keys: i64,
}

/// What running a statement outside a transaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutocommitOutcome {
    Ran,
    /// A valid index of that name already existed (built by an earlier attempt).
    IndexAlreadyValid,
    /// An INVALID index left by an earlier attempt was dropped and built again.
    InvalidIndexRebuilt,
    /// A partitioned table's index, built partition by partition: `built` partitions' indexes
    /// built now, `attached_before` partitions found attached by an earlier attempt.
    PartitionsIndexed {
        built: usize,
        attached_before: usize,
    },
}

/// The database-specific primitives of the fenced protocol.
pub trait ShardEngine: Send + Sync {
    /// Held while a run works on the shard; keeps other migrators out.
    type MigratorLock: Send;

    /// Which engine this is: it chooses the files of a set whose files differ by engine.
    const ENGINE: Engine;

    /// The shard's name for messages (never contains credentials).
    fn shard(&self) -> &str;

    fn ensure_ledger(&self) -> impl Future<Output = Result<(), ExecError>> + Send;

    /// The history rows, empty when the ledger does not exist yet.
    fn read_ledger(&self) -> impl Future<Output = Result<Vec<LedgerEntry>, ExecError>> + Send;

    fn current_fence(&self) -> impl Future<Output = Result<FenceToken, ExecError>> + Send;

    /// The shard's schema as it stands now, the ledger's own objects left out.
    fn schema_snapshot(&self) -> impl Future<Output = Result<Snapshot, ExecError>> + Send;

    /// Runs `work` in one transaction; once committed, how long each body statement took.
    fn fenced_transaction(
        &self,
        writer: &Writer,
        work: FencedTransaction<'_>,
    ) -> impl Future<Output = Result<Vec<Duration>, TxError>> + Send;

    /// Runs one statement outside any transaction. `resuming` is true when an earlier attempt
    /// of the same revision may have run it already.
    fn run_autocommit(
        &self,
        statement: &Statement,
        resuming: bool,
    ) -> impl Future<Output = Result<AutocommitOutcome, StatementError>> + Send;

    /// A backfill job's mark, `None` before its first batch.
    fn backfill_mark(
        &self,
        version: &str,
    ) -> impl Future<Output = Result<Option<BackfillMark>, ExecError>> + Send;

    /// Runs a backfill's [`crate::source::Backfill::next_batch_query`]: `None` when no key is
    /// left.
    fn next_batch(
        &self,
        query: &str,
    ) -> impl Future<Output = Result<Option<Batch>, StatementError>> + Send;

    /// Whether `column` of `table` leads an index (or is SQLite's rowid), so each batch finds
    /// its keys without reading the whole table; `None` when the table is not found.
    fn key_indexed(
        &self,
        table: &str,
        column: &str,
    ) -> impl Future<Output = Result<Option<bool>, ExecError>> + Send;

    /// Roughly how many rows `table` holds (the planner's statistics where the engine keeps
    /// them), for progress; `None` when unknown.
    fn estimate_rows(&self, table: &str) -> impl Future<Output = Option<i64>> + Send;

    /// Waits up to `wait` for the shard's migration lock, never inside a transaction.
    fn lock_out_other_migrators(
        &self,
        wait: Duration,
    ) -> impl Future<Output = Result<Self::MigratorLock, ExecError>> + Send;

    fn release_migrator_lock(&self, lock: Self::MigratorLock) -> impl Future<Output = ()> + Send;

    /// Histories other migration tools left in this database.
    fn foreign_histories(
        &self,
    ) -> impl Future<Output = Result<Vec<ForeignHistory>, ExecError>> + Send;

    /// The `version_num` rows of an Alembic version table (`table` as Alembic names it);
    /// `None` when the database has no such table.
    fn version_table_rows(
        &self,
        table: &str,
    ) -> impl Future<Output = Result<Option<Vec<String>>, ExecError>> + Send;

    /// Whether the database answers a new connection now (a lost one is not retried until it
    /// does).
    fn probe(&self) -> impl Future<Output = Result<(), ExecError>> + Send;

    /// The locks the server processes running [`ShardEngine::fenced_transaction`]'s and
    /// [`ShardEngine::run_autocommit`]'s statements hold or await now (`AccessExclusiveLock on
    /// public.items`, `waiting for ShareLock on a transaction`), waits and the strongest first.
    /// Best effort, for progress: empty when unknown.
    fn working_locks(&self) -> impl Future<Output = Vec<String>> + Send;

    /// Asks the database to cancel the statements [`ShardEngine::fenced_transaction`] and
    /// [`ShardEngine::run_autocommit`] are running now; each then fails (on PostgreSQL with
    /// `query_canceled`), and a transaction is rolled back whole. Best effort: a failure to
    /// reach the database is logged, and the statement runs on to its end.
    fn interrupt(&self) -> impl Future<Output = ()> + Send;
}

/// The engine a database URL names.
#[derive(Debug)]
pub enum Connected {
    Postgres(Box<PostgresShard>),
    Sqlite(SqliteShard),
}

/// Connects to `url` (`postgres://…` / `postgresql://…` or `sqlite:…`), named in messages by
/// the URL itself (masked).
pub async fn connect(url: &DatabaseUrl, timeouts: Timeouts) -> Result<Connected, ExecError> {
    connect_named(url.masked(), url, timeouts).await
}

/// Connects to `url`, named `name` in every message: a fleet's shard by its id and server
/// (`orders-7 (db-3:5432)`), never by its URL.
pub async fn connect_named(
    name: String,
    url: &DatabaseUrl,
    timeouts: Timeouts,
) -> Result<Connected, ExecError> {
    connect_scoped(name, url, timeouts, ShardScope::Database).await
}

/// [`connect_named`], for the part of the database `scope` says (a schema: PostgreSQL only).
pub async fn connect_scoped(
    name: String,
    url: &DatabaseUrl,
    timeouts: Timeouts,
    scope: ShardScope,
) -> Result<Connected, ExecError> {
    let text = url.expose();
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        let shard = PostgresShard::connect_scoped(name, url, timeouts, scope).await?;
        Ok(Connected::Postgres(Box::new(shard)))
    } else if let Some(schema) = scope.schema_name() {
        Err(ExecError::Unreachable {
            shard: name,
            detail: format!("schema {schema}: a shard that is one schema needs PostgreSQL"),
        })
    } else if text.starts_with("sqlite:") {
        Ok(Connected::Sqlite(
            SqliteShard::connect_named(name, url, timeouts).await?,
        ))
    } else {
        Err(ExecError::Unreachable {
            shard: name,
            detail: "unsupported database URL: expected postgres://… or sqlite:…".to_owned(),
        })
    }
}

/// A database error as an operator should read it: the server's own message, without the
/// line of the server's source code that raised it (which sqlx appends as "at line N" and
/// which reads as a line of a migration file).
#[derive(Debug, Clone, Copy)]
pub struct DatabaseMessage<'a>(pub &'a sqlx::Error);

impl std::fmt::Display for DatabaseMessage<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            sqlx::Error::Database(database_error) => formatter.write_str(database_error.message()),
            other => other.fmt(formatter),
        }
    }
}

/// A failed statement (by its index in the body, if it is one), with its SQLSTATE.
pub(crate) fn statement_error(index: Option<usize>, error: &sqlx::Error) -> StatementError {
    let sqlstate = match error {
        sqlx::Error::Database(database_error) => {
            database_error.code().map(|code| code.into_owned())
        }
        _ => None,
    };
    let message = DatabaseMessage(error).to_string();
    StatementError {
        index,
        sqlstate,
        message,
        connection_lost: connection_lost(error),
    }
}

/// Whether `error` means the connection to the server is gone or cannot be made (the server
/// restarting or shutting down, a failover, a dropped link, a refused connection), as opposed
/// to the server answering about the work itself. Such a failure is transient until proven
/// otherwise: the server rolled back what was in flight, and the work can run again once it
/// answers.
pub fn connection_lost(error: &sqlx::Error) -> bool {
    match error {
        // A certificate the other side refuses is no lost connection: waiting would not mend it.
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) => crate::database_tls::refusal(error).is_none(),
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(database_error) => database_error
            .code()
            .is_some_and(|code| connection_ended(&code)),
        _ => false,
    }
}

/// SQLSTATEs with which the server ends a connection: the connection exception class (08),
/// an administrator's shutdown or termination (57P01), a crash shutdown (57P02), a server not
/// accepting connections yet (57P03), and the idle timeouts (25P03, 57P05).
fn connection_ended(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "57P05" | "25P03")
}

/// `error` in `context` on `shard` as an [`ExecError`]: a lost connection, or what the
/// database said.
pub(crate) fn database_error(shard: &str, context: &str, error: &sqlx::Error) -> ExecError {
    if connection_lost(error) {
        ExecError::ConnectionLost {
            shard: shard.to_owned(),
            during: context.to_owned(),
            detail: DatabaseMessage(error).to_string(),
        }
    } else {
        ExecError::Database {
            shard: shard.to_owned(),
            context: context.to_owned(),
            detail: DatabaseMessage(error).to_string(),
        }
    }
}

/// A bookkeeping failure inside a fenced transaction: lock conflicts stay retryable.
pub(crate) fn bookkeeping_error(context: &'static str) -> impl Fn(sqlx::Error) -> TxError {
    move |error| {
        let failure = statement_error(None, &error);
        if failure.is_lock_conflict() || failure.connection_lost {
            TxError::Statement(failure)
        } else {
            TxError::Database {
                context,
                detail: failure.message,
            }
        }
    }
}

/// A history row as either engine returns it (same column names and types).
pub(crate) fn ledger_entry<R>(row: &R) -> Result<LedgerEntry, sqlx::Error>
where
    R: sqlx::Row,
    for<'n> &'n str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let status_text: String = row.try_get("status")?;
    let status = RevisionStatus::parse(&status_text).ok_or_else(|| {
        sqlx::Error::Decode(format!("unknown ledger status {status_text:?}").into())
    })?;
    Ok(LedgerEntry {
        version: row.try_get("version")?,
        name: row.try_get("name")?,
        checksum: row.try_get("checksum")?,
        status,
        transactional: row.try_get("transactional")?,
        fence_token: FenceToken::from_raw(row.try_get("fence_token")?),
        plan_id: row.try_get("plan_id")?,
        agent_id: row.try_get("agent_id")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        duration_ms: row.try_get("duration_ms")?,
        statements_run: row.try_get("statements_run")?,
        error: row.try_get("error")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gone_server_is_a_lost_connection_and_a_server_answer_is_not() {
        let eof = std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "expected to read 5 bytes, got 0 bytes at EOF",
        );
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        for lost in [
            sqlx::Error::Io(eof),
            sqlx::Error::Io(refused),
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
        ] {
            assert!(connection_lost(&lost), "{lost}");
            assert!(
                database_error("s1", "reading the ledger", &lost).is_connection_lost(),
                "{lost}"
            );
        }
        for answered in [
            sqlx::Error::RowNotFound,
            sqlx::Error::Protocol("unexpected message".to_owned()),
        ] {
            assert!(!connection_lost(&answered), "{answered}");
        }
        for code in [
            "08006", "08001", "57P01", "57P02", "57P03", "57P05", "25P03",
        ] {
            assert!(connection_ended(code), "{code}");
        }
        for code in ["57014", "55P03", "40P01", "42P07", "28P01", "3D000"] {
            assert!(!connection_ended(code), "{code}");
        }
    }

    #[test]
    fn timeouts_that_would_break_the_lock_discipline_are_refused() {
        assert_eq!(Timeouts::default().validate(), Ok(()));
        let equal = Timeouts {
            statement_timeout: Duration::from_secs(2),
            ..Timeouts::default()
        };
        assert!(
            equal
                .validate()
                .expect_err("not greater")
                .contains("must be greater than lock timeout")
        );
        let unbounded = Timeouts {
            lock_timeout: Duration::ZERO,
            ..Timeouts::default()
        };
        assert!(
            unbounded
                .validate()
                .expect_err("zero")
                .contains("wait forever")
        );
        let unleased = Timeouts {
            migrator_lock_idle: Duration::from_millis(500),
            ..Timeouts::default()
        };
        assert!(unleased.validate().is_err());
    }
}
