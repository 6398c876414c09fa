//! What a PostgreSQL shard's run waits on: the replay lag of the replicas attached to its
//! server and of those the agent is told to watch ([`replicas`]), its active sessions against
//! `max_connections`, and the plan's own query, each against its threshold. Sampled when the
//! executor asks (before each revision, between statements run outside a transaction, and
//! between a backfill job's batches) and
//! every second while it waits: one round trip, plus one for the plan's query when it has one
//! and one per watched replica when the plan bounds the lag.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use fleetshift_common::engine::CountedPool;
use fleetshift_common::executor::{Busy, Throttle};
use fleetshift_common::proto::v1::{ErrorDetail, ErrorKind, HostDuties, ThrottlePolicy};
use fleetshift_common::secrets::DatabaseUrl;
use sqlx::Connection;

/// The default longest wait of a run.
const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(30 * 60);

mod replicas;

use replicas::Watched;

use super::wire::refused;
use crate::config::ShardConfig;

/// The plan's thresholds on one shard.
#[derive(Debug)]
pub struct ShardThrottle {
    pool: CountedPool,
    /// Read only when the plan bounds the lag.
    replicas: Vec<Watched>,
    max_lag: Option<Duration>,
    max_active_percent: Option<u32>,
    query: Option<(String, f64)>,
    max_wait: Duration,
}

/// One sample of the shard.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample<'r> {
    lag: Duration,
    active: i64,
    max_connections: i64,
    /// The most lagging watched replica, by its server.
    watched: Option<(&'r str, Duration)>,
}

impl ShardThrottle {
    /// The throttle `policy` asks for on `pool`; none when it sets no threshold.
    pub fn new(policy: Option<&ThrottlePolicy>, pool: &CountedPool) -> Option<Self> {
        let policy = policy?;
        let max_lag = policy
            .max_replication_lag
            .and_then(|lag| Duration::try_from(lag).ok())
            .filter(|lag| !lag.is_zero());
        let max_active_percent = Some(policy.max_active_sessions_percent).filter(|p| *p > 0);
        let query = Some(policy.query.trim())
            .filter(|query| !query.is_empty())
            .map(|query| {
                (
                    query.trim_end_matches(';').to_owned(),
                    policy.query_threshold,
                )
            });
        if max_lag.is_none() && max_active_percent.is_none() && query.is_none() {
            return None;
        }
        Some(Self {
            pool: pool.clone(),
            replicas: Vec::new(),
            max_lag,
            max_active_percent,
            query,
            max_wait: policy
                .max_wait
                .and_then(|wait| Duration::try_from(wait).ok())
                .filter(|wait| !wait.is_zero())
                .unwrap_or(DEFAULT_MAX_WAIT),
        })
    }

    /// This throttle also reading the replay lag of `replicas` when the plan bounds the lag.
    pub fn watching(mut self, replicas: &[DatabaseUrl]) -> Result<Self, String> {
        if self.max_lag.is_some() {
            self.replicas = replicas
                .iter()
                .map(Watched::lazy)
                .collect::<Result<_, _>>()?;
        }
        Ok(self)
    }

    /// Why the plan's query or a watched replica cannot throttle this shard, when one cannot:
    /// asked once before the revisions, so a query that fails or a replica that cannot be
    /// read refuses the shard instead of being ignored.
    pub(super) async fn check(&self) -> Result<(), String> {
        for replica in &self.replicas {
            replica.lag().await?;
        }
        let Some((query, _)) = &self.query else {
            return Ok(());
        };
        self.queried(query).await.map(|_| ()).map_err(|error| {
            format!(
                "the plan's throttle query fails: {}",
                fleetshift_common::engine::DatabaseMessage(&error)
            )
        })
    }

    async fn sample(&self) -> Result<Sample<'_>, sqlx::Error> {
        let (lag, active, max_connections): (f64, i64, i64) = sqlx::query_as(
            "SELECT coalesce((SELECT max(extract(epoch FROM replay_lag)) FROM pg_stat_replication), 0)::float8,
                    (SELECT count(*) FROM pg_stat_activity
                     WHERE state = 'active' AND backend_type = 'client backend'),
                    current_setting('max_connections')::bigint",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(Sample {
            lag: Duration::try_from_secs_f64(lag.max(0.0)).unwrap_or(Duration::MAX),
            active,
            max_connections,
            watched: replicas::most_behind(&self.replicas).await,
        })
    }

    /// The plan's query's number, read in a read-only transaction.
    async fn queried(&self, query: &str) -> Result<f64, sqlx::Error> {
        let mut connection = self.pool.acquire().await?;
        let mut transaction = connection.begin().await?;
        sqlx::query("SET TRANSACTION READ ONLY")
            .execute(&mut *transaction)
            .await?;
        let value: Option<f64> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT ({query})::float8")))
                .fetch_one(&mut *transaction)
                .await?;
        transaction.rollback().await?;
        Ok(value.unwrap_or_default())
    }

    /// The first signal of `sample` (and the query's `value`) above its threshold.
    fn judge(&self, sample: Sample<'_>, value: Option<f64>) -> Option<Busy> {
        if let Some((server, lag)) = sample.watched
            && let Some(max) = self.max_lag.filter(|max| lag > *max)
        {
            return Some(Busy {
                signal: "replica lag".to_owned(),
                detail: format!(
                    "replica lag {:.1}s > {}s on {server}",
                    lag.as_secs_f64(),
                    max.as_secs_f64()
                ),
                bounded: true,
            });
        }
        if let Some(max) = self.max_lag.filter(|max| sample.lag > *max) {
            return Some(Busy {
                signal: "replica lag".to_owned(),
                detail: format!(
                    "replica lag {:.1}s > {}s",
                    sample.lag.as_secs_f64(),
                    max.as_secs_f64()
                ),
                bounded: true,
            });
        }
        if let Some(percent) = self.max_active_percent {
            let allowed = sample.max_connections * i64::from(percent) / 100;
            if sample.active > allowed {
                return Some(Busy {
                    signal: "active sessions".to_owned(),
                    detail: format!(
                        "active sessions {} > {allowed} ({percent}% of max_connections {})",
                        sample.active, sample.max_connections
                    ),
                    bounded: true,
                });
            }
        }
        let (_, threshold) = self.query.as_ref()?;
        let value = value.filter(|value| value > threshold)?;
        Some(Busy {
            signal: "query".to_owned(),
            detail: format!("the plan's throttle query returned {value} > {threshold}"),
            bounded: true,
        })
    }
}

impl Throttle for ShardThrottle {
    fn busy(&self) -> Pin<Box<dyn Future<Output = Option<Busy>> + Send + '_>> {
        Box::pin(async move {
            let sample = match self.sample().await {
                Ok(sample) => sample,
                Err(error) => {
                    tracing::warn!(%error, "cannot sample the shard for throttling; going on");
                    return None;
                }
            };
            let value = match &self.query {
                Some((query, _)) => match self.queried(query).await {
                    Ok(value) => Some(value),
                    Err(error) => {
                        tracing::warn!(%error, "the plan's throttle query failed; going on");
                        None
                    }
                },
                None => None,
            };
            self.judge(sample, value)
        })
    }

    fn max_wait(&self) -> Duration {
        self.max_wait
    }
}

/// The plan's throttle on a PostgreSQL shard, watching the shard's configured replicas, its
/// query and replicas checked once: one that fails refuses the shard before anything runs.
pub(super) async fn of_shard(
    duties: &HostDuties,
    pool: &CountedPool,
    shard: &ShardConfig,
) -> Result<Option<ShardThrottle>, ErrorDetail> {
    let Some(throttle) = ShardThrottle::new(duties.throttle.as_ref(), pool) else {
        return Ok(None);
    };
    let refuse = |problem: String| {
        refused(
            ErrorKind::Precondition,
            format!("shard {}: {problem}; nothing ran", shard.id),
        )
    };
    let throttle = throttle
        .watching(&shard.throttle_replicas)
        .map_err(refuse)?;
    throttle.check().await.map_err(refuse)?;
    Ok(Some(throttle))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(lag: u64, percent: u32, query: &str) -> ThrottlePolicy {
        ThrottlePolicy {
            max_replication_lag: prost_types::Duration::try_from(Duration::from_secs(lag)).ok(),
            max_active_sessions_percent: percent,
            query: query.to_owned(),
            query_threshold: 1000.0,
            max_wait: None,
        }
    }

    #[tokio::test]
    async fn the_first_signal_over_its_threshold_holds_the_run() {
        let lazy = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .expect("a lazy pool");
        let pool = CountedPool::new(lazy);
        assert!(
            ShardThrottle::new(Some(&policy(0, 0, " ")), &pool).is_none(),
            "no threshold, no throttle"
        );
        let throttle =
            ShardThrottle::new(Some(&policy(5, 80, "SELECT 1;")), &pool).expect("a throttle");
        assert_eq!(throttle.max_wait, DEFAULT_MAX_WAIT);
        let calm = Sample {
            lag: Duration::from_secs(1),
            active: 10,
            max_connections: 100,
            watched: Some(("10.0.0.7:5432", Duration::from_secs(2))),
        };
        assert_eq!(throttle.judge(calm, Some(3.0)), None);
        let lagging = Sample {
            lag: Duration::from_millis(7_200),
            ..calm
        };
        assert_eq!(
            throttle.judge(lagging, None).map(|busy| busy.detail),
            Some("replica lag 7.2s > 5s".to_owned())
        );
        let behind = Sample {
            watched: Some(("10.0.0.7:5432", Duration::from_millis(9_000))),
            ..lagging
        };
        assert_eq!(
            throttle.judge(behind, None).map(|busy| busy.detail),
            Some("replica lag 9.0s > 5s on 10.0.0.7:5432".to_owned()),
            "a watched replica is named"
        );
        let crowded = Sample { active: 81, ..calm };
        assert_eq!(
            throttle.judge(crowded, None).map(|busy| busy.detail),
            Some("active sessions 81 > 80 (80% of max_connections 100)".to_owned())
        );
        assert_eq!(
            throttle.judge(calm, Some(1500.0)).map(|busy| busy.signal),
            Some("query".to_owned())
        );
    }
}
