//! SQLite shards: ledger in `fleetshift_*` tables; every fenced transaction is
//! `BEGIN IMMEDIATE`, which takes SQLite's one write lock up front, and `busy_timeout`
//! bounds how long it waits for it. SQLite has no statement timeout; index builds need no
//! catalog verification (they are atomic).

use crate::validation;
use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use sqlx::Sqlite;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, ConnectOptions};

use super::fenced::{self, Dialect, LedgerSql, Session, Step};
use super::foreign::{self, ForeignApplied, ForeignHistory, ForeignTool};
use super::{
    AutocommitOutcome, Batch, DatabaseMessage, FencedTransaction, ShardEngine, StatementError,
    Timeouts, TxError, bookkeeping_error, ledger_entry, statement_error,
};
use crate::error::ExecError;
use crate::fence::FenceToken;
use crate::ledger::{BackfillMark, LedgerEntry, Writer};
use crate::schema::{self, Snapshot};
use crate::secrets::DatabaseUrl;
use crate::source::Engine;
use crate::statements::Statement;

const CREATE_LEDGER: &str = "
CREATE TABLE IF NOT EXISTS fleetshift_fence (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    token INTEGER NOT NULL
);
INSERT OR IGNORE INTO fleetshift_fence (singleton, token) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS fleetshift_history (
    version TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    checksum TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('started', 'applied', 'failed', 'reverted')),
    transactional INTEGER NOT NULL,
    fence_token INTEGER NOT NULL,
    plan_id TEXT,
    agent_id TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    duration_ms INTEGER,
    statements_run INTEGER NOT NULL DEFAULT 0,
    error TEXT
);
CREATE TABLE IF NOT EXISTS fleetshift_fingerprints (
    version TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    recorded_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE TABLE IF NOT EXISTS fleetshift_backfills (
    version TEXT PRIMARY KEY,
    after_key TEXT,
    rows_done INTEGER NOT NULL,
    batches INTEGER NOT NULL,
    fence_token INTEGER NOT NULL,
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE TABLE IF NOT EXISTS fleetshift_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    action TEXT NOT NULL,
    version TEXT,
    reason TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    fence_token INTEGER NOT NULL
);
";

/// Moves the fence (`$1` = token); no row: a newer token holds it.
const MOVE_FENCE: &str = "UPDATE fleetshift_fence SET token = $1 WHERE token <= $1 RETURNING token";

const LEDGER: LedgerSql = LedgerSql {
    dialect: Dialect::Sqlite,
    read_fence: Cow::Borrowed("SELECT token FROM fleetshift_fence"),
    history_table: Cow::Borrowed("fleetshift_history"),
    upsert_history: Cow::Borrowed("INSERT INTO fleetshift_history
            (version, name, checksum, status, transactional, fence_token, plan_id, agent_id,
             started_at, finished_at, duration_ms, statements_run, error)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
                 CASE WHEN $4 = 'started' THEN NULL ELSE strftime('%Y-%m-%dT%H:%M:%fZ', 'now') END,
                 $9, $10, $11)
         ON CONFLICT (version) DO UPDATE SET
            name = excluded.name, checksum = excluded.checksum, status = excluded.status,
            transactional = excluded.transactional, fence_token = excluded.fence_token,
            plan_id = excluded.plan_id, agent_id = excluded.agent_id,
            started_at = CASE WHEN $12 THEN fleetshift_history.started_at ELSE excluded.started_at END,
            finished_at = excluded.finished_at, duration_ms = excluded.duration_ms,
            statements_run = excluded.statements_run, error = excluded.error"),
    insert_audit: Cow::Borrowed("INSERT INTO fleetshift_audit (action, version, reason, agent_id, fence_token)
         VALUES ($1, $2, $3, $4, $5)"),
    upsert_fingerprint: Cow::Borrowed("INSERT INTO fleetshift_fingerprints (version, fingerprint) VALUES ($1, $2)
         ON CONFLICT (version) DO UPDATE SET fingerprint = excluded.fingerprint,
            recorded_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"),
    upsert_backfill: Cow::Borrowed("INSERT INTO fleetshift_backfills (version, after_key, rows_done, batches, fence_token)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (version) DO UPDATE SET after_key = excluded.after_key,
            rows_done = excluded.rows_done, batches = excluded.batches,
            fence_token = excluded.fence_token,
            updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"),
    select_backfill: Cow::Borrowed("SELECT after_key, rows_done, batches FROM fleetshift_backfills WHERE version = $1"),
};

#[derive(Debug)]
pub struct SqliteShard {
    name: String,
    pool: SqlitePool,
}

impl SqliteShard {
    /// Connects to `url`, named in messages by the URL itself (masked).
    pub async fn connect(url: &DatabaseUrl, timeouts: Timeouts) -> Result<Self, ExecError> {
        Self::connect_named(url.masked(), url, timeouts).await
    }

    /// Connects to `url`, named `name` in every message.
    pub async fn connect_named(
        name: String,
        url: &DatabaseUrl,
        timeouts: Timeouts,
    ) -> Result<Self, ExecError> {
        let unreachable = |detail: String| ExecError::Unreachable {
            shard: name.clone(),
            detail,
        };
        let options = SqliteConnectOptions::from_str(url.expose())
            .map_err(|error| unreachable(format!("invalid database URL: {error}")))?
            .create_if_missing(true)
            .busy_timeout(timeouts.lock_timeout)
            .disable_statement_logging();
        // One connection: SQLite has one writer, and the ledger must see its own writes.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .acquire_time_level(super::ACQUIRE_EVENTS)
            .connect_with(options)
            .await
            .map_err(|error| unreachable(error.to_string()))?;
        Ok(Self { name, pool })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    fn database_error(&self, context: &str) -> impl Fn(sqlx::Error) -> ExecError + '_ {
        let context = context.to_owned();
        move |error| ExecError::Database {
            shard: self.name.clone(),
            context: context.clone(),
            detail: DatabaseMessage(&error).to_string(),
        }
    }

    async fn table_exists(&self, table: &str) -> Result<bool, ExecError> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
        )
        .bind(table)
        .fetch_one(&self.pool)
        .await
        .map_err(self.database_error("reading the catalog"))
    }
}

impl ShardEngine for SqliteShard {
    /// SQLite's single write lock, taken by every `BEGIN IMMEDIATE`, already keeps other
    /// migrators out of each transaction.
    type MigratorLock = ();

    const ENGINE: Engine = Engine::Sqlite;

    fn shard(&self) -> &str {
        &self.name
    }

    async fn ensure_ledger(&self) -> Result<(), ExecError> {
        sqlx::raw_sql(CREATE_LEDGER)
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(self.database_error("creating the ledger"))
    }

    async fn read_ledger(&self) -> Result<Vec<LedgerEntry>, ExecError> {
        if !self.table_exists("fleetshift_history").await? {
            return Ok(Vec::new());
        }
        let rows = sqlx::query("SELECT * FROM fleetshift_history")
            .fetch_all(&self.pool)
            .await
            .map_err(self.database_error("reading the ledger"))?;
        rows.iter()
            .map(|row| ledger_entry(row).map_err(self.database_error("reading the ledger")))
            .collect()
    }

    async fn current_fence(&self) -> Result<FenceToken, ExecError> {
        sqlx::query_scalar("SELECT token FROM fleetshift_fence")
            .fetch_one(&self.pool)
            .await
            .map(FenceToken::from_raw)
            .map_err(self.database_error("reading the fence"))
    }

    async fn schema_snapshot(&self) -> Result<Snapshot, ExecError> {
        let reading = self.database_error("reading the schema");
        let mut connection = self.pool.acquire().await.map_err(&reading)?;
        schema::sqlite::read(&mut connection)
            .await
            .map_err(&reading)
    }

    async fn fenced_transaction(
        &self,
        writer: &Writer,
        work: FencedTransaction<'_>,
    ) -> Result<Vec<Duration>, TxError> {
        let connection = self
            .pool
            .acquire()
            .await
            .map_err(bookkeeping_error("beginning a transaction"))?;
        let mut session = Session::new(connection);
        let ran = in_session(&mut session, writer, &work).await;
        match &ran {
            Ok(_) => session.committed(),
            Err(_) => session.roll_back().await,
        }
        ran
    }

    async fn run_autocommit(
        &self,
        statement: &Statement,
        _resuming: bool,
    ) -> Result<AutocommitOutcome, StatementError> {
        sqlx::raw_sql(AssertSqlSafe(statement.sql.as_str()))
            .execute(&self.pool)
            .await
            .map(|_| AutocommitOutcome::Ran)
            .map_err(|error| statement_error(None, &error))
    }

    async fn backfill_mark(&self, version: &str) -> Result<Option<BackfillMark>, ExecError> {
        let row: Option<(Option<String>, i64, i64)> =
            sqlx::query_as(AssertSqlSafe(LEDGER.select_backfill.to_string()))
                .bind(version)
                .fetch_optional(&self.pool)
                .await
                .map_err(self.database_error("reading the backfill's progress"))?;
        Ok(row.map(|(after, rows, batches)| BackfillMark {
            version: version.to_owned(),
            after,
            rows,
            batches,
        }))
    }

    async fn next_batch(&self, query: &str) -> Result<Option<Batch>, StatementError> {
        let row: Option<(String, i64)> = sqlx::query_as(AssertSqlSafe(query.to_owned()))
            .fetch_optional(&self.pool)
            .await
            .map_err(|error| statement_error(None, &error))?;
        Ok(row.map(|(upto, keys)| Batch { upto, keys }))
    }

    /// The rowid (an `INTEGER PRIMARY KEY`) or the first column of one of the table's indexes.
    async fn key_indexed(&self, table: &str, column: &str) -> Result<Option<bool>, ExecError> {
        if !self.table_exists(table).await? {
            return Ok(None);
        }
        let indexed: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pragma_table_info($1)
                            WHERE name = $2 COLLATE NOCASE AND pk = 1
                              AND upper(type) = 'INTEGER'
                              AND (SELECT count(*) FROM pragma_table_info($1) WHERE pk > 0) = 1)
                 OR EXISTS (SELECT 1 FROM pragma_index_list($1) AS l
                            JOIN pragma_index_info(l.name) AS c
                            WHERE c.seqno = 0 AND c.name = $2 COLLATE NOCASE)",
        )
        .bind(table)
        .bind(column)
        .fetch_one(&self.pool)
        .await
        .map_err(self.database_error("checking the backfill key's index"))?;
        Ok(Some(indexed))
    }

    /// SQLite keeps no row statistics: the table is counted.
    async fn estimate_rows(&self, table: &str) -> Option<i64> {
        sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&self.pool)
            .await
            .ok()
    }

    async fn lock_out_other_migrators(&self, _wait: Duration) -> Result<(), ExecError> {
        Ok(())
    }

    async fn release_migrator_lock(&self, _lock: ()) {}

    async fn version_table_rows(&self, table: &str) -> Result<Option<Vec<String>>, ExecError> {
        if !self.table_exists(table).await? {
            return Ok(None);
        }
        let rows = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT CAST(version_num AS TEXT) FROM {table} ORDER BY 1"
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(self.database_error("reading the Alembic version table"))?;
        Ok(Some(rows))
    }

    async fn foreign_histories(&self) -> Result<Vec<ForeignHistory>, ExecError> {
        let failed = self.database_error("reading another tool's history");
        let mut histories = Vec::new();
        if self.table_exists("_sqlx_migrations").await? {
            let rows = sqlx::query_as(
                "SELECT version, checksum FROM _sqlx_migrations WHERE success ORDER BY version",
            )
            .fetch_all(&self.pool)
            .await
            .map_err(&failed)?;
            histories.push(ForeignHistory {
                tool: ForeignTool::Sqlx,
                applied: ForeignApplied::Versions(foreign::sqlx_versions(rows)),
            });
        }
        if self.table_exists("__diesel_schema_migrations").await? {
            let versions = sqlx::query_scalar(
                "SELECT CAST(version AS TEXT) FROM __diesel_schema_migrations ORDER BY version",
            )
            .fetch_all(&self.pool)
            .await
            .map_err(&failed)?;
            histories.push(ForeignHistory {
                tool: ForeignTool::Diesel,
                applied: ForeignApplied::Versions(foreign::plain_versions(versions)),
            });
        }
        if self.table_exists("schema_migration").await? {
            let versions = sqlx::query_scalar(
                "SELECT CAST(version AS TEXT) FROM schema_migration ORDER BY version",
            )
            .fetch_all(&self.pool)
            .await
            .map_err(&failed)?;
            histories.push(ForeignHistory {
                tool: ForeignTool::Pop,
                applied: ForeignApplied::Versions(foreign::plain_versions(versions)),
            });
        }
        if self.table_exists("databasechangelog").await? {
            let rows = sqlx::query_as(
                "SELECT id, author, filename, exectype FROM databasechangelog ORDER BY orderexecuted",
            )
            .fetch_all(&self.pool)
            .await
            .map_err(&failed)?;
            histories.push(ForeignHistory {
                tool: ForeignTool::Liquibase,
                applied: ForeignApplied::Changesets(foreign::liquibase_changesets(rows)),
            });
        }
        Ok(histories)
    }

    async fn probe(&self) -> Result<(), ExecError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(self.database_error("connecting"))
    }

    /// SQLite statements run in this process on one connection, and sqlx offers no way to
    /// interrupt one: a stop takes effect at the next statement.
    async fn working_locks(&self) -> Vec<String> {
        Vec::new()
    }

    async fn interrupt(&self) {}
}

/// The fenced transaction on `session`: `BEGIN IMMEDIATE` (the write lock at once), the fence
/// and the guard; the body; the data checks; the records with `COMMIT`.
async fn in_session(
    session: &mut Session<Sqlite>,
    writer: &Writer,
    work: &FencedTransaction<'_>,
) -> Result<Vec<Duration>, TxError> {
    let begin = vec![Step::new("BEGIN IMMEDIATE", "beginning a transaction")];
    let connection = session.connection();
    fenced::open_checked_by_client::<Sqlite>(
        connection, &LEDGER, MOVE_FENCE, begin, writer, work.guard,
    )
    .await?;
    let verify = work.verify_data;
    let before = validation::sqlite::checksums(connection, verify)
        .await
        .map_err(validation::tx_error)?;
    let durations = fenced::body::<Sqlite>(connection, work, &mut ()).await?;
    if !verify.is_empty() {
        let after = validation::sqlite::checksums(connection, verify)
            .await
            .map_err(validation::tx_error)?;
        validation::unchanged(verify, &before, &after)?;
    }
    fenced::close::<Sqlite>(connection, &LEDGER, writer, work).await?;
    Ok(durations)
}
