//! The migrator lock: a session advisory lock that keeps other migrators (other fleetshift
//! runs, or tools using the same key) off the shard for the length of a run.
//!
//! - It is taken with `pg_try_advisory_lock`, polled with backoff, on a session of its own
//!   that never opens a transaction: nothing ever waits for it inside a transaction, so it
//!   cannot deadlock with CREATE INDEX CONCURRENTLY.
//! - That session has an idle limit: `idle_session_timeout` ends it unless a heartbeat keeps
//!   it busy, so a paused or frozen holder loses the lock by itself (PostgreSQL 14+).
//! - It is released by unlocking and closing the session; dropping the guard without
//!   releasing aborts the heartbeat, which closes the session all the same.
//!
//! The lock is a courtesy to other migrators; exactly-once rests on the fence in the ledger.

use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::connection_settings;
use crate::engine::database_error;
use crate::error::ExecError;

/// The advisory lock key fleetshift migrators of a whole database share ("fleetshf");
/// advisory locks are per database, so one key serves every such shard. A shard that is one
/// schema of its database has a key of its own ([`crate::engine::ShardScope::lock_key`]).
pub const KEY: i64 = 0x666c_6565_7473_6866;

#[derive(Debug)]
pub struct MigratorLock {
    key: i64,
    stop: Option<oneshot::Sender<()>>,
    heartbeat: Option<JoinHandle<PgConnection>>,
}

impl MigratorLock {
    pub async fn acquire(
        options: &PgConnectOptions,
        shard: &str,
        key: i64,
        wait: Duration,
        idle_limit: Duration,
    ) -> Result<Self, ExecError> {
        let failed = |context: &str, error: sqlx::Error| database_error(shard, context, &error);
        let mut connection = options
            .connect()
            .await
            .map_err(|error| failed("opening the migration lock's session", error))?;
        let version = connection_settings::configure(&mut connection)
            .await
            .map_err(|error| failed("configuring the lock session", error))?;
        if version >= connection_settings::VERSION_WITH_SESSION_CHECKS {
            sqlx::query(AssertSqlSafe(format!(
                "SET idle_session_timeout = '{}ms'",
                idle_limit.as_millis()
            )))
            .execute(&mut connection)
            .await
            .map_err(|error| failed("setting the lock session's idle limit", error))?;
        }
        let started = Instant::now();
        let mut delays = ExponentialBuilder::new()
            .with_min_delay(Duration::from_millis(50))
            .with_max_delay(Duration::from_secs(2))
            .with_jitter()
            .without_max_times()
            .build();
        loop {
            let acquired: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(key)
                .fetch_one(&mut connection)
                .await
                .map_err(|error| failed("taking the migration lock", error))?;
            if acquired {
                return Ok(Self::hold(connection, key, idle_limit, shard.to_owned()));
            }
            let waited = started.elapsed();
            if waited >= wait {
                let holder = holder(&mut connection, key).await;
                // Ending the session releases anything it held; an error here changes nothing.
                let _closed = connection.close().await;
                return Err(ExecError::AnotherMigrator {
                    shard: shard.to_owned(),
                    holder,
                    waited_ms: waited.as_millis(),
                });
            }
            let delay = delays.next().unwrap_or(Duration::from_secs(1));
            tokio::time::sleep(delay.min(wait - waited)).await;
        }
    }

    /// Keeps the session busy well inside its idle limit until asked to stop.
    fn hold(mut connection: PgConnection, key: i64, idle_limit: Duration, shard: String) -> Self {
        let (stop, mut stopped) = oneshot::channel();
        let beat = idle_limit / 4;
        let heartbeat = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => return connection,
                    () = tokio::time::sleep(beat) => {
                        if let Err(error) = sqlx::query("SELECT 1").execute(&mut connection).await {
                            tracing::error!(%shard, %error, "the migration lock session was lost; the fence still guards the shard");
                            let _ = (&mut stopped).await;
                            return connection;
                        }
                    }
                }
            }
        });
        Self {
            key,
            stop: Some(stop),
            heartbeat: Some(heartbeat),
        }
    }

    pub async fn release(mut self, shard: &str) {
        if let Some(stop) = self.stop.take() {
            // The heartbeat may have ended already; then there is nobody to tell.
            let _ = stop.send(());
        }
        let Some(heartbeat) = self.heartbeat.take() else {
            return;
        };
        let mut connection = match heartbeat.await {
            Ok(connection) => connection,
            Err(error) => {
                tracing::warn!(shard, %error, "the lock heartbeat ended abnormally; its session is closed with it");
                return;
            }
        };
        if let Err(error) = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(self.key)
            .execute(&mut connection)
            .await
        {
            tracing::warn!(shard, %error, "unlocking failed; closing the session releases the lock");
        }
        if let Err(error) = connection.close().await {
            tracing::warn!(shard, %error, "closing the migration lock session failed");
        }
    }
}

impl Drop for MigratorLock {
    fn drop(&mut self) {
        // Not released (the run was cancelled): ending the heartbeat drops the session.
        if let Some(heartbeat) = &self.heartbeat {
            heartbeat.abort();
        }
    }
}

/// Who holds the lock: pid, application and client, for the error message.
async fn holder(connection: &mut PgConnection, key: i64) -> String {
    let holder: Result<Option<(i32, String, String)>, sqlx::Error> = sqlx::query_as(
        "SELECT a.pid, coalesce(a.application_name, ''), coalesce(a.client_addr::text, 'local socket')
         FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
           AND l.classid = ($1 >> 32)::oid AND l.objid = ($1 & 4294967295)::oid",
    )
    .bind(key)
    .fetch_optional(&mut *connection)
    .await;
    match holder {
        Ok(Some((pid, application, client))) => {
            format!("pid {pid}, application {application:?}, client {client}")
        }
        Ok(None) => "holder already gone".to_owned(),
        Err(error) => format!("holder unknown: {error}"),
    }
}
