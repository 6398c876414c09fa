//! How post-migration validation reads: each shard's report as lines for people (JSON prints
//! [`report_json`]), and what a plan will check, for the maintenance notice.

use fleetshift_common::proto::v1::{Plan, ShardTask, ValidationReport};
use fleetshift_common::validation;
use fleetshift_coordinator::rollout::waves;
use serde_json::{Value, json};

pub use fleetshift_common::validation::report_json;

/// `users-1: passed; rows orders 10 → 10, notes 0 (estimated); same schema as canary users-0`,
/// then a line per failure and note.
pub fn report_lines(shard: &str, report: &ValidationReport) -> Vec<String> {
    let mut parts = vec![if report.passed { "passed" } else { "FAILED" }.to_owned()];
    let rows: Vec<String> = report
        .row_counts
        .iter()
        .map(|rows| {
            let count =
                |count: Option<i64>| count.map_or_else(|| "-".to_owned(), |n| n.to_string());
            format!(
                "{} {} → {}{}",
                rows.table,
                count(rows.before),
                count(rows.after),
                if rows.estimated { " (estimated)" } else { "" }
            )
        })
        .collect();
    if !rows.is_empty() {
        parts.push(format!("rows {}", rows.join(", ")));
    }
    let equal = report.checksums.iter().filter(|sum| sum.equal).count();
    if !report.checksums.is_empty() {
        parts.push(format!(
            "{equal}/{} checksum(s) equal",
            report.checksums.len()
        ));
    }
    if !report.performance.is_empty() {
        let degraded = report
            .performance
            .iter()
            .filter(|timing| timing.degraded)
            .count();
        parts.push(format!(
            "{} baseline(s), {degraded} degraded",
            report.performance.len()
        ));
    }
    if !report.canary_shard.is_empty() && report.passed {
        parts.push(format!("same schema as canary {}", report.canary_shard));
    }
    let mut lines = vec![format!("{shard}: {}", parts.join("; "))];
    lines.extend(
        report
            .failures
            .iter()
            .map(|failure| format!("  failed: {failure}")),
    );
    lines.extend(report.notes.iter().map(|note| format!("  note: {note}")));
    lines
}

/// The plan's tasks that have a report.
fn validated(plan: &Plan) -> impl Iterator<Item = (&ShardTask, &ValidationReport)> {
    waves::planned_tasks(plan)
        .filter_map(|task| task.validation.as_ref().map(|report| (task, report)))
}

/// Prints the post-migration validation section of `status`, when any shard has a report.
pub fn print_section(plan: &Plan) {
    let mut reports = validated(plan).peekable();
    if reports.peek().is_none() {
        return;
    }
    println!("post-migration validation:");
    for (task, report) in reports {
        for line in report_lines(&task.shard_id, report) {
            println!("  {line}");
        }
    }
}

/// The notice's `validation`: what every shard is checked for after its revisions, and the
/// results so far.
pub fn notice_context(plan: &Plan) -> Value {
    let duties = plan.duties.clone().unwrap_or_default();
    let mut checks = vec![
        "schema integrity: every index valid and ready, constraints validated (those left NOT VALID listed), no invalid objects left behind".to_owned(),
        "schema fingerprint equal to the canary shard's at the same version".to_owned(),
        format!(
            "row counts of the touched tables before and after (exact under {} MiB, estimated above)",
            validation::EXACT_COUNT_BYTES / (1024 * 1024)
        ),
        "foreign keys not validated checked for violating rows, without blocking locks".to_owned(),
    ];
    checks.extend(duties.verify_data.iter().map(|check| {
        format!(
            "data checksum of {} before and after: a difference fails the shard",
            validation::label(check)
        )
    }));
    if let Some(baselines) = &duties.baselines {
        checks.push(format!(
            "query performance: {} baseline quer(ies) timed before and after",
            baselines.queries.len()
        ));
    }
    let reports: Vec<(&ShardTask, &ValidationReport)> = validated(plan).collect();
    let failed: Vec<Value> = reports
        .iter()
        .filter(|(_, report)| !report.passed)
        .map(|(task, report)| json!({"shard": task.shard_id, "failures": report.failures}))
        .collect();
    json!({
        "checks": checks,
        "validated_shards": reports.len(),
        "passed_shards": reports.len() - failed.len(),
        "failed": failed,
    })
}
