//! The notice's template context: every variable the built-in notice and a user's template
//! use, filled from the plan, the shards it covers (their engines, servers, versions and masked
//! URLs, as their agents announce them) and the agent's pool settings. A variable the plan has
//! no fact for stays undefined, so `{{ x or "default" }}` works.

use std::collections::BTreeMap;
use std::time::SystemTime;

use fleetshift_common::proto::v1::{Plan, RehearsalSummary, ShardSummary};
use fleetshift_coordinator::rollout::waves;
use serde_json::{Value, json};

use super::super::progress::risk_json;
use super::super::validation;
use super::schedule;

/// What the schedule and contact flags add to the plan.
#[derive(Debug, Default)]
pub struct Announcement {
    pub start: Option<String>,
    pub duration: Option<String>,
    pub end: Option<String>,
    pub support_contact: Option<String>,
    pub emergency_contact: Option<String>,
}

/// What waits on a table while a statement holding `lock` runs.
fn impact(lock: &str) -> &'static str {
    match lock {
        "ACCESS EXCLUSIVE" => "reads and writes wait while it runs",
        "SHARE" => "writes wait while it runs",
        "SHARE UPDATE EXCLUSIVE" => "none: built concurrently",
        _ => "none: row locks only",
    }
}

/// The longest blocking lock a rehearsal held on `table`, at its shard's size: `ShareLock
/// for ~12.3 s on shard-7 (E6)`.
fn measured_hold(plan: &Plan, table: &str) -> Option<String> {
    let qualified = format!(".{table}");
    plan.rehearsals
        .iter()
        .flat_map(|rehearsal| {
            rehearsal
                .findings
                .iter()
                .map(move |finding| (rehearsal, finding))
        })
        .filter(|(_, finding)| {
            !finding.lock_mode.is_empty()
                && (finding.relation == table || finding.relation.ends_with(&qualified))
        })
        .max_by_key(|(_, finding)| {
            finding
                .estimated_hold
                .map(|hold| (hold.seconds, hold.nanos))
        })
        .map(|(rehearsal, finding)| {
            format!(
                "{} for ~{} on {} ({})",
                finding.lock_mode,
                seconds(finding.estimated_hold),
                rehearsal.shard_id,
                finding.hint
            )
        })
}

fn seconds(duration: Option<prost_types::Duration>) -> String {
    duration.map_or_else(
        || "an unknown time".to_owned(),
        |duration| {
            format!(
                "{:.1} s",
                duration.seconds as f64 + f64::from(duration.nanos) / 1e9
            )
        },
    )
}

/// A kept rehearsal as the template sees it.
fn rehearsal_context(rehearsal: &RehearsalSummary) -> Value {
    json!({
        "shard": rehearsal.shard_id,
        "shard_version": rehearsal.shard_version,
        "passed": rehearsal.passed,
        "failure": rehearsal.failure,
        "rehearsed_at": rehearsal.rehearsed_at.map(|at| at.to_string()),
        "findings": rehearsal.findings.iter().map(|finding| json!({
            "hint": finding.hint,
            "title": finding.title,
            "relation": finding.relation,
            "place": finding.place,
            "lock_mode": finding.lock_mode,
            "estimated_hold": seconds(finding.estimated_hold),
        })).collect::<Vec<_>>(),
    })
}

/// Each table the plan changes: its operations, what waits on it while the worst lock is held,
/// the largest shard's row estimate and a rehearsal's measured hold, when known.
fn affected_tables(plan: &Plan) -> Vec<Value> {
    let mut tables: BTreeMap<&str, (Vec<&str>, &str)> = BTreeMap::new();
    for change in &plan.changes {
        let entry = tables
            .entry(change.table.as_str())
            .or_insert((Vec::new(), ""));
        if !entry.0.contains(&change.operation.as_str()) {
            entry.0.push(change.operation.as_str());
        }
        if strength(&change.lock) >= strength(entry.1) {
            entry.1 = change.lock.as_str();
        }
    }
    tables
        .iter()
        .map(|(name, (operations, lock))| {
            let mut table = json!({
                "name": name,
                "operation": operations.join(", "),
                "downtime_estimate": impact(lock),
            });
            // The largest shard's estimate, when the shards' catalogs reported the table.
            let reported = || {
                plan.analyses
                    .iter()
                    .flat_map(|analysis| &analysis.tables)
                    .filter(|facts| facts.table == *name)
            };
            let rows = reported().map(|facts| facts.estimated_rows).max();
            let partitions = reported().map(|facts| facts.partitions).max();
            if let (Some(rows), Some(object)) = (rows, table.as_object_mut()) {
                object.insert("estimated_rows".to_owned(), json!(rows));
            }
            // A partitioned table's index is built partition by partition.
            if let (Some(partitions @ 1..), Some(object)) = (partitions, table.as_object_mut()) {
                object.insert("partitions".to_owned(), json!(partitions));
                if operations.contains(&"CREATE INDEX") && *lock == "SHARE UPDATE EXCLUSIVE" {
                    object.insert(
                        "downtime_estimate".to_owned(),
                        json!(format!(
                            "none: built concurrently, partition by partition ({partitions} partitions)"
                        )),
                    );
                }
            }
            if let (Some(hold), Some(object)) = (measured_hold(plan, name), table.as_object_mut()) {
                object.insert("measured_hold".to_owned(), json!(hold));
            }
            table
        })
        .collect()
}

/// What rolls a shard back on its own under this plan, in words.
fn rollback_triggers(plan: &Plan) -> Vec<String> {
    let duties = plan.duties.clone().unwrap_or_default();
    let Some(rollback) = duties.rollback else {
        return Vec::new();
    };
    let mut triggers = Vec::new();
    if rollback.on_failure {
        triggers.push("a revision fails on the shard".to_owned());
        if !duties.verify_data.is_empty() {
            triggers.push("a post-migration validation fails on the shard".to_owned());
        }
    }
    if rollback.on_degradation {
        let threshold = duties
            .baselines
            .map(|baselines| baselines.degradation_threshold)
            .filter(|threshold| *threshold > 0.0)
            .unwrap_or(1.5);
        triggers.push(format!(
            "a baseline query's median grows past {threshold}x its value before the migration"
        ));
    }
    if let Some(limit) = rollback
        .revision_time_limit
        .and_then(|limit| std::time::Duration::try_from(limit).ok())
    {
        triggers.push(format!(
            "a revision runs longer than {}",
            fleetshift_common::duration::format(limit)
        ));
    }
    triggers
}

/// How strongly a lock blocks, for picking a table's worst.
fn strength(lock: &str) -> u8 {
    match lock {
        "ACCESS EXCLUSIVE" => 3,
        "SHARE" => 2,
        "SHARE UPDATE EXCLUSIVE" => 1,
        _ => 0,
    }
}

/// The template's variables for `plan` over the fleet's `shards`. Absent keys stay undefined
/// on purpose.
pub fn context(plan: &Plan, shards: &[ShardSummary], announcement: &Announcement) -> Value {
    let environment = plan
        .selector
        .get("env")
        .or_else(|| plan.selector.get("environment"));
    let shard_count = waves::shard_count(plan);
    let affected_tables = affected_tables(plan);
    let schema_changes: Vec<Value> = plan
        .changes
        .iter()
        .map(|change| {
            json!({
                "type": change.operation,
                "table": change.table,
                "description": change.statement,
                "impact": impact(&change.lock),
                "revision": change.revision,
            })
        })
        .collect();
    let mut context = json!({
        "subject": format!(
            "Database maintenance: schema version {} on {shard_count} shard(s){}",
            plan.target_version,
            environment.map(|environment| format!(" ({environment})")).unwrap_or_default()
        ),
        "maintenance_type": "schema migration",
        "maintenance_id": plan.plan_id,
        "migration_id": plan.plan_id,
        "migration_type": "schema",
        "migration_version": plan.target_version,
        "migration_format": plan.set_format,
        "migration_command": format!("fleetshift apply {} --watch", plan.plan_id),
        "rollback_command": format!("fleetshift rollback {}", plan.plan_id),
        "cancel_command": format!("fleetshift cancel {} --reason \"<why>\"", plan.plan_id),
        "rollback_triggers": rollback_triggers(plan),
        "shard_count": shard_count,
        "wave_count": plan.waves.len(),
        "error_threshold": plan.policy.as_ref().map_or(1, |policy| policy.failure_threshold),
        "affected_tables": affected_tables,
        "schema_changes": schema_changes,
        "risk": risk_json(&plan.risk.clone().unwrap_or_default()),
        "rehearsals": plan.rehearsals.iter().map(rehearsal_context).collect::<Vec<_>>(),
        "validation": validation::notice_context(plan),
        "rollback_automatic": plan
            .duties
            .as_ref()
            .and_then(|duties| duties.rollback.as_ref())
            .is_some_and(|rollback| rollback.on_failure),
        "approvals": plan.approvals.iter().map(|approval| json!({
            "approver": approval.approver,
            "at": approval.at.map(|at| at.to_string()),
            "comment": approval.comment,
            "capacity": approval.capacity,
        })).collect::<Vec<_>>(),
        "timestamp": prost_types::Timestamp::from(SystemTime::now()).to_string(),
        "windows": plan.schedule.as_ref().map(|schedule| schedule.windows.clone()).unwrap_or_default(),
    });
    let expected = schedule::expected(plan, jiff::Timestamp::now());
    let optional = [
        ("environment", environment.cloned()),
        ("start_time", announcement.start.clone().or(expected.start)),
        (
            "duration",
            announcement.duration.clone().or(expected.duration),
        ),
        ("end_time", announcement.end.clone().or(expected.end)),
        ("support_contact", announcement.support_contact.clone()),
        ("emergency_contact", announcement.emergency_contact.clone()),
    ];
    let optional = optional
        .into_iter()
        .chain(super::facts::variables(plan, shards));
    if let Some(object) = context.as_object_mut() {
        for (key, value) in optional {
            if let Some(value) = value {
                object.insert(key.to_owned(), Value::String(value));
            }
        }
    }
    context
}
