//! The notice's variables that come from beyond the plan's own fields: the shards it covers as
//! their agents announce them, the agent's pool, the plan's duties, and the approvals by
//! capacity. Each is `None` when the plan has no such fact, so the variable stays undefined.

use std::collections::BTreeSet;

use fleetshift_common::duration;
use fleetshift_common::engine::POOL;
use fleetshift_common::ledger::shown_version;
use fleetshift_common::proto::v1::{Engine, Plan, ShardSummary};
use fleetshift_coordinator::rollout::waves;

/// Every such variable, by name.
pub fn variables(plan: &Plan, shards: &[ShardSummary]) -> Vec<(&'static str, Option<String>)> {
    let planned: BTreeSet<&str> = waves::planned_tasks(plan)
        .map(|task| task.shard_id.as_str())
        .collect();
    let covered: Vec<&ShardSummary> = shards
        .iter()
        .filter(|shard| planned.contains(shard.shard_id.as_str()))
        .collect();
    let mut variables = vec![
        ("database_engine", database_engine(&covered)),
        ("previous_version", previous_version(plan, &covered)),
        ("database_url_masked", masked_urls(&covered)),
    ];
    variables.extend(duty_variables(plan));
    variables.extend(pool_variables());
    variables.extend(approvals(plan));
    variables
}

/// From the plan's duties: the revision time limit, the baselines and their threshold, the
/// pre-flight connections gate.
fn duty_variables(plan: &Plan) -> [(&'static str, Option<String>); 4] {
    let duties = plan.duties.clone().unwrap_or_default();
    let rollback = duties.rollback.unwrap_or_default();
    let baselines = duties.baselines.unwrap_or_default();
    let has_baselines = !baselines.queries.is_empty();
    let threshold = if baselines.degradation_threshold > 0.0 {
        baselines.degradation_threshold
    } else {
        1.5
    };
    [
        (
            "rollback_timeout",
            rollback
                .revision_time_limit
                .and_then(|limit| std::time::Duration::try_from(limit).ok())
                .map(duration::format),
        ),
        (
            "performance_threshold",
            has_baselines
                .then(|| format!("{threshold}x a baseline query's median before the migration")),
        ),
        (
            "baseline_db_query",
            has_baselines.then(|| {
                baselines
                    .queries
                    .iter()
                    .map(|query| format!("{}: {}", query.name, query.sql.trim()))
                    .collect::<Vec<_>>()
                    .join("; ")
            }),
        ),
        (
            "baseline_connections",
            duties.preflight.map(|preflight| {
                let percent = match preflight.max_connections_percent {
                    0 => 90,
                    percent => percent,
                };
                format!(
                    "below {percent}% of max_connections on each shard (checked before its first DDL)"
                )
            }),
        ),
    ]
}

/// `dba_approval` … `sec_approval`: each capacity's approval, when given.
fn approvals(plan: &Plan) -> [(&'static str, Option<String>); 4] {
    [
        ("dba", "dba_approval"),
        ("eng", "eng_approval"),
        ("ops", "ops_approval"),
        ("sec", "sec_approval"),
    ]
    .map(|(capacity, name)| {
        let given = plan
            .approvals
            .iter()
            .find(|approval| approval.capacity == capacity)
            .map(|approval| {
                let at = approval
                    .at
                    .map(|at| format!(" at {at}"))
                    .unwrap_or_default();
                let comment = if approval.comment.is_empty() {
                    String::new()
                } else {
                    format!(": {}", approval.comment)
                };
                format!("approved by {}{at}{comment}", approval.approver)
            });
        (name, given)
    })
}

/// The agent's pool per shard (fleetshift's own, the same on every shard).
fn pool_variables() -> [(&'static str, Option<String>); 5] {
    [
        ("pool_size", Some(POOL.size.to_string())),
        ("pool_timeout", Some(duration::format(POOL.acquire_timeout))),
        ("pool_recycle", Some(duration::format(POOL.recycle))),
        ("max_overflow", Some("0".to_owned())),
        (
            "pool_pre_ping",
            Some(format!(
                "after {} idle",
                duration::format(POOL.ping_after_idle)
            )),
        ),
    ]
}

/// `PostgreSQL 16.4`, or each engine and version the shards run, comma-separated.
fn database_engine(shards: &[&ShardSummary]) -> Option<String> {
    let engines: BTreeSet<String> = shards
        .iter()
        .map(|shard| {
            let name = match shard.engine() {
                Engine::Sqlite => "SQLite",
                Engine::Postgres | Engine::Unspecified => "PostgreSQL",
            };
            match shard.server.as_ref().map(|server| server.version.as_str()) {
                Some(version) if !version.is_empty() => format!("{name} {version}"),
                _ => name.to_owned(),
            }
        })
        .collect();
    joined(engines)
}

/// The versions the shards had before the plan: recorded by their first run, else (not run
/// yet) where they are now; `base` for none.
fn previous_version(plan: &Plan, shards: &[&ShardSummary]) -> Option<String> {
    let versions: BTreeSet<String> = waves::planned_tasks(plan)
        .map(|task| {
            let now = shards
                .iter()
                .find(|shard| shard.shard_id == task.shard_id)
                .map(|shard| shard.current_version.as_str());
            let version = if task.previous_version.is_empty() {
                now.unwrap_or_default()
            } else {
                task.previous_version.as_str()
            };
            shown_version(version).to_owned()
        })
        .collect();
    joined(versions)
}

/// The first shard's URL, password masked, and how many more there are.
fn masked_urls(shards: &[&ShardSummary]) -> Option<String> {
    let urls: Vec<&str> = shards
        .iter()
        .filter_map(|shard| shard.server.as_ref())
        .map(|server| server.masked_url.as_str())
        .filter(|url| !url.is_empty())
        .collect();
    let first = urls.first()?;
    Some(match urls.len() {
        1 => (*first).to_owned(),
        count => format!("{first} (and {} more)", count - 1),
    })
}

fn joined(items: BTreeSet<String>) -> Option<String> {
    (!items.is_empty()).then(|| items.into_iter().collect::<Vec<_>>().join(", "))
}
