//! A PostgreSQL pool that counts the tasks waiting for one of its connections.
//!
//! sqlx 0.9 times every acquisition (see `engine::ACQUIRE_EVENTS`) but keeps no count of
//! waiters and offers no hook where an acquisition starts. Every use of an engine's pool goes
//! through this type instead (it is an [`Executor`] like `&PgPool`), so the count covers the
//! executor, pre-flight, baselines, backups and catalog reads alike.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_core::future::BoxFuture;
use futures_core::stream::BoxStream;
use futures_util::{FutureExt as _, StreamExt as _, TryStreamExt as _};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgPool, PgQueryResult, PgRow, PgStatement, PgTypeInfo};
use sqlx::{Either, Execute, Executor, Postgres, SqlStr, Transaction};

#[derive(Debug, Clone)]
pub struct CountedPool {
    pool: PgPool,
    waiting: Arc<AtomicUsize>,
}

impl CountedPool {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            waiting: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// A connection, counted as a waiter until the pool hands it over (or gives up).
    pub async fn acquire(&self) -> Result<PoolConnection<Postgres>, sqlx::Error> {
        let _waiting = Waiting::enter(&self.waiting);
        self.pool.acquire().await
    }

    /// A transaction on a connection acquired as [`CountedPool::acquire`] does.
    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        let _waiting = Waiting::enter(&self.waiting);
        self.pool.begin().await
    }

    /// Tasks waiting for a connection now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Connections open, in use or idle.
    pub fn size(&self) -> u32 {
        self.pool.size()
    }

    pub fn num_idle(&self) -> usize {
        self.pool.num_idle()
    }

    pub fn max_connections(&self) -> u32 {
        self.pool.options().get_max_connections()
    }

    /// How the pool connects (for a connection of one's own to another database).
    pub fn connect_options(&self) -> Arc<sqlx::postgres::PgConnectOptions> {
        self.pool.connect_options()
    }
}

/// One waiter, for as long as it lives (a cancelled acquisition stops waiting too).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Like `&PgPool`: each query runs on a connection acquired (and counted) for it. A result set
/// is read whole before it is handed on, which the engine's queries (bounded catalog and
/// ledger reads) allow.
impl<'p> Executor<'p> for &'_ CountedPool {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<PgQueryResult, PgRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        let pool = self.clone();
        async move {
            let mut connection = pool.acquire().await?;
            connection.fetch_many(query).try_collect::<Vec<_>>().await
        }
        .map(|read| match read {
            Ok(items) => futures_util::stream::iter(items.into_iter().map(Ok)).left_stream(),
            Err(error) => futures_util::stream::once(async move { Err(error) }).right_stream(),
        })
        .flatten_stream()
        .boxed()
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        let pool = self.clone();
        async move { pool.acquire().await?.fetch_optional(query).await }.boxed()
    }

    fn prepare_with<'e>(
        self,
        sql: SqlStr,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, Result<PgStatement, sqlx::Error>>
    where
        'p: 'e,
    {
        let pool = self.clone();
        async move { pool.acquire().await?.prepare_with(sql, parameters).await }.boxed()
    }
}
