//! PostgreSQL shards: ledger in schema `fleetshift`, session timeouts set at connect,
//! `SET LOCAL` timeouts in every fenced transaction, and a migrator lock on its own leased
//! session (see [`migrator_lock`]).

mod backfill;
pub mod catalog;
mod connection_settings;
mod counted_pool;
pub mod health;
mod held_locks;
mod ledger_sql;
mod migration_session;
mod migrator_lock;
mod one_trip;
mod opening;
mod partitioned_index;
pub mod restore_sql;
pub mod server;
mod tenant;
mod working;

use crate::validation;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::pool::POOL;

pub use counted_pool::CountedPool;
pub(super) use ledger_sql::DEFAULT_SCHEMA as DEFAULT_LEDGER_SCHEMA;
use ledger_sql::PgLedger;
use migration_session::MigrationSession;
pub(super) use migrator_lock::KEY as MIGRATOR_LOCK_KEY;
use migrator_lock::MigratorLock;
use sqlx::Postgres;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection};
pub use tenant::Tenant;
use working::Working;

use super::ShardScope;
use super::fenced;
use super::foreign::{self, ForeignApplied, ForeignHistory, ForeignTool};
use super::{
    ACQUIRE_EVENTS, AutocommitOutcome, Batch, DatabaseMessage, FencedTransaction, ShardEngine,
    StatementError, Timeouts, TxError, bookkeeping_error, connection_lost, database_error,
    ledger_entry, statement_error,
};
use crate::error::ExecError;
use crate::fence::FenceToken;
use crate::ledger::{BackfillMark, LedgerEntry, Writer};
use crate::rehearsal::catalog_state::CatalogState;
use crate::rehearsal::tracer::Tracer;
use crate::schema::{self, Snapshot};
use crate::secrets::DatabaseUrl;
use crate::source::Engine;
use crate::statements::Statement;

#[derive(Debug)]
pub struct PostgresShard {
    name: String,
    options: PgConnectOptions,
    pool: CountedPool,
    timeouts: Timeouts,
    /// The connection fenced transactions run on.
    migration: MigrationSession,
    /// The server processes running this engine's migration statements now.
    working: Working,
    /// A rehearsal's tracer, reading the catalog around every migration statement.
    tracer: Option<Arc<Tracer>>,
    /// The whole database, or one schema of it.
    scope: ShardScope,
    /// The ledger's SQL, in the scope's ledger schema.
    ledger: Arc<PgLedger>,
}

impl PostgresShard {
    /// Connects to `url`, named in messages by the URL itself (masked).
    pub async fn connect(url: &DatabaseUrl, timeouts: Timeouts) -> Result<Self, ExecError> {
        Self::connect_named(url.masked(), url, timeouts).await
    }

    /// Connects to `url`, named `name` in every message (`orders-7 (db-3:5432)`).
    pub async fn connect_named(
        name: String,
        url: &DatabaseUrl,
        timeouts: Timeouts,
    ) -> Result<Self, ExecError> {
        Self::connect_scoped(name, url, timeouts, ShardScope::Database).await
    }

    /// Connects to `url` as the shard `scope` says: the whole database, or one schema of it
    /// (every connection's `search_path` set to it).
    pub async fn connect_scoped(
        name: String,
        url: &DatabaseUrl,
        timeouts: Timeouts,
        scope: ShardScope,
    ) -> Result<Self, ExecError> {
        let unreachable = |detail: String| ExecError::Unreachable {
            shard: name.clone(),
            detail: url.scrub(&detail),
        };
        let options = PgConnectOptions::from_str(url.expose())
            .map_err(|error| unreachable(format!("invalid database URL: {error}")))?
            .application_name("fleetshift")
            .options(scope.search_path().into_iter().chain([
                ("lock_timeout", millis(timeouts.lock_timeout)),
                ("statement_timeout", millis(timeouts.statement_timeout)),
                (
                    "idle_in_transaction_session_timeout",
                    millis(timeouts.idle_in_transaction),
                ),
            ]))
            .disable_statement_logging();
        // A direct first connection fails fast with the server's own reason (refused,
        // authentication, unknown database); a pool would only report its own timeout.
        let refused = |error: sqlx::Error| {
            if let Some(refusal) = crate::database_tls::refusal(&error) {
                unreachable(refusal)
            } else if connection_lost(&error) {
                ExecError::ConnectionLost {
                    shard: name.clone(),
                    during: "connecting".to_owned(),
                    detail: url.scrub(&DatabaseMessage(&error).to_string()),
                }
            } else {
                unreachable(DatabaseMessage(&error).to_string())
            }
        };
        let probe = options.connect().await.map_err(refused)?;
        // The probe stays, as the session the fenced transactions will run on.
        let migration = MigrationSession::starting_with(probe)
            .await
            .map_err(refused)?;
        let pool = POOL
            .options()
            .acquire_time_level(ACQUIRE_EVENTS)
            .after_connect(|connection, _metadata| {
                Box::pin(async move { connection_settings::configure(connection).await.map(drop) })
            })
            .connect_lazy_with(options.clone());
        Ok(Self {
            name,
            options,
            pool: CountedPool::new(pool),
            timeouts,
            migration,
            working: Working::default(),
            tracer: None,
            ledger: Arc::new(PgLedger::in_schema(&scope.ledger_schema())),
            scope,
        })
    }

    /// This engine with `tracer` watching every migration statement (a rehearsal's scratch
    /// database; never a shard).
    #[must_use]
    pub fn traced(mut self, tracer: Arc<Tracer>) -> Self {
        self.tracer = Some(tracer);
        self
    }

    /// The connection pool (its waiters counted), for callers that read the shard (duties,
    /// introspection, tests).
    pub fn pool(&self) -> &CountedPool {
        &self.pool
    }

    fn database_error(&self, context: &str) -> impl Fn(sqlx::Error) -> ExecError + '_ {
        let context = context.to_owned();
        move |error| database_error(&self.name, &context, &error)
    }

    /// Whether `ledger` (this shard's, or a tenant's through [`Self::tenant`]) exists.
    async fn ledger_exists(&self, ledger: &PgLedger) -> Result<bool, ExecError> {
        sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(ledger.sql.history_table.as_ref())
            .fetch_one(&self.pool)
            .await
            .map_err(self.database_error("checking for the ledger"))
    }

    /// `ledger`'s rows, none when it does not exist yet.
    async fn ledger_rows(&self, ledger: &PgLedger) -> Result<Vec<LedgerEntry>, ExecError> {
        if !self.ledger_exists(ledger).await? {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(AssertSqlSafe(ledger.select_history.clone()))
            .fetch_all(&self.pool)
            .await
            .map_err(self.database_error("reading the ledger"))?;
        rows.iter()
            .map(|row| ledger_entry(row).map_err(self.database_error("reading the ledger")))
            .collect()
    }

    /// `ledger`'s fence token.
    async fn fence_in(&self, ledger: &PgLedger) -> Result<FenceToken, ExecError> {
        sqlx::query_scalar(AssertSqlSafe(ledger.sql.read_fence.to_string()))
            .fetch_one(&self.pool)
            .await
            .map(FenceToken::from_raw)
            .map_err(self.database_error("reading the fence"))
    }

    /// Whether the index `name` on `table` (as the statement writes it) is valid, with its
    /// schema: the index lives in its table's schema, which need not be on the search path.
    async fn index_validity(
        connection: &mut PgConnection,
        name: &str,
        table: &str,
    ) -> Result<Option<(bool, String)>, StatementError> {
        sqlx::query_as(
            "SELECT i.indisvalid, n.nspname::text
             FROM pg_index i
             JOIN pg_class c ON c.oid = i.indexrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relname = $1 AND i.indrelid = to_regclass($2)",
        )
        .bind(name)
        .bind(table)
        .fetch_optional(connection)
        .await
        .map_err(|error| statement_error(None, &error))
    }
}

impl PostgresShard {
    /// The fenced transaction on `connection` step by step: the opening in one round trip;
    /// the data checks and the body, each statement on its own (a tracer reads the catalog
    /// between them); the records with `COMMIT` in one more.
    async fn stepwise(
        &self,
        connection: &mut PgConnection,
        writer: &Writer,
        work: &FencedTransaction<'_>,
        observer: &mut impl fenced::BodyObserver<Postgres>,
    ) -> Result<Vec<Duration>, TxError> {
        opening::open(connection, &self.ledger, &self.timeouts, writer, work.guard).await?;
        let verify = work.verify_data;
        let before = validation::postgres::checksums(connection, verify)
            .await
            .map_err(validation::tx_error)?;
        let durations = fenced::body::<Postgres>(connection, work, observer).await?;
        if !verify.is_empty() {
            let after = validation::postgres::checksums(connection, verify)
                .await
                .map_err(validation::tx_error)?;
            validation::unchanged(verify, &before, &after)?;
        }
        fenced::close::<Postgres>(connection, &self.ledger.sql, writer, work).await?;
        Ok(durations)
    }
}

fn millis(duration: Duration) -> String {
    format!("{}ms", duration.as_millis())
}

/// `name` as a quoted identifier.
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `schema.table` or `table`, each part quoted.
pub fn quote_qualified(name: &str) -> String {
    name.split('.')
        .map(quote_identifier)
        .collect::<Vec<_>>()
        .join(".")
}

/// How long a statement update waits to read the running statement's locks (the pool may be
/// busy): an update without them beats a late one.
const LOCKS_READ_LIMIT: Duration = Duration::from_secs(2);

/// Which other tools' history tables the shard has (and whether `schema_migrations` is
/// golang-migrate's, with its `dirty` column, or dbmate's). Every name resolves as the tools'
/// own unqualified names do, through the search path; the catalog is read directly
/// (`information_schema.columns` costs ~5 ms of planning on a fresh session, this ~1 ms).
const FOREIGN_TABLES: &str = "SELECT to_regclass('_sqlx_migrations') IS NOT NULL,
        to_regclass('flyway_schema_history') IS NOT NULL,
        to_regclass('schema_migrations') IS NOT NULL,
        to_regclass('__diesel_schema_migrations') IS NOT NULL,
        to_regclass('schema_migration') IS NOT NULL,
        to_regclass('databasechangelog') IS NOT NULL,
        EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                WHERE attrelid = to_regclass('schema_migrations')
                  AND attname = 'dirty' AND NOT attisdropped)";

impl ShardEngine for PostgresShard {
    type MigratorLock = MigratorLock;

    const ENGINE: Engine = Engine::Postgres;

    fn shard(&self) -> &str {
        &self.name
    }

    async fn ensure_ledger(&self) -> Result<(), ExecError> {
        // A ledger an earlier release made lacks the opening function or the backfills
        // table; CREATE adds them.
        let current: bool = sqlx::query_scalar(
            "SELECT to_regclass($2) IS NOT NULL AND to_regclass($3) IS NOT NULL
                    AND to_regprocedure($1) IS NOT NULL",
        )
        .bind(&self.ledger.open_revision)
        .bind(self.ledger.sql.history_table.as_ref())
        .bind(&self.ledger.backfills_table)
        .fetch_one(&self.pool)
        .await
        .map_err(self.database_error("checking for the ledger"))?;
        if current {
            return Ok(());
        }
        let mut transaction = self
            .pool
            .begin()
            .await
            .map_err(self.database_error("creating the ledger"))?;
        sqlx::raw_sql(AssertSqlSafe(self.ledger.create.clone()))
            .execute(&mut *transaction)
            .await
            .map_err(self.database_error("creating the ledger"))?;
        transaction
            .commit()
            .await
            .map_err(self.database_error("creating the ledger"))
    }

    async fn read_ledger(&self) -> Result<Vec<LedgerEntry>, ExecError> {
        self.ledger_rows(&self.ledger).await
    }

    async fn current_fence(&self) -> Result<FenceToken, ExecError> {
        self.fence_in(&self.ledger).await
    }

    async fn schema_snapshot(&self) -> Result<Snapshot, ExecError> {
        // On the migration session: a run reads the schema before its first revision and
        // after its last, and the second read reuses the first's plan (planning it costs
        // ~6 ms on a fresh session); the pool's connections stay free for the reads around.
        let reading = self.database_error("reading the schema");
        let mut lease = self
            .migration
            .lease(&self.options)
            .await
            .map_err(&reading)?;
        let (connection, _) = lease
            .parts()
            .ok_or_else(|| sqlx::Error::Io(std::io::ErrorKind::NotConnected.into()))
            .map_err(&reading)?;
        let snapshot = schema::postgres::read_scoped(connection, self.scope.schema_name())
            .await
            .map_err(&reading)?;
        lease.committed();
        Ok(snapshot)
    }

    async fn fenced_transaction(
        &self,
        writer: &Writer,
        work: FencedTransaction<'_>,
    ) -> Result<Vec<Duration>, TxError> {
        let mut lease = self
            .migration
            .lease(&self.options)
            .await
            .map_err(bookkeeping_error("connecting the migration session"))?;
        let Some((connection, process)) = lease.parts() else {
            return Err(TxError::Database {
                context: "connecting the migration session",
                detail: "the session closed".to_owned(),
            });
        };
        let _working = self.working.enter(process);
        let mut observer = self
            .tracer
            .as_deref()
            .map(|tracer| tracer.transaction(work.body, work.script));
        let ran = match &mut observer {
            Some(observer) => self.stepwise(connection, writer, &work, observer).await,
            None if work.verify_data.is_empty() => {
                let begin = opening::steps(&self.ledger, &self.timeouts, writer, work.guard)?;
                one_trip::run(connection, &self.ledger, begin, writer, &work).await
            }
            None => self.stepwise(connection, writer, &work, &mut ()).await,
        };
        match &ran {
            Ok(_) => lease.committed(),
            Err(_) => lease.roll_back().await,
        }
        if let Some(observer) = observer {
            observer.finish(ran.is_ok());
        }
        ran
    }

    async fn run_autocommit(
        &self,
        statement: &Statement,
        resuming: bool,
    ) -> Result<AutocommitOutcome, StatementError> {
        let mut connection = self
            .pool
            .acquire()
            .await
            .map_err(|error| statement_error(None, &error))?;
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut *connection)
            .await
            .map_err(|error| statement_error(None, &error))?;
        let _working = self.working.enter(pid);
        let parsed = statement.index_build();
        let partitioned = match &parsed {
            Some(parsed) => {
                partitioned_index::partitioned_table(&mut connection, &parsed.table).await?
            }
            None => None,
        };
        if let (Some(parsed), Some(_)) = (&parsed, partitioned)
            && parsed.index_name.is_none()
        {
            return Err(StatementError {
                index: None,
                sqlstate: None,
                connection_lost: false,
                message: format!(
                    "{} is a partitioned table: name the index (CREATE INDEX CONCURRENTLY <name> ON …); fleetshift builds it partition by partition and resumes an interrupted build by that name",
                    parsed.table
                ),
            });
        }
        let build = parsed.as_ref().and_then(|build| {
            Some((
                build.index_name.clone()?,
                build.table.clone(),
                build.if_not_exists,
            ))
        });
        let mut outcome = AutocommitOutcome::Ran;
        if let Some((name, table, if_not_exists)) = &build {
            match Self::index_validity(&mut connection, name, table).await? {
                Some((true, _)) if resuming || *if_not_exists => {
                    return Ok(AutocommitOutcome::IndexAlreadyValid);
                }
                // A partitioned table's index stays invalid until every partition's is
                // attached: the build resumes rather than starting over.
                Some((false, schema)) if partitioned.is_none() => {
                    tracing::warn!(shard = %self.name, index = %name, "dropping invalid index left by an earlier attempt");
                    sqlx::raw_sql(AssertSqlSafe(format!(
                        "DROP INDEX CONCURRENTLY {}.{}",
                        quote_identifier(&schema),
                        quote_identifier(name)
                    )))
                    .execute(&mut *connection)
                    .await
                    .map_err(|error| statement_error(None, &error))?;
                    outcome = AutocommitOutcome::InvalidIndexRebuilt;
                }
                _ => {}
            }
        }
        let before = match &self.tracer {
            Some(_) => Some(
                CatalogState::read(&mut connection)
                    .await
                    .map_err(|error| statement_error(None, &error))?,
            ),
            None => None,
        };
        let started = Instant::now();
        match (&parsed, partitioned, &build) {
            (Some(parsed), Some(table), Some((name, _, _))) => {
                let built =
                    partitioned_index::build(&mut connection, parsed, name, table, !resuming)
                        .await?;
                outcome = AutocommitOutcome::PartitionsIndexed {
                    built: built.built,
                    attached_before: built.attached_before,
                };
            }
            _ => {
                sqlx::raw_sql(AssertSqlSafe(statement.sql.as_str()))
                    .execute(&mut *connection)
                    .await
                    .map_err(|error| statement_error(None, &error))?;
            }
        }
        let elapsed = started.elapsed();
        if let (Some(tracer), Some(before)) = (&self.tracer, before) {
            let after = CatalogState::read(&mut connection)
                .await
                .map_err(|error| statement_error(None, &error))?;
            tracer.autocommit(statement, &before, &after, elapsed);
        }
        if let Some((name, table, _)) = &build
            && !matches!(
                Self::index_validity(&mut connection, name, table).await?,
                Some((true, _))
            )
        {
            return Err(StatementError {
                index: None,
                sqlstate: None,
                connection_lost: false,
                message: format!(
                    "index {name} is missing or INVALID after the build; it will be dropped and rebuilt on the next run"
                ),
            });
        }
        Ok(outcome)
    }

    async fn backfill_mark(&self, version: &str) -> Result<Option<BackfillMark>, ExecError> {
        self.read_backfill_mark(version).await
    }

    async fn next_batch(&self, query: &str) -> Result<Option<Batch>, StatementError> {
        self.read_next_batch(query).await
    }

    async fn key_indexed(&self, table: &str, column: &str) -> Result<Option<bool>, ExecError> {
        self.read_key_indexed(table, column).await
    }

    async fn estimate_rows(&self, table: &str) -> Option<i64> {
        self.estimated_rows(table).await
    }

    async fn lock_out_other_migrators(&self, wait: Duration) -> Result<MigratorLock, ExecError> {
        MigratorLock::acquire(
            &self.options,
            &self.name,
            self.scope.lock_key(),
            wait,
            self.timeouts.migrator_lock_idle,
        )
        .await
    }

    async fn release_migrator_lock(&self, lock: MigratorLock) {
        lock.release(&self.name).await;
    }

    async fn version_table_rows(&self, table: &str) -> Result<Option<Vec<String>>, ExecError> {
        let failed = self.database_error("reading the Alembic version table");
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(table)
            .fetch_one(&self.pool)
            .await
            .map_err(&failed)?;
        if !exists {
            return Ok(None);
        }
        let rows = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT version_num::text FROM {table} ORDER BY 1"
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(&failed)?;
        Ok(Some(rows))
    }

    async fn foreign_histories(&self) -> Result<Vec<ForeignHistory>, ExecError> {
        let failed = self.database_error("reading another tool's history");
        let (
            has_sqlx,
            has_flyway,
            has_schema_migrations,
            has_diesel,
            has_pop,
            has_liquibase,
            golang_migrate,
        ) = sqlx::query_as::<_, (bool, bool, bool, bool, bool, bool, bool)>(FOREIGN_TABLES)
            .fetch_one(&self.pool)
            .await
            .map_err(&failed)?;
        let mut histories = Vec::new();
        if has_sqlx {
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
        if has_flyway {
            let rows = sqlx::query_as(
                "SELECT version, type FROM flyway_schema_history
                 WHERE success AND version IS NOT NULL ORDER BY installed_rank",
            )
            .fetch_all(&self.pool)
            .await
            .map_err(&failed)?;
            histories.push(ForeignHistory {
                tool: ForeignTool::Flyway,
                applied: ForeignApplied::Versions(foreign::flyway_applied(rows)),
            });
        }
        if has_schema_migrations && golang_migrate {
            let row: Option<(i64, bool)> =
                sqlx::query_as("SELECT version, dirty FROM schema_migrations LIMIT 1")
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(&failed)?;
            if let Some((version, dirty)) = row {
                histories.push(ForeignHistory {
                    tool: ForeignTool::GolangMigrate,
                    applied: ForeignApplied::UpTo { version, dirty },
                });
            }
        }
        let plain = [
            (
                has_schema_migrations && !golang_migrate,
                ForeignTool::Dbmate,
                "SELECT version::text FROM schema_migrations ORDER BY version",
            ),
            (
                has_diesel,
                ForeignTool::Diesel,
                "SELECT version::text FROM __diesel_schema_migrations ORDER BY version",
            ),
            (
                has_pop,
                ForeignTool::Pop,
                "SELECT version::text FROM schema_migration ORDER BY version",
            ),
        ];
        for (present, tool, query) in plain {
            if present {
                let versions = sqlx::query_scalar(query)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(&failed)?;
                histories.push(ForeignHistory {
                    tool,
                    applied: ForeignApplied::Versions(foreign::plain_versions(versions)),
                });
            }
        }
        if has_liquibase {
            let rows = sqlx::query_as(
                "SELECT id::text, author::text, filename::text, exectype::text
                 FROM databasechangelog ORDER BY orderexecuted",
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
        let connection = PgConnection::connect_with(&self.options)
            .await
            .map_err(|error| database_error(&self.name, "connecting", &error))?;
        if let Err(error) = connection.close().await {
            tracing::debug!(shard = %self.name, %error, "closing the probe connection failed");
        }
        Ok(())
    }

    async fn working_locks(&self) -> Vec<String> {
        let pids = self.working.pids();
        match tokio::time::timeout(LOCKS_READ_LIMIT, held_locks::of(&self.pool, &pids)).await {
            Ok(Ok(locks)) => locks,
            Ok(Err(error)) => {
                tracing::debug!(shard = %self.name, error = %DatabaseMessage(&error), "cannot read the running statement's locks");
                Vec::new()
            }
            Err(_) => Vec::new(),
        }
    }

    async fn interrupt(&self) {
        let pids = self.working.pids();
        if pids.is_empty() {
            return;
        }
        // A connection of its own: the pool's may all be busy with the statements to cancel.
        let mut connection = match PgConnection::connect_with(&self.options).await {
            Ok(connection) => connection,
            Err(error) => {
                tracing::warn!(shard = %self.name, error = %DatabaseMessage(&error), "cannot reach the shard to cancel its running statement; it runs to its end");
                return;
            }
        };
        for pid in pids {
            let cancelled = sqlx::query("SELECT pg_cancel_backend($1)")
                .bind(pid)
                .execute(&mut connection)
                .await;
            match cancelled {
                Ok(_) => {
                    tracing::info!(shard = %self.name, pid, "asked the server to cancel the running statement")
                }
                Err(error) => {
                    tracing::warn!(shard = %self.name, pid, error = %DatabaseMessage(&error), "cannot cancel the running statement; it runs to its end")
                }
            }
        }
        if let Err(error) = connection.close().await {
            tracing::debug!(shard = %self.name, %error, "closing the cancelling connection failed");
        }
    }
}
