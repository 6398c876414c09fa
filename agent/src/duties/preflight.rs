//! Pre-flight checks on a PostgreSQL shard, before anything runs there: the server answers
//! (and its version); connections in use against `max_connections`; replication lag of attached
//! replicas; free disk where backups go against the database's size (when the plan requires a
//! backup); and no transaction open longer than the plan's threshold holding a lock on a table
//! the revisions touch. Such transactions are waited for up to a bound, then the shard fails
//! naming their pids and queries. Each check is reported as it finishes; the first failure
//! stops the shard before any DDL.

use std::path::Path;
use std::time::{Duration, Instant};

use fleetshift_common::engine::CountedPool;
use fleetshift_common::engine::catalog::describe_activity;
use fleetshift_common::engine::health;
use fleetshift_common::proto::v1::{self, PreflightCheck};
use tokio_util::sync::CancellationToken;

use super::{DutyFailure, DutyReport};

/// The plan's thresholds with defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub long_transaction: Duration,
    pub wait_for_blockers: Duration,
    pub max_connections_percent: u32,
    pub max_replication_lag: Duration,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            long_transaction: Duration::from_secs(30),
            wait_for_blockers: Duration::from_secs(60),
            max_connections_percent: 90,
            max_replication_lag: Duration::from_secs(30),
        }
    }
}

impl Thresholds {
    pub fn from_policy(policy: Option<&v1::PreflightPolicy>) -> Self {
        let defaults = Self::default();
        let Some(policy) = policy else {
            return defaults;
        };
        let given = |value: Option<prost_types::Duration>, default: Duration| {
            value
                .and_then(|value| Duration::try_from(value).ok())
                .unwrap_or(default)
        };
        Self {
            long_transaction: given(policy.long_transaction, defaults.long_transaction),
            wait_for_blockers: given(policy.wait_for_blockers, defaults.wait_for_blockers),
            max_connections_percent: match policy.max_connections_percent {
                0 => defaults.max_connections_percent,
                percent => percent,
            },
            max_replication_lag: given(policy.max_replication_lag, defaults.max_replication_lag),
        }
    }
}

/// What the checks look at.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// Existing tables the revisions to run touch, as the catalog names them.
    pub tables: &'a [String],
    /// Where the backup will go, when the plan requires one.
    pub backup_directory: Option<&'a Path>,
}

/// How often blockers are looked for again while waiting for them.
const BLOCKER_POLL: Duration = Duration::from_millis(500);

/// Runs every check, reporting each; the database's size on success.
pub async fn run(
    pool: &CountedPool,
    scope: Scope<'_>,
    thresholds: Thresholds,
    report: &dyn DutyReport,
    stop: &CancellationToken,
) -> Result<u64, DutyFailure> {
    let failed = |name: &str, detail: &str| {
        DutyFailure::Refused(format!("pre-flight check {name} failed: {detail}"))
    };
    let check = |name: &str, passed: bool, detail: String| {
        let refusal = (!passed).then(|| failed(name, &detail));
        report.check(PreflightCheck {
            name: name.to_owned(),
            passed,
            detail,
        });
        refusal.map_or(Ok(()), Err)
    };
    let unreadable = |name: &str, error: sqlx::Error| {
        DutyFailure::from_database(&format!("pre-flight check {name}"), &error, |detail| {
            failed(name, &format!("cannot read it from the server: {detail}"))
        })
    };

    let version = health::server_version(pool)
        .await
        .map_err(|error| unreadable("server", error))?;
    check("server", true, format!("PostgreSQL {version}"))?;

    let connections = health::connections(pool)
        .await
        .map_err(|error| unreadable("connections", error))?;
    let (passed, detail) = connections_verdict(&connections, &thresholds);
    check("connections", passed, detail)?;

    let replication = health::replication(pool)
        .await
        .map_err(|error| unreadable("replication", error))?;
    let (passed, detail) = replication_verdict(&replication, &thresholds);
    check("replication", passed, detail)?;

    let database_bytes = health::database_bytes(pool)
        .await
        .map_err(|error| unreadable("disk", error))?;
    let database_bytes = u64::try_from(database_bytes).unwrap_or_default();
    if let Some(directory) = scope.backup_directory {
        let (passed, detail) = disk_verdict(directory, database_bytes);
        check("disk", passed, detail)?;
    }

    let (passed, detail) = wait_for_blockers(pool, scope.tables, thresholds, stop)
        .await
        .map_err(|error| match error {
            Waiting::Stopped => DutyFailure::Stopped,
            Waiting::Unreadable(error) => unreadable("blockers", error),
        })?;
    check("blockers", passed, detail)?;
    Ok(database_bytes)
}

const MIB: u64 = 1024 * 1024;

/// Whether few enough connections are in use, and the check's detail.
fn connections_verdict(
    connections: &health::Connections,
    thresholds: &Thresholds,
) -> (bool, String) {
    let busy =
        connections.in_use * 100 >= connections.max * i64::from(thresholds.max_connections_percent);
    let detail = format!(
        "{} of {} connections in use (limit {}%){}",
        connections.in_use,
        connections.max,
        thresholds.max_connections_percent,
        if busy {
            "; wait for load to drop or raise max_connections"
        } else {
            ""
        }
    );
    (!busy, detail)
}

/// Whether every replica is close enough behind, and the check's detail.
fn replication_verdict(
    replication: &health::Replication,
    thresholds: &Thresholds,
) -> (bool, String) {
    if replication.replicas == 0 {
        return (true, "no replicas attached".to_owned());
    }
    let behind = replication.max_lag > thresholds.max_replication_lag;
    let detail = format!(
        "{} replica(s), largest replay lag {:.1}s{} (limit {}s){}",
        replication.replicas,
        replication.max_lag.as_secs_f64(),
        replication
            .furthest_behind
            .as_ref()
            .map(|name| format!(" on {name}"))
            .unwrap_or_default(),
        thresholds.max_replication_lag.as_secs(),
        if behind {
            "; let the replica catch up (is its replay paused or its disk slow?) \
             or plan with a larger --max-replication-lag"
        } else {
            ""
        }
    );
    (!behind, detail)
}

/// Whether `directory` has room for a backup of `database_bytes`, and the check's detail.
fn disk_verdict(directory: &Path, database_bytes: u64) -> (bool, String) {
    match free_bytes(directory) {
        Ok(free) => (
            free > database_bytes,
            format!(
                "{} MiB free in {} for a database of {} MiB{}",
                free / MIB,
                directory.display(),
                database_bytes / MIB,
                if free > database_bytes {
                    ""
                } else {
                    "; free space there or point [backups] directory elsewhere"
                }
            ),
        ),
        Err(error) => (
            false,
            format!("cannot read free space in {}: {error}", directory.display()),
        ),
    }
}

/// Free bytes for an unprivileged writer on the file system holding `directory` (created when
/// missing, so a first backup can be checked).
pub(super) fn free_bytes(directory: &Path) -> std::io::Result<u64> {
    std::fs::create_dir_all(directory)?;
    let stats = rustix::fs::statvfs(directory).map_err(std::io::Error::from)?;
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// Why waiting for blockers ended without a verdict.
enum Waiting {
    Stopped,
    Unreadable(sqlx::Error),
}

/// Waits until no long transaction holds a lock on `tables`, at most the plan's bound; whether
/// none is left, and what was seen.
async fn wait_for_blockers(
    pool: &CountedPool,
    tables: &[String],
    thresholds: Thresholds,
    stop: &CancellationToken,
) -> Result<(bool, String), Waiting> {
    if tables.is_empty() {
        return Ok((true, "the revisions touch no existing table".to_owned()));
    }
    let started = Instant::now();
    let mut announced = false;
    loop {
        let holders = health::long_lock_holders(pool, tables, thresholds.long_transaction)
            .await
            .map_err(Waiting::Unreadable)?;
        if holders.is_empty() {
            let waited = if announced {
                format!(" (after waiting {}s)", started.elapsed().as_secs())
            } else {
                String::new()
            };
            return Ok((
                true,
                format!(
                    "no transaction open longer than {}s holds a lock on {}{waited}",
                    thresholds.long_transaction.as_secs(),
                    tables.join(", ")
                ),
            ));
        }
        let described: Vec<String> = holders
            .iter()
            .map(|(table, activity)| format!("{table}: {}", describe_activity(activity)))
            .collect();
        if started.elapsed() >= thresholds.wait_for_blockers {
            return Ok((
                false,
                format!(
                    "still blocked after {}s by {}; end those sessions (pg_terminate_backend) or retry when they finish",
                    thresholds.wait_for_blockers.as_secs(),
                    described.join("; ")
                ),
            ));
        }
        if !announced {
            tracing::info!(blockers = %described.join("; "), wait_s = thresholds.wait_for_blockers.as_secs(), "waiting for long transactions on touched tables to end");
            announced = true;
        }
        tokio::select! {
            () = stop.cancelled() => return Err(Waiting::Stopped),
            () = tokio::time::sleep(BLOCKER_POLL) => {}
        }
    }
}
