//! `fleetshift rehearse <plan>`: the plan's revisions run by each chosen shard's agent on a
//! sampled copy beside the shard, under the tracer. The coordinator keeps every result with the
//! plan (its approval gate reads them) and assesses the plan's risk again with what was measured.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use fleetshift_common::duration;
use fleetshift_common::proto::v1::{
    GetPlanRequest, Plan, RehearsalSummary, RehearsePlanRequest, RehearsePlanResponse, RiskLevel,
    ShardRehearsal,
};
use fleetshift_common::rollout_names::risk_level_name;
use serde_json::{Value, json};

use super::Output;
use super::fleet::{Connection, client, refused};
use super::rehearse::{micros, parse_percent};
use crate::exit;

#[derive(Debug, Args)]
pub struct RehearseArgs {
    #[command(flatten)]
    connection: Connection,
    /// The plan to rehearse.
    plan: String,
    /// Which of the plan's shards (a glob over shard ids, e.g. 'eu-*'); default: all of them.
    /// A HIGH plan needs one rehearsal per schema version among its shards, a CRITICAL
    /// plan one per shard.
    #[arg(long, default_value = "")]
    shards: String,
    /// Percent of each table's blocks copied into the scratch database (TABLESAMPLE SYSTEM).
    #[arg(long, default_value = "10%", value_parser = parse_percent)]
    sample: f64,
    /// At most this many rows per table.
    #[arg(long, default_value_t = 1_000_000)]
    max_rows_per_table: u64,
    /// How long each shard's rehearsal may take, building its sample included.
    #[arg(long, default_value = "1h", value_parser = duration::parse)]
    timeout: Duration,
    /// A blocking hazard on a table with at least this many rows raises the plan to HIGH.
    #[arg(long, default_value_t = 1_000_000)]
    hazard_table_rows: i64,
    /// …or on a table of at least this many bytes.
    #[arg(long, default_value_t = 1 << 30)]
    hazard_table_bytes: i64,
    #[arg(long, value_enum, default_value = "human")]
    output: Output,
}

/// Exit 0: every shard passed; 11: a hazard was found; 1: a revision failed on a sample or a
/// shard could not be rehearsed.
pub async fn run(arguments: RehearseArgs) -> ExitCode {
    let mut client = match client(&arguments.connection, arguments.output).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    let request = RehearsePlanRequest {
        plan_id: arguments.plan.clone(),
        shards: arguments.shards.clone(),
        sample_percent: arguments.sample,
        max_rows_per_table: arguments.max_rows_per_table,
        timeout: prost_types::Duration::try_from(arguments.timeout).ok(),
        hazard_table_rows: arguments.hazard_table_rows,
        hazard_table_bytes: arguments.hazard_table_bytes,
    };
    if arguments.output == Output::Human {
        eprintln!(
            "rehearsing plan {} on a {}% sample of {} (each agent builds a scratch copy beside its shard)…",
            arguments.plan,
            arguments.sample,
            if arguments.shards.is_empty() {
                "each of its shards"
            } else {
                &arguments.shards
            }
        );
    }
    let mut call = tonic::Request::new(request);
    call.set_timeout(arguments.timeout + Duration::from_secs(60));
    let response = match client.rehearse_plan(call).await {
        Ok(response) => response.into_inner(),
        Err(status) => return refused(&arguments.connection, arguments.output, &status),
    };
    let plan = client
        .get_plan(GetPlanRequest {
            plan_id: arguments.plan.clone(),
        })
        .await
        .map(tonic::Response::into_inner)
        .ok();
    match arguments.output {
        Output::Json => println!("{}", response_json(&response, plan.as_ref())),
        Output::Human => print_response(&response, plan.as_ref()),
    }
    ExitCode::from(verdict(&response))
}

fn verdict(response: &RehearsePlanResponse) -> u8 {
    let failed = !response.errors.is_empty()
        || response
            .rehearsals
            .iter()
            .any(|rehearsal| !rehearsal.failure.is_empty());
    if failed {
        exit::FAILED
    } else if response.rehearsals.iter().all(|rehearsal| rehearsal.passed) {
        exit::OK
    } else {
        exit::FINDINGS
    }
}

fn print_response(response: &RehearsePlanResponse, plan: Option<&Plan>) {
    for rehearsal in &response.rehearsals {
        print_rehearsal(rehearsal);
    }
    for error in &response.errors {
        println!("could not rehearse {error}");
    }
    let passed = response.rehearsals.iter().filter(|r| r.passed).count();
    println!(
        "{} shard(s) rehearsed: {passed} passed, {} did not; {} could not be rehearsed",
        response.rehearsals.len(),
        response.rehearsals.len() - passed,
        response.errors.len()
    );
    if let Some(risk) = plan.and_then(|plan| plan.risk.as_ref()) {
        println!(
            "plan {} risk is now {} (score {}); `fleetshift plan` shows its factors",
            response.plan_id,
            level_name(risk.level),
            risk.score
        );
    }
}

fn print_rehearsal(rehearsal: &ShardRehearsal) {
    let verdict = if !rehearsal.failure.is_empty() {
        "FAILED"
    } else if rehearsal.passed {
        "passed"
    } else {
        "HAZARDS"
    };
    println!(
        "shard {} at version {} (agent {}): {verdict}, {}% sample, took {}",
        rehearsal.shard_id,
        rehearsal.shard_version,
        rehearsal.agent_id,
        rehearsal.sample_percent,
        took(rehearsal.duration)
    );
    for table in &rehearsal.tables {
        let how = if table.whole {
            "copied whole".to_owned()
        } else {
            format!("{} of ~{} rows", table.rows_sampled, table.rows_in_shard)
        };
        println!("  sample {}: {how}", table.table);
    }
    for estimate in &rehearsal.estimates {
        let partitions = if estimate.partitions > 0 {
            format!(", index built on {} partitions", estimate.partitions)
        } else {
            String::new()
        };
        println!(
            "  {}: {} on the sample x {:.1} ({}) = ~{} on the shard{partitions}",
            estimate.place,
            took(estimate.sample),
            estimate.factor,
            estimate.table,
            took(estimate.estimated)
        );
    }
    if !rehearsal.failure.is_empty() {
        println!("  failed on the sample: {}", rehearsal.failure);
    }
    if !rehearsal.degradation.is_empty() {
        println!("  slower on the sample: {}", rehearsal.degradation);
    }
    for finding in &rehearsal.findings {
        let lock = if finding.lock_mode.is_empty() {
            String::new()
        } else {
            format!(
                " [{} held {} on the sample, ~{} on the shard]",
                finding.lock_mode,
                took(finding.held),
                took(finding.estimated_hold)
            )
        };
        println!(
            "  {} {}: {} — {}{lock}\n      {}",
            finding.hint, finding.place, finding.title, finding.relation, finding.detail
        );
    }
}

/// A wire duration as people read it; `-` when there is none.
fn took(duration: Option<prost_types::Duration>) -> String {
    duration
        .and_then(|duration| Duration::try_from(duration).ok())
        .map_or_else(
            || "-".to_owned(),
            |duration| micros(u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)),
        )
}

fn millis(duration: Option<prost_types::Duration>) -> Option<u128> {
    duration
        .and_then(|duration| Duration::try_from(duration).ok())
        .map(|duration| duration.as_millis())
}

fn level_name(level: i32) -> &'static str {
    risk_level_name(RiskLevel::try_from(level).unwrap_or(RiskLevel::Unspecified))
}

fn response_json(response: &RehearsePlanResponse, plan: Option<&Plan>) -> Value {
    json!({
        "plan": response.plan_id,
        "passed": verdict(response) == exit::OK,
        "rehearsals": response.rehearsals.iter().map(rehearsal_json).collect::<Vec<_>>(),
        "errors": response.errors,
        "risk": plan.and_then(|plan| plan.risk.as_ref()).map(|risk| json!({
            "level": level_name(risk.level),
            "score": risk.score,
        })),
    })
}

fn rehearsal_json(rehearsal: &ShardRehearsal) -> Value {
    json!({
        "shard": rehearsal.shard_id,
        "agent": rehearsal.agent_id,
        "passed": rehearsal.passed,
        "failure": (!rehearsal.failure.is_empty()).then_some(&rehearsal.failure),
        "shard_version": rehearsal.shard_version,
        "rehearsed_at": rehearsal.rehearsed_at.as_ref().map(ToString::to_string),
        "duration_ms": millis(rehearsal.duration),
        "sample_percent": rehearsal.sample_percent,
        "disk": rehearsal.disk,
        "tables": rehearsal.tables.iter().map(|table| json!({
            "table": table.table,
            "rows_in_shard": table.rows_in_shard,
            "bytes_in_shard": table.bytes_in_shard,
            "rows_sampled": table.rows_sampled,
            "rows_removed": table.rows_removed,
            "whole": table.whole,
        })).collect::<Vec<_>>(),
        "findings": rehearsal.findings.iter().map(|finding| json!({
            "hint": finding.hint,
            "title": finding.title,
            "hazard": finding.hazard,
            "revision": finding.revision,
            "place": finding.place,
            "statement": finding.statement,
            "relation": finding.relation,
            "lock_mode": (!finding.lock_mode.is_empty()).then_some(&finding.lock_mode),
            "held_ms": millis(finding.held),
            "estimated_hold_ms": millis(finding.estimated_hold),
            "detail": finding.detail,
        })).collect::<Vec<_>>(),
        "estimates": rehearsal.estimates.iter().map(|estimate| json!({
            "revision": estimate.revision,
            "place": estimate.place,
            "table": estimate.table,
            "factor": estimate.factor,
            "sample_ms": millis(estimate.sample),
            "estimated_ms": millis(estimate.estimated),
        })).collect::<Vec<_>>(),
        "degradation": (!rehearsal.degradation.is_empty()).then_some(&rehearsal.degradation),
        "baselines": rehearsal.baselines.iter().map(|baseline| json!({
            "query": baseline.query,
            "before_ms": baseline.before_ms,
            "after_ms": baseline.after_ms,
            "ratio": baseline.ratio,
            "degraded": baseline.degraded,
            "error": (!baseline.error.is_empty()).then_some(&baseline.error),
        })).collect::<Vec<_>>(),
        "trace": rehearsal.trace.iter().map(|statement| json!({
            "revision": statement.revision,
            "place": statement.place,
            "in_transaction": statement.in_transaction,
            "elapsed_ms": millis(statement.elapsed),
            "locks": statement.locks,
            "rewritten": statement.rewritten,
            "scanned": statement.scanned,
        })).collect::<Vec<_>>(),
    })
}

/// A plan's kept rehearsals, for its summary as JSON.
pub fn summaries_json(plan: &Plan) -> Vec<Value> {
    plan.rehearsals.iter().map(summary_json).collect()
}

fn summary_json(summary: &RehearsalSummary) -> Value {
    json!({
        "shard": summary.shard_id,
        "passed": summary.passed,
        "shard_version": summary.shard_version,
        "rehearsed_at": summary.rehearsed_at.as_ref().map(ToString::to_string),
        "hints": summary.hints,
        "failure": (!summary.failure.is_empty()).then_some(&summary.failure),
    })
}

/// One line per kept rehearsal (first ten), under a plan's description.
pub fn print_summaries(plan: &Plan) {
    for summary in plan.rehearsals.iter().take(10) {
        let found = if !summary.failure.is_empty() {
            format!("failed: {}", summary.failure)
        } else if summary.hints.is_empty() {
            "nothing found".to_owned()
        } else {
            summary.hints.join(", ")
        };
        println!(
            "  rehearsed on {} at version {}: {} ({found})",
            summary.shard_id,
            summary.shard_version,
            if summary.passed {
                "passed"
            } else {
                "not passed"
            }
        );
    }
    if plan.rehearsals.len() > 10 {
        println!(
            "  … {} more rehearsal(s); --output json lists them",
            plan.rehearsals.len() - 10
        );
    }
}
