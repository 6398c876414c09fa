//! The connection pool of a PostgreSQL shard's engine, as notices report it.

use std::time::Duration;

use sqlx::Connection as _;
use sqlx::postgres::PgPoolOptions;

/// The connection pool an engine keeps to its shard (one per agent and shard).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// Connections at most; the pool never goes beyond (no overflow).
    pub size: u32,
    /// How long a caller waits for a free connection.
    pub acquire_timeout: Duration,
    /// A connection older than this is closed and replaced.
    pub recycle: Duration,
    /// A connection idle for this long is checked before it is handed out (one round trip);
    /// one in steady use is not, and a connection lost under a statement is reported as such.
    pub ping_after_idle: Duration,
}

/// What every PostgreSQL shard's pool is (the migration session, plus one for the reads
/// around it).
pub const POOL: PoolSettings = PoolSettings {
    size: 2,
    acquire_timeout: Duration::from_secs(10),
    recycle: Duration::from_secs(30 * 60),
    ping_after_idle: Duration::from_secs(1),
};

impl PoolSettings {
    /// A pool builder with these settings.
    pub(super) fn options(&self) -> PgPoolOptions {
        let idle = self.ping_after_idle;
        PgPoolOptions::new()
            .max_connections(self.size)
            .acquire_timeout(self.acquire_timeout)
            .max_lifetime(self.recycle)
            .test_before_acquire(false)
            .before_acquire(move |connection, metadata| {
                Box::pin(async move {
                    if metadata.idle_for >= idle {
                        connection.ping().await?;
                    }
                    Ok(true)
                })
            })
    }
}
