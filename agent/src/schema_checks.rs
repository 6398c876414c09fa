//! The agent's schema checks: each shard's schema is read as a snapshot at most every
//! `schema_check` (default 10 minutes) and its fingerprint reported with every shard fact in
//! between; the snapshot itself goes along only when it was read fresh, for the coordinator to
//! keep by fingerprint. A shard whose version changed since its last check is read again at
//! once, so a fingerprint never changes in the facts without its version when a run made the
//! change: a shard whose fingerprint changes at the same version was changed outside
//! fleetshift.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use fleetshift_common::engine::{Connected, ShardEngine, Timeouts};
use fleetshift_common::error::ExecError;
use fleetshift_common::schema::{Snapshot, wire};
use tokio::time::Instant;

use crate::config::ShardConfig;

/// The last check of each shard, shared by every session of the agent.
#[derive(Debug)]
pub struct SchemaChecks {
    interval: Duration,
    last: Mutex<HashMap<String, Checked>>,
}

#[derive(Debug, Clone)]
struct Checked {
    at: Instant,
    /// The shard's newest applied version then.
    version: String,
    fingerprint: String,
}

/// What a shard's facts say of its schema.
#[derive(Debug, Default)]
pub struct Reported {
    /// The fingerprint at the last check; empty when never read.
    pub fingerprint: String,
    /// The packed snapshot, when it was read for this report.
    pub snapshot: Vec<u8>,
}

impl SchemaChecks {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// The shard's schema for its facts, the shard being at `version`: read now (by `read`)
    /// when its last check is older than the interval, was at another version, or there was
    /// none; else the last check's fingerprint. A failed read is logged and keeps the last
    /// fingerprint only when it was read at `version`: one read at another version would claim
    /// a schema the shard no longer has (drift no one made), so the fingerprint is left empty,
    /// unknown, until a read succeeds.
    pub async fn report<Read>(&self, shard: &ShardConfig, version: &str, read: Read) -> Reported
    where
        Read: AsyncFnOnce() -> Result<Snapshot, ExecError>,
    {
        let last = self.last_of(&shard.id);
        if let Some(last) = &last
            && last.at.elapsed() < self.interval
            && last.version == version
        {
            return Reported {
                fingerprint: last.fingerprint.clone(),
                snapshot: Vec::new(),
            };
        }
        match read().await {
            Ok(snapshot) => {
                let fingerprint = snapshot.fingerprint().to_string();
                if let Ok(mut checks) = self.last.lock() {
                    checks.insert(
                        shard.id.clone(),
                        Checked {
                            at: Instant::now(),
                            version: version.to_owned(),
                            fingerprint: fingerprint.clone(),
                        },
                    );
                }
                Reported {
                    fingerprint,
                    snapshot: wire::pack(&snapshot),
                }
            }
            Err(error) => {
                tracing::warn!(shard = %shard.id, error = %shard.database_url.scrub(&error.to_string()), "cannot read the shard's schema; its last fingerprint stands");
                Reported {
                    fingerprint: last
                        .filter(|last| last.version == version)
                        .map(|last| last.fingerprint)
                        .unwrap_or_default(),
                    snapshot: Vec::new(),
                }
            }
        }
    }

    fn last_of(&self, shard: &str) -> Option<Checked> {
        self.last
            .lock()
            .ok()
            .and_then(|checks| checks.get(shard).cloned())
    }
}

/// The shard's schema, read now on a connection of its own.
pub async fn read(shard: &ShardConfig) -> Result<Snapshot, ExecError> {
    match shard.connect(Timeouts::default()).await? {
        Connected::Postgres(engine) => engine.schema_snapshot().await,
        Connected::Sqlite(engine) => engine.schema_snapshot().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetshift_common::engine::ShardScope;
    use fleetshift_common::secrets::DatabaseUrl;

    fn shard() -> ShardConfig {
        ShardConfig {
            id: "orders-1".to_owned(),
            labels: Default::default(),
            lifecycle: Default::default(),
            database_url: DatabaseUrl::new("postgres://db-1:5432/orders"),
            throttle_replicas: Vec::new(),
            scope: ShardScope::Database,
        }
    }

    fn unreadable() -> Result<Snapshot, ExecError> {
        Err(ExecError::Unreachable {
            shard: "orders-1".to_owned(),
            detail: "connection refused".to_owned(),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_read_keeps_the_fingerprint_only_at_the_version_it_was_read_at() {
        let checks = SchemaChecks::new(Duration::from_secs(600));
        let shard = shard();
        let read = checks
            .report(&shard, "7", async || Ok(Snapshot::default()))
            .await;
        assert!(!read.fingerprint.is_empty());
        assert!(!read.snapshot.is_empty(), "a fresh read sends its snapshot");

        tokio::time::advance(Duration::from_secs(601)).await;
        let same = checks.report(&shard, "7", async || unreadable()).await;
        assert_eq!(
            same.fingerprint, read.fingerprint,
            "the same version's stands"
        );
        assert!(same.snapshot.is_empty());

        let moved = checks.report(&shard, "8", async || unreadable()).await;
        assert_eq!(
            moved.fingerprint, "",
            "version 7's schema is not reported as version 8's"
        );
        let again = checks
            .report(&shard, "8", async || Ok(Snapshot::default()))
            .await;
        assert_eq!(again.fingerprint, read.fingerprint, "read once it can be");
    }
}
