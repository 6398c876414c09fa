//! Performance baselines: the plan's named read-only queries, each run once to warm up and
//! then timed a number of times, before the revisions and after them. A query whose median
//! grew past the plan's ratio (and by more than the noise floor) marks the shard degraded.
//! The statements with the most total time in `pg_stat_statements` are captured alongside,
//! when the extension is there.

use std::time::{Duration, Instant};

use crate::engine::CountedPool;
use crate::engine::{self, DatabaseMessage};
use crate::proto::v1::{
    BaselineMeasured, BaselinePhase, BaselinePolicy, BaselineQuery, QueryTiming, TopStatement,
};
use sqlx::{Connection, Row};
use tokio_util::sync::CancellationToken;

/// Why the baselines could not be timed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BaselineError {
    #[error("stopped")]
    Stopped,
    /// A query failed before the revisions, or no read-only session could be had.
    #[error("{0}")]
    Refused(String),
    /// The server went away under the timing: it runs again once the server answers.
    #[error("{0}")]
    ConnectionLost(String),
}

/// The fewest timed runs a query gets.
const MIN_RUNS: u32 = 5;
/// The default after/before ratio of medians that counts as a degradation.
const DEFAULT_THRESHOLD: f64 = 1.5;
/// The default smallest growth of a median that can count as a degradation.
const DEFAULT_NOISE_FLOOR: Duration = Duration::from_millis(1);
/// How many of `pg_stat_statements`' statements are captured.
const TOP_STATEMENTS: i64 = 10;

/// The plan's baselines with defaults filled in; `None` when it has no queries.
#[derive(Debug, Clone, Copy)]
pub struct Baselines<'a> {
    pub queries: &'a [BaselineQuery],
    pub runs: u32,
    pub threshold: f64,
    pub noise_floor: Duration,
}

impl<'a> Baselines<'a> {
    pub fn from_policy(policy: Option<&'a BaselinePolicy>) -> Option<Self> {
        let policy = policy.filter(|policy| !policy.queries.is_empty())?;
        Some(Self {
            queries: &policy.queries,
            runs: policy.runs.max(MIN_RUNS),
            threshold: if policy.degradation_threshold > 0.0 {
                policy.degradation_threshold
            } else {
                DEFAULT_THRESHOLD
            },
            noise_floor: policy
                .noise_floor
                .and_then(|floor| Duration::try_from(floor).ok())
                .unwrap_or(DEFAULT_NOISE_FLOOR),
        })
    }

    /// Times every query on `pool`; `before` (the timings before the revisions) turns on the
    /// comparison. A query that fails is recorded with its error; before the revisions that
    /// refuses the shard, since there is nothing to compare against.
    pub async fn measure(
        &self,
        pool: &CountedPool,
        phase: BaselinePhase,
        before: Option<&BaselineMeasured>,
        stop: &CancellationToken,
    ) -> Result<BaselineMeasured, BaselineError> {
        let mut connection = read_only_session(pool).await.map_err(|error| {
            let detail = DatabaseMessage(&error).to_string();
            if engine::connection_lost(&error) {
                BaselineError::ConnectionLost(format!("baselines: {detail}"))
            } else {
                BaselineError::Refused(format!("baselines: {detail}"))
            }
        })?;
        let mut queries = Vec::with_capacity(self.queries.len());
        for query in self.queries {
            if stop.is_cancelled() {
                return Err(BaselineError::Stopped);
            }
            let timing = match time_query(&mut connection, &query.sql, self.runs).await {
                Ok(samples) => summarise(&query.name, &samples),
                // The server went away: that says nothing of the query, which is timed again.
                Err(error) if engine::connection_lost(&error) => {
                    return Err(BaselineError::ConnectionLost(format!(
                        "baseline query {}: {}",
                        query.name,
                        DatabaseMessage(&error)
                    )));
                }
                Err(error) => QueryTiming {
                    name: query.name.clone(),
                    error: DatabaseMessage(&error).to_string(),
                    ..QueryTiming::default()
                },
            };
            queries.push(timing);
        }
        let top_statements = top_statements(&mut connection).await;
        // Closed rather than returned: it is read-only for good.
        let _ = connection.close().await;
        if before.is_none()
            && let Some(failed) = queries.iter().find(|timing| !timing.error.is_empty())
        {
            return Err(BaselineError::Refused(format!(
                "baseline query {} failed before the revisions: {}; fix it in the plan's baselines",
                failed.name, failed.error
            )));
        }
        let mut measured = BaselineMeasured {
            phase: phase.into(),
            queries,
            top_statements,
            degraded: false,
        };
        if let Some(before) = before {
            measured.degraded = self.judge(&mut measured.queries, &before.queries);
        }
        Ok(measured)
    }

    /// Sets each query's ratio against `before` and whether it degraded; whether any did. A
    /// query that worked before and fails now is degraded.
    fn judge(&self, after: &mut [QueryTiming], before: &[QueryTiming]) -> bool {
        let mut degraded = false;
        for timing in after.iter_mut() {
            let Some(earlier) = before.iter().find(|earlier| earlier.name == timing.name) else {
                continue;
            };
            if !timing.error.is_empty() {
                timing.degraded = true;
            } else if earlier.p50_ms > 0.0 {
                timing.p50_ratio = timing.p50_ms / earlier.p50_ms;
                let growth_ms = timing.p50_ms - earlier.p50_ms;
                let floor_ms = self.noise_floor.as_secs_f64() * 1000.0;
                timing.degraded = timing.p50_ratio > self.threshold && growth_ms > floor_ms;
            }
            degraded |= timing.degraded;
        }
        degraded
    }

    /// The degraded queries of `measured`, with their ratios, for messages; `None` when
    /// none degraded.
    pub fn degradation(&self, measured: &BaselineMeasured) -> Option<String> {
        if !measured.degraded {
            return None;
        }
        let threshold = self.threshold;
        measured
            .queries
            .iter()
            .filter(|timing| timing.degraded)
            .map(|timing| {
                if timing.error.is_empty() {
                    format!(
                        "baseline {} median {:.2} ms is {:.1}x its median before (threshold {threshold}x)",
                        timing.name, timing.p50_ms, timing.p50_ratio
                    )
                } else {
                    format!(
                        "baseline {} fails after the revisions: {}",
                        timing.name, timing.error
                    )
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
            .into()
    }
}

/// A connection of its own, where every transaction is read-only.
async fn read_only_session(pool: &CountedPool) -> Result<sqlx::PgConnection, sqlx::Error> {
    let mut connection = pool.acquire().await?.detach();
    sqlx::query("SET default_transaction_read_only = on")
        .execute(&mut connection)
        .await?;
    Ok(connection)
}

/// One warm-up run, then `runs` timed ones.
async fn time_query(
    connection: &mut sqlx::PgConnection,
    sql: &str,
    runs: u32,
) -> Result<Vec<Duration>, sqlx::Error> {
    // Prepared by the warm-up run and reused, as applications run their queries.
    let query = || sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
    query().fetch_all(&mut *connection).await?;
    let mut samples = Vec::with_capacity(runs as usize);
    for _ in 0..runs {
        let started = Instant::now();
        query().fetch_all(&mut *connection).await?;
        samples.push(started.elapsed());
    }
    Ok(samples)
}

/// Min, mean, nearest-rank p50 and p95, max and sample standard deviation, in milliseconds.
fn summarise(name: &str, samples: &[Duration]) -> QueryTiming {
    let mut millis: Vec<f64> = samples
        .iter()
        .map(|sample| sample.as_secs_f64() * 1000.0)
        .collect();
    millis.sort_by(f64::total_cmp);
    let count = millis.len();
    if count == 0 {
        return QueryTiming {
            name: name.to_owned(),
            ..QueryTiming::default()
        };
    }
    let rank = |percentile: f64| {
        let position = (percentile / 100.0 * count as f64).ceil() as usize;
        millis[position.clamp(1, count) - 1]
    };
    let mean = millis.iter().sum::<f64>() / count as f64;
    let variance = if count > 1 {
        millis
            .iter()
            .map(|value| (value - mean).powi(2))
            .sum::<f64>()
            / (count - 1) as f64
    } else {
        0.0
    };
    QueryTiming {
        name: name.to_owned(),
        runs: u32::try_from(count).unwrap_or(u32::MAX),
        min_ms: millis[0],
        mean_ms: mean,
        p50_ms: rank(50.0),
        p95_ms: rank(95.0),
        max_ms: millis[count - 1],
        stddev_ms: variance.sqrt(),
        ..QueryTiming::default()
    }
}

/// This database's statements with the most total execution time, when `pg_stat_statements`
/// is installed and loaded; empty otherwise (its absence is not a failure).
async fn top_statements(connection: &mut sqlx::PgConnection) -> Vec<TopStatement> {
    let schema: Option<String> = sqlx::query_scalar(
        "SELECT n.nspname::text FROM pg_extension e
         JOIN pg_namespace n ON n.oid = e.extnamespace
         WHERE e.extname = 'pg_stat_statements'",
    )
    .fetch_optional(&mut *connection)
    .await
    .ok()
    .flatten();
    let Some(schema) = schema else {
        return Vec::new();
    };
    let sql = format!(
        "SELECT left(query, 200) AS query, calls, total_exec_time, mean_exec_time
         FROM \"{}\".pg_stat_statements
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
         ORDER BY total_exec_time DESC LIMIT {TOP_STATEMENTS}",
        schema.replace('"', "\"\"")
    );
    match sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(&mut *connection)
        .await
    {
        Ok(rows) => rows
            .iter()
            .map(|row| TopStatement {
                query: row.try_get("query").unwrap_or_default(),
                calls: row.try_get("calls").unwrap_or_default(),
                total_ms: row.try_get("total_exec_time").unwrap_or_default(),
                mean_ms: row.try_get("mean_exec_time").unwrap_or_default(),
            })
            .collect(),
        Err(error) => {
            tracing::debug!(%error, "pg_stat_statements is installed but not readable");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(values: &[u64]) -> Vec<Duration> {
        values.iter().copied().map(Duration::from_millis).collect()
    }

    #[test]
    fn the_summary_uses_nearest_ranks_and_the_sample_deviation() {
        let timing = summarise("q", &millis(&[5, 1, 4, 2, 3]));
        assert_eq!(timing.runs, 5);
        assert!((timing.min_ms - 1.0).abs() < 1e-9);
        assert!((timing.max_ms - 5.0).abs() < 1e-9);
        assert!((timing.mean_ms - 3.0).abs() < 1e-9);
        assert!((timing.p50_ms - 3.0).abs() < 1e-9);
        assert!((timing.p95_ms - 5.0).abs() < 1e-9);
        assert!((timing.stddev_ms - 2.5_f64.sqrt()).abs() < 1e-9);
    }

    fn timing(name: &str, p50_ms: f64) -> QueryTiming {
        QueryTiming {
            name: name.to_owned(),
            runs: 5,
            p50_ms,
            ..QueryTiming::default()
        }
    }

    #[test]
    fn a_degradation_needs_both_the_ratio_and_the_noise_floor() {
        let policy = BaselinePolicy {
            queries: vec![BaselineQuery::default()],
            ..BaselinePolicy::default()
        };
        let baselines = Baselines::from_policy(Some(&policy)).expect("a query");
        assert_eq!(baselines.runs, MIN_RUNS);
        let before = [
            timing("slow", 10.0),
            timing("tiny", 0.05),
            timing("gone", 1.0),
        ];
        let mut after = [
            timing("slow", 16.0),
            timing("tiny", 0.5),
            QueryTiming {
                error: "column does not exist".to_owned(),
                ..timing("gone", 0.0)
            },
        ];
        assert!(baselines.judge(&mut after, &before));
        assert!(after[0].degraded, "1.6x and 6 ms slower");
        assert!((after[0].p50_ratio - 1.6).abs() < 1e-9);
        assert!(!after[1].degraded, "10x, but under a millisecond");
        assert!(after[2].degraded, "it failed");

        let mut steady = [timing("slow", 14.0)];
        assert!(
            !baselines.judge(&mut steady, &before),
            "1.4x is within 1.5x"
        );
    }
}
