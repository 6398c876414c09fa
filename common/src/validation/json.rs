//! A validation report as JSON: what `status --output json` and the webhooks print.

use serde_json::{Value, json};

use crate::proto::v1::ValidationReport;

/// A shard's report as JSON prints it; stable field names (see `docs/configuration.md`).
pub fn report_json(report: &ValidationReport) -> Value {
    json!({
        "passed": report.passed,
        "failures": report.failures,
        "notes": report.notes,
        "row_counts": report.row_counts.iter().map(|rows| json!({
            "table": rows.table,
            "before": rows.before,
            "after": rows.after,
            "estimated": rows.estimated,
        })).collect::<Vec<_>>(),
        "checksums": report.checksums.iter().map(|sum| json!({
            "table": sum.table,
            "columns": sum.columns,
            "rows_before": sum.rows_before,
            "rows_after": sum.rows_after,
            "before": sum.before,
            "after": sum.after,
            "equal": sum.equal,
        })).collect::<Vec<_>>(),
        "foreign_keys": report.foreign_keys.iter().map(|key| json!({
            "constraint": key.constraint,
            "violating_rows": key.violating_rows,
            "examples": key.examples,
            "error": (!key.error.is_empty()).then_some(&key.error),
        })).collect::<Vec<_>>(),
        "performance": report.performance.iter().map(|timing| json!({
            "query": timing.name,
            "p50_ms": timing.p50_ms,
            "p50_ratio": (timing.p50_ratio > 0.0).then_some(timing.p50_ratio),
            "degraded": timing.degraded,
            "error": (!timing.error.is_empty()).then_some(&timing.error),
        })).collect::<Vec<_>>(),
        "canary": (!report.canary_shard.is_empty()).then(|| json!({
            "shard": report.canary_shard,
            "fingerprint": report.canary_fingerprint,
        })),
    })
}
