//! What a shard's server says about its health right now, for the agent's pre-flight checks:
//! its version, connections against `max_connections`, replication lag of attached replicas,
//! the database's size, and the sessions whose transactions have been open too long while
//! holding a lock on one of the tables a plan touches.

use std::time::Duration;

use super::CountedPool;

use super::catalog::table_activity;
use crate::proto::v1::TableActivity;

/// Connections in use and the server's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connections {
    pub in_use: i64,
    pub max: i64,
}

/// Replicas streaming from this server and the one furthest behind.
#[derive(Debug, Clone, PartialEq)]
pub struct Replication {
    pub replicas: i64,
    pub max_lag: Duration,
    /// The furthest-behind replica's `application_name` and address, when any is attached.
    pub furthest_behind: Option<String>,
}

/// `server_version`, e.g. "15.18 (Debian 15.18-0+deb12u1)".
pub async fn server_version(pool: &CountedPool) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("SELECT current_setting('server_version')")
        .fetch_one(pool)
        .await
}

/// When the server process started (`pg_postmaster_start_time()`): a different answer after a
/// failure means the server restarted, or another one took over, in between.
pub async fn server_started_at(pool: &CountedPool) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_postmaster_start_time()::text")
        .fetch_one(pool)
        .await
}

pub async fn connections(pool: &CountedPool) -> Result<Connections, sqlx::Error> {
    let (in_use, max): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),
                current_setting('max_connections')::bigint",
    )
    .fetch_one(pool)
    .await?;
    Ok(Connections { in_use, max })
}

pub async fn replication(pool: &CountedPool) -> Result<Replication, sqlx::Error> {
    let rows: Vec<(String, f64)> = sqlx::query_as(
        "SELECT application_name || coalesce(' at ' || host(client_addr), ''),
                coalesce(extract(epoch FROM replay_lag), 0)::float8
         FROM pg_stat_replication
         ORDER BY replay_lag DESC NULLS LAST",
    )
    .fetch_all(pool)
    .await?;
    let lag_seconds = rows.first().map_or(0.0, |(_, lag)| *lag);
    Ok(Replication {
        replicas: i64::try_from(rows.len()).unwrap_or(i64::MAX),
        max_lag: Duration::try_from_secs_f64(lag_seconds.max(0.0)).unwrap_or(Duration::MAX),
        furthest_behind: rows.into_iter().next().map(|(name, _)| name),
    })
}

/// The current database's size on disk.
pub async fn database_bytes(pool: &CountedPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_database_size(current_database())")
        .fetch_one(pool)
        .await
}

/// (table, session) for each other session of this database that holds or awaits a lock on one
/// of `tables` (named as the catalog facts name them, compared without case) inside a
/// transaction open at least `older_than`.
const LONG_LOCK_HOLDERS: &str = "
    SELECT DISTINCT
           CASE WHEN n.nspname = 'public' THEN c.relname::text
                ELSE n.nspname || '.' || c.relname END,
           a.pid, l.mode, l.granted, coalesce(a.state, ''),
           extract(epoch FROM now() - a.xact_start)::float8,
           left(coalesce(a.query, ''), 200)
    FROM pg_locks l
    JOIN pg_stat_activity a ON a.pid = l.pid
    JOIN pg_class c ON c.oid = l.relation
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE l.locktype = 'relation'
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.pid <> pg_backend_pid()
      AND a.xact_start <= now() - make_interval(secs => $2)
      AND lower(CASE WHEN n.nspname = 'public' THEN c.relname::text
                     ELSE n.nspname || '.' || c.relname END) = ANY($1)
    ORDER BY 1, 2";

pub async fn long_lock_holders(
    pool: &CountedPool,
    tables: &[String],
    older_than: Duration,
) -> Result<Vec<(String, TableActivity)>, sqlx::Error> {
    let rows: Vec<(String, i32, String, bool, String, f64, String)> =
        sqlx::query_as(LONG_LOCK_HOLDERS)
            .bind(
                tables
                    .iter()
                    .map(|table| table.to_lowercase())
                    .collect::<Vec<_>>(),
            )
            .bind(older_than.as_secs_f64())
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(table, pid, mode, granted, state, age, query)| {
            (
                table,
                table_activity((pid, mode, granted, state, age, query)),
            )
        })
        .collect())
}
