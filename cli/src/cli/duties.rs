//! How the records of the agents' host duties read: backups, baselines and automatic
//! rollbacks, one line each for people and one object each for JSON.

use fleetshift_common::proto::v1::{
    BackupRecord, BaselineMeasured, BaselinePhase, QueryTiming, RollbackRecord, RollbackStarted,
};
use serde_json::json;

/// A backup record as JSON prints it.
pub fn backup_json(backup: &BackupRecord) -> serde_json::Value {
    json!({
        "backup_id": backup.backup_id,
        "location": backup.location,
        "size_bytes": backup.size_bytes,
        "sha256": backup.sha256,
        "verified_entries": backup.verified_entries,
        "database_bytes": backup.database_bytes,
        "restored_tables": backup.restored_tables,
        "duration_ms": backup
            .duration
            .and_then(|took| std::time::Duration::try_from(took).ok())
            .map(|took| took.as_millis()),
        "taken_at": backup.taken_at.map(|at| at.to_string()),
    })
}

/// `before`, `after`, `recovered`.
fn phase_name(measured: &BaselineMeasured) -> &'static str {
    match measured.phase() {
        BaselinePhase::Before => "before",
        BaselinePhase::After => "after",
        BaselinePhase::Recovered => "recovered",
        BaselinePhase::Unspecified => "unknown",
    }
}

/// One phase of baselines as JSON prints it.
pub fn baseline_json(measured: &BaselineMeasured) -> serde_json::Value {
    json!({
        "phase": phase_name(measured),
        "degraded": measured.degraded,
        "queries": measured.queries.iter().map(|timing| json!({
            "name": timing.name,
            "runs": timing.runs,
            "min_ms": timing.min_ms,
            "mean_ms": timing.mean_ms,
            "p50_ms": timing.p50_ms,
            "p95_ms": timing.p95_ms,
            "max_ms": timing.max_ms,
            "stddev_ms": timing.stddev_ms,
            "p50_ratio": (timing.p50_ratio > 0.0).then_some(timing.p50_ratio),
            "degraded": timing.degraded,
            "error": (!timing.error.is_empty()).then_some(&timing.error),
        })).collect::<Vec<_>>(),
        "top_statements": measured.top_statements.iter().map(|statement| json!({
            "query": statement.query,
            "calls": statement.calls,
            "total_ms": statement.total_ms,
            "mean_ms": statement.mean_ms,
        })).collect::<Vec<_>>(),
    })
}

/// An automatic rollback as JSON prints it.
pub fn rollback_json(rollback: &RollbackRecord) -> serde_json::Value {
    json!({
        "reason": rollback.reason,
        "reverted_to": rollback.reverted_to,
        "revisions": rollback.revisions,
        "recovered": rollback.recovered,
    })
}

/// `baselines after: by_account p50 12.10ms (151.2x, DEGRADED), …`
pub fn baseline_line(measured: &BaselineMeasured) -> String {
    let queries: Vec<String> = measured.queries.iter().map(timing_text).collect();
    format!("baselines {}: {}", phase_name(measured), queries.join(", "))
}

fn timing_text(timing: &QueryTiming) -> String {
    if !timing.error.is_empty() {
        return format!("{} FAILED ({})", timing.name, timing.error);
    }
    let ratio = if timing.p50_ratio > 0.0 {
        format!(
            ", {:.1}x{}",
            timing.p50_ratio,
            if timing.degraded { " DEGRADED" } else { "" }
        )
    } else {
        String::new()
    };
    format!(
        "{} p50 {:.2}ms (p95 {:.2}ms, {} runs{ratio})",
        timing.name, timing.p50_ms, timing.p95_ms, timing.runs
    )
}

/// `rolling back to 1: performance degraded: …`
pub fn rollback_line(started: &RollbackStarted) -> String {
    format!(
        "rolling back to {}: {}",
        started.target_version, started.reason
    )
}
