//! The connection a PostgreSQL shard's fenced transactions run on: one, kept between
//! transactions, whose server process id is read once when it connects. Knowing the process
//! before a transaction is sent lets a stop cancel its statements even when the whole
//! transaction travels as one batch (whose results the server sends only at its end); keeping
//! it saves a pool hand-over per revision. It starts as the connection the engine first
//! reached the server with. Transactions on it take turns; the run's schema snapshots (before
//! its first revision, after its last) take their turn too, so the second reuses the first's
//! plan.
//!
//! A lease dropped with its transaction still open (an interrupted run) closes the connection,
//! and the server rolls the transaction back; the next lease connects again.

use std::time::Instant;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection};
use tokio::sync::{Mutex, MutexGuard};

use super::connection_settings;
use crate::engine::pool::POOL;

#[derive(Debug)]
pub(super) struct MigrationSession {
    slot: Mutex<Option<Held>>,
}

#[derive(Debug)]
struct Held {
    connection: PgConnection,
    process: i32,
    last_used: Instant,
}

impl MigrationSession {
    /// The session, on `connection` (configured here).
    pub(super) async fn starting_with(connection: PgConnection) -> Result<Self, sqlx::Error> {
        Ok(Self {
            slot: Mutex::new(Some(configured(connection).await?)),
        })
    }

    /// The session, for one transaction: connected now if it is not (or if it was idle long
    /// enough to check, and the check failed).
    pub(super) async fn lease(&self, options: &PgConnectOptions) -> Result<Lease<'_>, sqlx::Error> {
        let mut slot = self.slot.lock().await;
        if let Some(held) = slot.as_mut()
            && held.last_used.elapsed() >= POOL.ping_after_idle
            && held.connection.ping().await.is_err()
        {
            *slot = None;
        }
        if slot.is_none() {
            *slot = Some(connect(options).await?);
        }
        Ok(Lease { slot, open: true })
    }
}

async fn connect(options: &PgConnectOptions) -> Result<Held, sqlx::Error> {
    configured(options.connect().await?).await
}

async fn configured(mut connection: PgConnection) -> Result<Held, sqlx::Error> {
    connection_settings::configure(&mut connection).await?;
    let process: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut connection)
        .await?;
    Ok(Held {
        connection,
        process,
        last_used: Instant::now(),
    })
}

/// The session while one transaction runs on it.
pub(super) struct Lease<'a> {
    slot: MutexGuard<'a, Option<Held>>,
    /// The transaction may still be open: dropping the lease now closes the connection.
    open: bool,
}

impl Lease<'_> {
    /// The connection and the server process serving it (`None` only after a failed
    /// rollback closed it).
    pub(super) fn parts(&mut self) -> Option<(&mut PgConnection, i32)> {
        self.slot
            .as_mut()
            .map(|held| (&mut held.connection, held.process))
    }

    /// The transaction committed: the session stays for the next one.
    pub(super) fn committed(mut self) {
        self.open = false;
    }

    /// Rolls the transaction back (if the server still has one open); a session that cannot
    /// even do that is closed.
    pub(super) async fn roll_back(mut self) {
        if let Some((connection, _)) = self.parts() {
            let rolled_back = sqlx::raw_sql(AssertSqlSafe("ROLLBACK"))
                .execute(&mut *connection)
                .await;
            self.open = rolled_back.is_err();
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if self.open {
            *self.slot = None;
        } else if let Some(held) = self.slot.as_mut() {
            held.last_used = Instant::now();
        }
    }
}
