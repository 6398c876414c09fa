//! `fleetshift plan`'s arguments: the set, the shards, the waves, the limits and the duties.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use fleetshift_common::proto::v1::{
    BaselinePolicy, CreatePlanRequest, DataCheck, ExecutionLimits, HostDuties, PreflightPolicy,
    RollbackPolicy, Schedule, StatusUpdates, ThrottlePolicy, WavePolicy,
};
use fleetshift_common::proto::{MESSAGE_LIMIT, v1 as proto};
use fleetshift_common::shipped;
use fleetshift_common::source::{MigrationSet, SourceFormat};
use fleetshift_common::window;
use prost::Message as _;

use super::super::fleet::{Connection, parse_label};
use super::super::sources::{self, AlembicArgs};
use super::super::{Output, baseline_file};
use super::gates::GateArgs;

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub(crate) connection: Connection,
    /// The migration directory to roll out.
    #[arg(required = true)]
    pub(super) directory: Option<PathBuf>,
    /// Where to take the shards (default: the set's newest revision).
    #[arg(long, visible_alias = "version")]
    pub(super) target: Option<String>,
    /// The directory's layout, when detection is not wanted.
    #[arg(long)]
    pub(super) format: Option<SourceFormat>,
    #[command(flatten)]
    pub(super) alembic: AlembicArgs,
    /// Only shards whose labels match, e.g. `--selector env=production` (repeatable); the
    /// facts agents report are selectable too (`fleetshift.io/host`, `fleetshift.io/server`,
    /// `fleetshift.io/server-version`, …: see `fleetshift shards --help`).
    #[arg(long = "selector", value_parser = parse_label)]
    pub(super) selector: Vec<(String, String)>,
    /// Dry run: print exactly the SQL each matching shard would run (grouped by the version it
    /// is at and its engine, per revision and transaction mode) and create no plan.
    #[arg(long)]
    pub(crate) sql: bool,
    /// List every lint finding (default: one line per rule, with its count and first place).
    #[arg(long)]
    pub(super) verbose: bool,
    /// With --sql: only these shards (ids or `*` patterns, comma-separated or repeated).
    #[arg(
        long = "shard",
        value_delimiter = ',',
        value_name = "SHARD",
        requires = "sql"
    )]
    pub(super) shards: Vec<String>,
    /// Shards in the first (canary) wave.
    #[arg(long, default_value_t = 1)]
    pub(super) canary: u32,
    /// Cumulative percentages of the remaining shards per following wave.
    #[arg(long, value_delimiter = ',', default_value = "25,100")]
    pub(super) waves: Vec<u32>,
    /// Shards of one wave running at once.
    #[arg(long, default_value_t = 16)]
    pub(super) max_concurrency: u32,
    /// Shards of one database server running at once, across plans and agents (a server is
    /// known by its PostgreSQL system identifier, whatever address reaches it).
    #[arg(long, default_value_t = 4)]
    pub(super) max_per_host: u32,
    /// Failed shards that halt the rollout.
    #[arg(long, default_value_t = 1)]
    pub(super) failure_threshold: u32,
    /// How often one shard may be interrupted (its agent's session or lease lost, the agent
    /// stopping) and run again under a new claim before it fails.
    #[arg(long, default_value_t = fleetshift_coordinator::rollout::outcome::DEFAULT_MAX_SHARD_RETRIES)]
    pub(super) max_shard_retries: u32,
    /// Longest lock wait of one statement attempt on every shard, e.g. `2s`.
    #[arg(long, value_parser = fleetshift_common::duration::parse, default_value = "2s")]
    pub(super) lock_timeout: Duration,
    /// Longest run of one statement, e.g. `15m`.
    #[arg(long, value_parser = fleetshift_common::duration::parse, default_value = "15m")]
    pub(super) statement_timeout: Duration,
    /// Retries after a lock conflict.
    #[arg(long, default_value_t = 5)]
    pub(super) lock_retries: u32,
    /// Each shard's agent takes a verified backup (pg_dump -Fc, checked with pg_restore --list)
    /// before the first DDL; a failed backup stops the shard.
    #[arg(long)]
    pub(super) require_backup: bool,
    /// Restore each shard's backup into a scratch database on its server and compare every
    /// table's row count with the shard's at the moment of the dump (needs CREATEDB).
    #[arg(long, requires = "require_backup")]
    pub(super) restore_test: bool,
    /// Pre-flight: a transaction open longer than this on a touched table blocks the shard.
    #[arg(long, value_parser = fleetshift_common::duration::parse, default_value = "30s")]
    pub(super) long_transaction: Duration,
    /// Pre-flight: how long to wait for such transactions before failing the shard.
    #[arg(long, value_parser = fleetshift_common::duration::parse, default_value = "60s")]
    pub(super) wait_for_blockers: Duration,
    /// Pre-flight: connections in use (% of max_connections) at which a shard fails.
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub(super) max_connections_percent: u32,
    /// Pre-flight: replication lag above which a shard with replicas fails.
    #[arg(long, value_parser = fleetshift_common::duration::parse, default_value = "30s")]
    pub(super) max_replication_lag: Duration,
    /// Baselines: a file of named read-only queries (each under a `-- name: <name>` line),
    /// timed on every shard before and after the revisions.
    #[arg(long, value_name = "FILE")]
    pub(super) baselines: Option<PathBuf>,
    /// Baselines: timed runs of each query, after one warm-up run.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(5..=1000))]
    pub(super) baseline_runs: u32,
    /// Baselines: the after/before ratio of a query's median that counts as a degradation.
    #[arg(long, default_value_t = 1.5)]
    pub(super) degradation_threshold: f64,
    /// Baselines: the smallest growth of a query's median that can count as a degradation,
    /// whatever the ratio (sub-millisecond queries jitter on a busy host).
    #[arg(long, value_parser = fleetshift_common::duration::parse, value_name = "DURATION", default_value = "1ms")]
    pub(super) baseline_noise_floor: Duration,
    /// Validation: a table whose data the revisions must not change, with the columns to
    /// compare (all when none are named): an order-independent checksum is taken on every
    /// shard before and after, and a difference fails the shard. Repeatable.
    #[arg(long, value_name = "TABLE[:COLUMNS]", value_parser = parse_data_check)]
    pub(super) verify_data: Vec<DataCheck>,
    /// Roll a shard back to its version before the plan, on its own, when a revision fails,
    /// its post-migration validation fails, or a baseline degrades past the threshold (down
    /// scripts, same fencing token).
    #[arg(long)]
    pub(super) auto_rollback: bool,
    /// Roll a shard back when one of its revisions ran longer than this.
    #[arg(long, value_parser = fleetshift_common::duration::parse, value_name = "DURATION")]
    pub(super) revision_time_limit: Option<Duration>,
    /// Plan shards whose schema differs from the fleet's majority at their version anyway,
    /// for this reason (kept in the plan); without it such shards are refused.
    #[arg(long, value_name = "REASON")]
    pub(super) allow_drift_shards: Option<String>,
    /// Schedule: a maintenance window shards run in, e.g. "Sat 02:00-04:00 Europe/Berlin",
    /// "Mon-Fri 22:00-02:00 UTC", "2026-12-24T01:00/2h UTC" (repeatable; a shard's own
    /// `maintenance-window` label replaces them). A revision starts only while its shard's
    /// window is open and would end before it closes.
    #[arg(long = "window", value_name = "WINDOW", value_parser = parse_window)]
    pub(super) windows: Vec<String>,
    /// Schedule: nothing is dispatched before this time, even once applied
    /// (2026-12-24T01:00:00Z, or "2026-12-24T01:00 Europe/Berlin").
    #[arg(long, value_name = "TIME", value_parser = window::parse_instant)]
    pub(super) start_at: Option<jiff::Timestamp>,
    /// Throttle: wait between revisions while a replica of the shard's server lags more than
    /// this (none: not read).
    #[arg(long, value_parser = fleetshift_common::duration::parse, value_name = "DURATION")]
    pub(super) throttle_lag: Option<Duration>,
    /// Throttle: wait while active sessions exceed this share of max_connections, e.g. 80%.
    #[arg(long, value_name = "PERCENT", value_parser = parse_percent)]
    pub(super) throttle_active_sessions: Option<u32>,
    /// Throttle: wait while a read-only query (in FILE, returning one number) returns more
    /// than THRESHOLD, e.g. queue-depth.sql:1000.
    #[arg(long, value_name = "FILE:THRESHOLD", value_parser = parse_throttle_query)]
    pub(super) throttle_query: Option<(String, f64)>,
    /// Throttle: the longest a shard's run waits in all before the shard fails, throttled.
    #[arg(long, value_parser = fleetshift_common::duration::parse, value_name = "DURATION", default_value = "30m")]
    pub(super) throttle_max_wait: Duration,
    /// Status updates: while the plan runs, the leader sends a `rollout.status` webhook this
    /// often ("every 15m" or "15m").
    #[arg(long, value_name = "INTERVAL", value_parser = parse_updates)]
    pub(super) updates: Option<Duration>,
    /// Status updates: a minijinja template for each update's text (for chat channels).
    #[arg(long, value_name = "FILE", requires = "updates")]
    pub(super) update_template: Option<PathBuf>,
    #[command(flatten)]
    pub(super) gates: GateArgs,
    #[arg(long, value_enum, default_value = "human")]
    pub(crate) output: Output,
}

impl PlanArgs {
    /// The directory's migration set, validated; `usage` shows how to name the directory.
    pub(crate) fn set(&self, usage: &str) -> Result<MigrationSet, String> {
        let directory = self
            .directory
            .as_deref()
            .ok_or_else(|| format!("a migration directory is required: {usage}"))?;
        sources::load(directory, self.format, &self.alembic)
    }

    /// The plan's terms: the set packed to ship, the shards, waves, limits, duties, schedule
    /// and updates; files the options name are read now.
    pub(crate) fn request(&self, set: &MigrationSet) -> Result<CreatePlanRequest, String> {
        let packed = shipped::pack(set).map_err(|error| error.to_string())?;
        fits(&packed)?;
        let baselines = match self.baselines.as_deref().map(baseline_file::load) {
            None => None,
            Some(Ok(queries)) => Some(BaselinePolicy {
                queries,
                runs: self.baseline_runs,
                degradation_threshold: self.degradation_threshold,
                noise_floor: prost_types::Duration::try_from(self.baseline_noise_floor).ok(),
            }),
            Some(Err(message)) => return Err(message),
        };
        let rollback =
            (self.auto_rollback || self.revision_time_limit.is_some()).then(|| RollbackPolicy {
                on_failure: self.auto_rollback,
                on_degradation: self.auto_rollback,
                revision_time_limit: self
                    .revision_time_limit
                    .and_then(|limit| prost_types::Duration::try_from(limit).ok()),
            });
        let updates = self.updates()?;
        Ok(CreatePlanRequest {
            migration_set: Some(packed),
            target_version: self.target.clone().unwrap_or_default(),
            selector: self.selector.iter().cloned().collect(),
            waves: Some(WavePolicy {
                canary_shards: self.canary,
                percentages: self.waves.clone(),
                max_concurrency_per_wave: self.max_concurrency,
                max_concurrency_per_host: self.max_per_host,
                failure_threshold: self.failure_threshold,
                max_shard_retries: self.max_shard_retries,
            }),
            limits: Some(ExecutionLimits {
                lock_timeout: prost_types::Duration::try_from(self.lock_timeout).ok(),
                statement_timeout: prost_types::Duration::try_from(self.statement_timeout).ok(),
                lock_retries: self.lock_retries,
            }),
            duties: Some(HostDuties {
                require_backup: self.require_backup,
                preflight: Some(PreflightPolicy {
                    long_transaction: prost_types::Duration::try_from(self.long_transaction).ok(),
                    wait_for_blockers: prost_types::Duration::try_from(self.wait_for_blockers).ok(),
                    max_connections_percent: self.max_connections_percent,
                    max_replication_lag: prost_types::Duration::try_from(self.max_replication_lag)
                        .ok(),
                }),
                baselines,
                rollback,
                restore_test: self.restore_test,
                verify_data: self.verify_data.clone(),
                throttle: self.throttle(),
            }),
            allow_drift_shards: self.allow_drift_shards.clone().unwrap_or_default(),
            schedule: self.schedule(),
            updates,
            gates: self.gates.requests(),
        })
    }

    /// The plan's status updates, when it asks for them; the template's file read now.
    pub(super) fn updates(&self) -> Result<Option<StatusUpdates>, String> {
        let Some(every) = self.updates else {
            return Ok(None);
        };
        let template = match &self.update_template {
            Some(path) => std::fs::read_to_string(path).map_err(|error| {
                format!(
                    "cannot read the update template {}: {error}",
                    path.display()
                )
            })?,
            None => String::new(),
        };
        Ok(Some(StatusUpdates {
            every: prost_types::Duration::try_from(every).ok(),
            template,
        }))
    }

    /// The plan's throttle, when it sets a threshold.
    pub(super) fn throttle(&self) -> Option<ThrottlePolicy> {
        if self.throttle_lag.is_none()
            && self.throttle_active_sessions.is_none()
            && self.throttle_query.is_none()
        {
            return None;
        }
        let (query, query_threshold) = self.throttle_query.clone().unwrap_or_default();
        Some(ThrottlePolicy {
            max_replication_lag: self
                .throttle_lag
                .and_then(|lag| prost_types::Duration::try_from(lag).ok()),
            max_active_sessions_percent: self.throttle_active_sessions.unwrap_or_default(),
            query,
            query_threshold,
            max_wait: prost_types::Duration::try_from(self.throttle_max_wait).ok(),
        })
    }

    /// The plan's schedule, when it has one.
    pub(super) fn schedule(&self) -> Option<Schedule> {
        if self.windows.is_empty() && self.start_at.is_none() {
            return None;
        }
        Some(Schedule {
            windows: self.windows.clone(),
            start_at: self.start_at.map(|at| prost_types::Timestamp {
                seconds: at.as_second(),
                nanos: at.subsec_nanosecond(),
            }),
        })
    }
}

/// `every 15m` or `15m`.
fn parse_updates(text: &str) -> Result<Duration, String> {
    let interval = text.trim();
    let interval = interval.strip_prefix("every").map_or(interval, str::trim);
    fleetshift_common::duration::parse(interval)
}

/// `80%` or `80`, from 1 to 100.
fn parse_percent(text: &str) -> Result<u32, String> {
    let number = text.trim().trim_end_matches('%');
    match number.parse::<u32>() {
        Ok(percent @ 1..=100) => Ok(percent),
        _ => Err(format!(
            "{text:?} is not a percentage from 1 to 100 (e.g. 80%)"
        )),
    }
}

/// `FILE:THRESHOLD`: the file's query, read now, and the number above which to wait.
fn parse_throttle_query(text: &str) -> Result<(String, f64), String> {
    let (file, threshold) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("{text:?} is not FILE:THRESHOLD (e.g. queue-depth.sql:1000)"))?;
    let threshold: f64 = threshold
        .parse()
        .map_err(|_| format!("{threshold:?} in {text:?} is not a number"))?;
    let query = std::fs::read_to_string(file)
        .map_err(|error| format!("cannot read the throttle query {file}: {error}"))?;
    if query.trim().is_empty() {
        return Err(format!("the throttle query {file} is empty"));
    }
    Ok((query.trim().to_owned(), threshold))
}

/// A window, read here so a typo is refused before anything is sent.
fn parse_window(text: &str) -> Result<String, String> {
    window::Window::parse(text)
        .map(|_| text.to_owned())
        .map_err(|error| error.to_string())
}

/// Room a plan's request and its assignments need besides the set.
const TERMS_ROOM: usize = 1 << 20;

/// Refuses a set too large to travel in a plan request or an assignment, before it is sent.
fn fits(packed: &proto::MigrationSet) -> Result<(), String> {
    let size = packed.encoded_len();
    if size + TERMS_ROOM <= MESSAGE_LIMIT {
        return Ok(());
    }
    let mebibytes = |bytes: usize| bytes.div_ceil(1 << 20);
    let largest = packed
        .files
        .iter()
        .max_by_key(|file| file.content.len())
        .map(|file| {
            format!(
                " (the largest file, {}, has {} MiB)",
                file.path,
                mebibytes(file.content.len())
            )
        })
        .unwrap_or_default();
    Err(format!(
        "the migration set is {} MiB{largest}; a plan carries at most {} MiB: load bulk data from files (COPY) instead of revisions, or split the set",
        mebibytes(size),
        mebibytes(MESSAGE_LIMIT - TERMS_ROOM)
    ))
}

/// `orders`, `billing.invoices:id,total`.
fn parse_data_check(text: &str) -> Result<DataCheck, String> {
    let (table, columns) = match text.split_once(':') {
        Some((table, columns)) => (table, columns.split(',').map(str::trim).collect()),
        None => (text, Vec::new()),
    };
    let table = table.trim();
    if table.is_empty() || columns.iter().any(|column: &&str| column.is_empty()) {
        return Err(format!(
            "{text:?} is not TABLE or TABLE:COLUMN,COLUMN (e.g. orders:id,total)"
        ));
    }
    Ok(DataCheck {
        table: table.to_owned(),
        columns: columns.into_iter().map(str::to_owned).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_too_large_to_travel_is_refused_naming_its_largest_file() {
        let file = |path: &str, bytes: usize| proto::MigrationFile {
            path: path.to_owned(),
            content: vec![b'x'; bytes],
        };
        let set = |files| proto::MigrationSet {
            files,
            ..proto::MigrationSet::default()
        };
        assert_eq!(fits(&set(vec![file("1_small.sql", 5 << 20)])), Ok(()));
        let refused = fits(&set(vec![
            file("1_small.sql", 1 << 20),
            file("2_reference_data.sql", MESSAGE_LIMIT),
        ]))
        .expect_err("too large");
        assert!(
            refused.contains("2_reference_data.sql, has 64 MiB")
                && refused.contains("at most 63 MiB"),
            "{refused}"
        );
    }

    #[test]
    fn a_data_check_names_a_table_and_maybe_its_columns() {
        let check = parse_data_check("billing.invoices:id, total").expect("valid");
        assert_eq!(check.table, "billing.invoices");
        assert_eq!(check.columns, ["id", "total"]);
        assert!(
            parse_data_check("orders")
                .expect("valid")
                .columns
                .is_empty()
        );
        for bad in ["", ":id", "orders:", "orders:id,,total"] {
            assert!(parse_data_check(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn throttle_arguments_are_read_before_anything_is_sent() {
        assert_eq!(parse_percent("80%"), Ok(80));
        assert_eq!(parse_percent("100"), Ok(100));
        assert!(parse_percent("0%").is_err() && parse_percent("120%").is_err());
        let directory = tempfile::tempdir().expect("tempdir");
        let file = directory.path().join("depth.sql");
        std::fs::write(&file, "SELECT count(*) FROM jobs;\n").expect("query");
        let spec = format!("{}:1000", file.display());
        assert_eq!(
            parse_throttle_query(&spec),
            Ok(("SELECT count(*) FROM jobs;".to_owned(), 1000.0))
        );
        assert!(parse_throttle_query(&format!("{}:many", file.display())).is_err());
        assert!(
            parse_throttle_query("/nowhere.sql:1")
                .expect_err("no file")
                .contains("cannot read the throttle query /nowhere.sql")
        );
    }
}
