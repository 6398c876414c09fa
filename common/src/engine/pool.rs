//! The connection pool of a PostgreSQL shard's engine, as notices report it.

use std::time::Duration;

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
    /// Whether a connection is checked before it is handed out.
    pub pre_ping: bool,
}

/// What every PostgreSQL shard's pool is (the migration session, plus one for the reads
/// around it).
pub const POOL: PoolSettings = PoolSettings {
    size: 2,
    acquire_timeout: Duration::from_secs(10),
    recycle: Duration::from_secs(30 * 60),
    pre_ping: true,
};

impl PoolSettings {
    /// A pool builder with these settings.
    pub(super) fn options(&self) -> PgPoolOptions {
        PgPoolOptions::new()
            .max_connections(self.size)
            .acquire_timeout(self.acquire_timeout)
            .max_lifetime(self.recycle)
            .test_before_acquire(self.pre_ping)
    }
}
