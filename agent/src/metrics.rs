//! The agent's Prometheus metrics. Most are read off the progress events an assignment streams
//! (statements, lock retries, backups, baselines), so what the coordinator sees and what
//! Prometheus scrapes cannot disagree; the session adds its own (lease, reconnects), and the
//! connection pools of running assignments are read at scrape time.
//!
//! Labels are bounded: `shard` takes the configured shard ids, `query` the plan's baseline
//! names, `outcome` a fixed set. Nothing in them comes from a database URL.

mod acquire;

pub use acquire::AcquireTimes;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use fleetshift_common::engine::CountedPool;
use fleetshift_common::proto::v1::progress_event::Event;
use fleetshift_common::proto::v1::{BaselinePhase, ProgressEvent, RevisionOutcome};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShardLabel {
    shard: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ThrottleLabels {
    shard: String,
    signal: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BaselineLabels {
    shard: String,
    query: String,
}

/// Statement and revision times: 1 ms to about 9 minutes.
fn statement_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

/// Backup times: 0.1 s to about 14 hours.
fn backup_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.1, 2.0, 20))
}

/// Every metric of one agent process.
#[derive(Debug)]
pub struct AgentMetrics {
    statement_duration: Histogram,
    revisions: Family<OutcomeLabel, Counter>,
    lock_retries: Counter,
    backup_duration: Histogram,
    backup_size: Family<ShardLabel, Gauge>,
    backfill_rows: Family<ShardLabel, Gauge>,
    baseline_ratio: Family<BaselineLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    rollbacks: Counter,
    database_outages: Family<ShardLabel, Counter>,
    throttled: Family<ThrottleLabels, Counter<f64, std::sync::atomic::AtomicU64>>,
    session_up: Gauge,
    reconnects: Counter,
    lease_remaining: Gauge<f64, std::sync::atomic::AtomicU64>,
    assignments_running: Gauge,
    pools: Pools,
}

impl AgentMetrics {
    /// The metrics, registered in `registry`.
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let metrics = Self {
            statement_duration: statement_histogram(),
            revisions: Family::default(),
            lock_retries: Counter::default(),
            backup_duration: backup_histogram(),
            backup_size: Family::default(),
            backfill_rows: Family::default(),
            baseline_ratio: Family::default(),
            rollbacks: Counter::default(),
            database_outages: Family::default(),
            throttled: Family::default(),
            session_up: Gauge::default(),
            reconnects: Counter::default(),
            lease_remaining: Gauge::default(),
            assignments_running: Gauge::default(),
            pools: Pools::default(),
        };
        registry.register_with_unit(
            "fleetshift_agent_statement_duration",
            "Time each migration statement ran",
            Unit::Seconds,
            metrics.statement_duration.clone(),
        );
        registry.register(
            "fleetshift_agent_revisions",
            "Revisions finished, by outcome",
            metrics.revisions.clone(),
        );
        registry.register(
            "fleetshift_agent_lock_retries",
            "Statements retried after a lock conflict (lock timeout or deadlock)",
            metrics.lock_retries.clone(),
        );
        registry.register_with_unit(
            "fleetshift_agent_backup_duration",
            "Time a verified backup took, verification included",
            Unit::Seconds,
            metrics.backup_duration.clone(),
        );
        registry.register_with_unit(
            "fleetshift_agent_backup_size",
            "Size of the shard's latest verified backup",
            Unit::Bytes,
            metrics.backup_size.clone(),
        );
        registry.register(
            "fleetshift_agent_backfill_rows",
            "Keys the shard's running (or last) backfill job has covered, earlier runs of it included",
            metrics.backfill_rows.clone(),
        );
        registry.register(
            "fleetshift_agent_baseline_p50_ratio",
            "Latest after/before ratio of a baseline query's median",
            metrics.baseline_ratio.clone(),
        );
        registry.register_with_unit(
            "fleetshift_agent_throttled",
            "Time runs waited for their shard to be less busy, by the signal that held them",
            Unit::Seconds,
            metrics.throttled.clone(),
        );
        registry.register(
            "fleetshift_agent_rollbacks",
            "Automatic rollbacks started",
            metrics.rollbacks.clone(),
        );
        registry.register(
            "fleetshift_agent_database_outages",
            "Times a run lost its shard's database server (a restart, a failover, a dropped connection) and waited for it",
            metrics.database_outages.clone(),
        );
        registry.register(
            "fleetshift_agent_session_up",
            "1 while the agent holds a session with a coordinator",
            metrics.session_up.clone(),
        );
        registry.register(
            "fleetshift_agent_reconnects",
            "Sessions lost or refused, each followed by a reconnect",
            metrics.reconnects.clone(),
        );
        registry.register_with_unit(
            "fleetshift_agent_lease_remaining",
            "Time left in which the agent may issue statements under its lease (TTL less the safety margin), on its own clock",
            Unit::Seconds,
            metrics.lease_remaining.clone(),
        );
        registry.register(
            "fleetshift_agent_assignments_running",
            "Assignments running now",
            metrics.assignments_running.clone(),
        );
        let metrics = Arc::new(metrics);
        registry.register_collector(Box::new(metrics.pools.clone()));
        metrics
    }

    /// Accounts for one progress event of an assignment.
    pub fn observe(&self, event: &ProgressEvent) {
        let Some(body) = &event.event else { return };
        match body {
            Event::StatementFinished(finished) => {
                if let Some(seconds) = seconds(finished.duration) {
                    self.statement_duration.observe(seconds);
                }
            }
            Event::LockRetry(_) => {
                self.lock_retries.inc();
            }
            Event::RevisionFinished(finished) => {
                let outcome =
                    RevisionOutcome::try_from(finished.outcome).map_or("unknown", outcome_label);
                self.revisions
                    .get_or_create(&OutcomeLabel { outcome })
                    .inc();
            }
            Event::BackupFinished(backup) => {
                if let Some(seconds) = seconds(backup.duration) {
                    self.backup_duration.observe(seconds);
                }
                let size = i64::try_from(backup.size_bytes).unwrap_or(i64::MAX);
                self.backup_size
                    .get_or_create(&ShardLabel {
                        shard: event.shard_id.clone(),
                    })
                    .set(size);
            }
            Event::BaselineMeasured(measured) => {
                if measured.phase == i32::from(BaselinePhase::Before) {
                    return;
                }
                for query in measured
                    .queries
                    .iter()
                    .filter(|query| query.error.is_empty())
                {
                    self.baseline_ratio
                        .get_or_create(&BaselineLabels {
                            shard: event.shard_id.clone(),
                            query: query.name.clone(),
                        })
                        .set(query.p50_ratio);
                }
            }
            Event::BackfillProgress(progress) => {
                self.backfill_rows
                    .get_or_create(&ShardLabel {
                        shard: event.shard_id.clone(),
                    })
                    .set(progress.rows);
            }
            Event::RollbackStarted(_) => {
                self.rollbacks.inc();
            }
            Event::DatabaseOutage(outage) if !outage.recovered => {
                self.database_outages
                    .get_or_create(&ShardLabel {
                        shard: event.shard_id.clone(),
                    })
                    .inc();
            }
            Event::Throttled(throttled) => {
                if let Some(seconds) = seconds(throttled.waited) {
                    self.throttled
                        .get_or_create(&ThrottleLabels {
                            shard: event.shard_id.clone(),
                            signal: throttled.signal.clone(),
                        })
                        .inc_by(seconds);
                }
            }
            Event::RevisionStarted(_)
            | Event::StatementRunning(_)
            | Event::PreflightCheck(_)
            | Event::DatabaseOutage(_) => {}
        }
    }

    /// The session is established (`true`) or over (`false`).
    pub fn session_up(&self, up: bool) {
        self.session_up.set(i64::from(up));
        if !up {
            self.lease_remaining.set(0.0);
        }
    }

    pub fn reconnecting(&self) {
        self.reconnects.inc();
    }

    pub fn lease_remaining(&self, remaining: std::time::Duration) {
        self.lease_remaining.set(remaining.as_secs_f64());
    }

    pub fn assignments_running(&self, count: usize) {
        self.assignments_running
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Reports `pool`'s connections as the shard's until the returned guard is dropped.
    pub fn track_pool(&self, shard: &str, pool: Box<dyn PoolFigures>) -> TrackedPool {
        self.pools.track(shard, pool)
    }
}

fn seconds(duration: Option<prost_types::Duration>) -> Option<f64> {
    duration
        .and_then(|duration| std::time::Duration::try_from(duration).ok())
        .map(|duration| duration.as_secs_f64())
}

fn outcome_label(outcome: RevisionOutcome) -> &'static str {
    match outcome {
        RevisionOutcome::Unspecified => "unknown",
        RevisionOutcome::Applied => "applied",
        RevisionOutcome::Resumed => "resumed",
        RevisionOutcome::Reverted => "reverted",
        RevisionOutcome::AlreadyDone => "already_done",
    }
}

/// A connection pool's figures, read at scrape time.
pub trait PoolFigures: Send + Sync + std::fmt::Debug {
    /// Connections open, in use or idle.
    fn size(&self) -> u32;
    fn idle(&self) -> usize;
    fn max(&self) -> u32;
    /// Tasks waiting for a connection, when the pool counts them.
    fn waiting(&self) -> Option<usize>;
}

/// A SQLite shard's pool: one connection, and no count of waiters.
impl<DB: sqlx::Database> PoolFigures for sqlx::Pool<DB> {
    fn size(&self) -> u32 {
        sqlx::Pool::size(self)
    }

    fn idle(&self) -> usize {
        self.num_idle()
    }

    fn max(&self) -> u32 {
        self.options().get_max_connections()
    }

    fn waiting(&self) -> Option<usize> {
        None
    }
}

impl PoolFigures for CountedPool {
    fn size(&self) -> u32 {
        CountedPool::size(self)
    }

    fn idle(&self) -> usize {
        self.num_idle()
    }

    fn max(&self) -> u32 {
        self.max_connections()
    }

    fn waiting(&self) -> Option<usize> {
        Some(CountedPool::waiting(self))
    }
}

type PoolsByShard = BTreeMap<String, BTreeMap<u64, Box<dyn PoolFigures>>>;

/// The pools of running assignments, by shard (a shard runs one assignment at a time, but a
/// retry may overlap the end of the previous one).
#[derive(Debug, Clone, Default)]
struct Pools {
    live: Arc<Mutex<(u64, PoolsByShard)>>,
}

impl Pools {
    fn track(&self, shard: &str, pool: Box<dyn PoolFigures>) -> TrackedPool {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.0 += 1;
        let id = live.0;
        live.1.entry(shard.to_owned()).or_default().insert(id, pool);
        TrackedPool {
            pools: self.clone(),
            shard: shard.to_owned(),
            id,
        }
    }
}

/// Ends the reporting of a pool when dropped.
#[derive(Debug)]
pub struct TrackedPool {
    pools: Pools,
    shard: String,
    id: u64,
}

impl Drop for TrackedPool {
    fn drop(&mut self) {
        let mut live = self
            .pools
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(pools) = live.1.get_mut(&self.shard) {
            pools.remove(&self.id);
            if pools.is_empty() {
                live.1.remove(&self.shard);
            }
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    shard: String,
    state: &'static str,
}

impl Collector for Pools {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Sums per shard, read under the lock, encoded after it.
        let figures: Vec<(String, u64, u64, u64, Option<u64>)> = {
            let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
            live.1
                .iter()
                .map(|(shard, pools)| {
                    let (size, idle, max) = pools.values().fold((0, 0, 0), |sums, pool| {
                        (
                            sums.0 + u64::from(pool.size()),
                            sums.1 + pool.idle() as u64,
                            sums.2 + u64::from(pool.max()),
                        )
                    });
                    let waiting = pools
                        .values()
                        .filter_map(|pool| pool.waiting())
                        .map(|waiting| waiting as u64)
                        .reduce(|sum, waiting| sum + waiting);
                    (shard.clone(), size, idle, max, waiting)
                })
                .collect()
        };
        let mut connections = encoder.encode_descriptor(
            "fleetshift_agent_db_pool_connections",
            "Database connections of running assignments, by state (in_use, idle)",
            None,
            MetricType::Gauge,
        )?;
        for (shard, size, idle, _, _) in &figures {
            for (state, value) in [("in_use", size.saturating_sub(*idle)), ("idle", *idle)] {
                let labels = PoolLabels {
                    shard: shard.clone(),
                    state,
                };
                ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX))
                    .encode(connections.encode_family(&labels)?)?;
            }
        }
        let mut capacity = encoder.encode_descriptor(
            "fleetshift_agent_db_pool_max_connections",
            "Connections the pools of running assignments may open",
            None,
            MetricType::Gauge,
        )?;
        for (shard, _, _, max, _) in &figures {
            let labels = ShardLabel {
                shard: shard.clone(),
            };
            ConstGauge::new(i64::try_from(*max).unwrap_or(i64::MAX))
                .encode(capacity.encode_family(&labels)?)?;
        }
        let mut waiters = encoder.encode_descriptor(
            "fleetshift_agent_db_pool_waiters",
            "Tasks waiting for a connection from the pools of running assignments (PostgreSQL shards)",
            None,
            MetricType::Gauge,
        )?;
        for (shard, _, _, _, waiting) in &figures {
            if let Some(waiting) = waiting {
                let labels = ShardLabel {
                    shard: shard.clone(),
                };
                ConstGauge::new(i64::try_from(*waiting).unwrap_or(i64::MAX))
                    .encode(waiters.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use fleetshift_common::proto::v1::{BackupRecord, LockRetry, StatementFinished};

    use super::*;

    fn event(shard: &str, body: Event) -> ProgressEvent {
        ProgressEvent {
            assignment_id: "a".to_owned(),
            shard_id: shard.to_owned(),
            at: None,
            event: Some(body),
        }
    }

    fn text(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).expect("encode");
        text
    }

    #[derive(Debug)]
    struct FixedPool;

    impl PoolFigures for FixedPool {
        fn size(&self) -> u32 {
            2
        }
        fn idle(&self) -> usize {
            1
        }
        fn max(&self) -> u32 {
            2
        }
        fn waiting(&self) -> Option<usize> {
            Some(3)
        }
    }

    #[test]
    fn progress_events_and_pools_become_metrics_with_bounded_labels() {
        let mut registry = Registry::default();
        let metrics = AgentMetrics::register(&mut registry);
        metrics.observe(&event(
            "users-1",
            Event::StatementFinished(StatementFinished {
                version: "1".to_owned(),
                location: "1_init.sql:1".to_owned(),
                duration: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: 3_000_000,
                }),
            }),
        ));
        metrics.observe(&event("users-1", Event::LockRetry(LockRetry::default())));
        metrics.observe(&event(
            "users-1",
            Event::BackupFinished(BackupRecord {
                size_bytes: 4096,
                ..BackupRecord::default()
            }),
        ));
        let tracked = metrics.track_pool("users-1", Box::new(FixedPool));
        let scraped = text(&registry);
        assert!(
            scraped.contains("fleetshift_agent_statement_duration_seconds_count 1"),
            "{scraped}"
        );
        assert!(
            scraped.contains("fleetshift_agent_lock_retries_total 1"),
            "{scraped}"
        );
        assert!(
            scraped.contains("fleetshift_agent_backup_size_bytes{shard=\"users-1\"} 4096"),
            "{scraped}"
        );
        assert!(
            scraped.contains(
                "fleetshift_agent_db_pool_connections{shard=\"users-1\",state=\"in_use\"} 1"
            ),
            "{scraped}"
        );
        assert!(
            scraped.contains("fleetshift_agent_db_pool_waiters{shard=\"users-1\"} 3"),
            "{scraped}"
        );
        drop(tracked);
        assert!(
            !text(&registry).contains("fleetshift_agent_db_pool_connections{"),
            "a finished assignment's pool is no longer reported"
        );
    }
}
