//! Following a rollout: per-wave progress bars as shards end, revision events as they finish,
//! and a per-shard summary at the end (human); one JSON object per event, then the summary
//! (json). The exit code says how the rollout ended.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;

use fleetshift_common::engine::catalog;
use fleetshift_common::proto::MESSAGE_LIMIT;
use fleetshift_common::proto::v1::fleet_service_client::FleetServiceClient;
use fleetshift_common::proto::v1::progress_event::Event as Progress;
use fleetshift_common::proto::v1::rollout_event::Event;
use fleetshift_common::proto::v1::{
    DatabaseOutage, Direction, GetPlanRequest, Plan, PlanAction, PlanState, ProgressEvent,
    RevisionOutcome, RiskAssessment, RiskLevel, RolloutEvent, ShardMetrics, ShardState, ShardTask,
};
use fleetshift_common::rollout_names::{plan_state_name, risk_level_name, shard_state_name};
use fleetshift_common::telemetry::traces::context::{PropagateContext, Traced};
use serde_json::json;

use super::Output;

/// The CLI's client of the coordinator: its calls carry the command's trace context.
pub type FleetClient = FleetServiceClient<Traced<tonic::transport::Channel>>;

/// A client on `channel`, taking and sending messages up to the contract's limit.
pub fn fleet_client(channel: tonic::transport::Channel) -> FleetClient {
    FleetServiceClient::with_interceptor(channel, PropagateContext)
        .max_decoding_message_size(MESSAGE_LIMIT)
        .max_encoding_message_size(MESSAGE_LIMIT)
}
use super::duties::{backup_json, baseline_json, baseline_line, rollback_json, rollback_line};
use super::validation;
use crate::exit;
use board::Board;
use fleetshift_coordinator::rollout::waves;
use pacing::{throttled_line, throttled_summary, waiting, waiting_shards};
use resume::{Resumable, Watched};

use super::fleet::Connection;

const BAR_WIDTH: usize = 20;

/// A bar `done` of `total` full, [`BAR_WIDTH`] characters wide.
fn bar(done: usize, total: usize) -> String {
    let filled = (done * BAR_WIDTH).checked_div(total).unwrap_or(0);
    format!("{}{}", "█".repeat(filled), "░".repeat(BAR_WIDTH - filled))
}

/// How a followed rollout ended.
#[derive(Debug, Clone)]
pub struct Ending {
    pub plan: Plan,
}

impl Ending {
    pub fn exit_code(&self) -> ExitCode {
        let failed = waves::planned_tasks(&self.plan).any(|task| {
            fleetshift_coordinator::rollout::task_failed(
                ShardState::try_from(task.state).unwrap_or(ShardState::Unspecified),
            )
        });
        let code = match PlanState::try_from(self.plan.state).unwrap_or(PlanState::Unspecified) {
            PlanState::Succeeded if !failed => exit::OK,
            PlanState::Cancelled => exit::STOPPED,
            _ => exit::FAILED,
        };
        ExitCode::from(code)
    }
}

/// How to follow a rollout.
#[derive(Debug, Clone, Copy)]
pub struct Following<'c> {
    /// The replicas to move between when the watch breaks; none: reopen on the same client.
    pub replicas: Option<&'c Connection>,
    pub output: Output,
    /// Every statement as it finishes.
    pub statements: bool,
    /// Start the rollout once the watch is open (so nothing is missed).
    pub start: bool,
    /// Continue after this sequence instead of starting with the current state.
    pub since: u64,
}

/// Follows `plan_id` until its rollout ends, through replicas that come and go; `Err`
/// carries the coordinator's refusal.
pub async fn follow(
    mut client: FleetClient,
    plan_id: &str,
    following: Following<'_>,
) -> Result<Ending, tonic::Status> {
    let Following {
        replicas,
        output,
        statements,
        start,
        since,
    } = following;
    let plan = client
        .get_plan(GetPlanRequest {
            plan_id: plan_id.to_owned(),
        })
        .await?
        .into_inner();
    let watched = Watched::Plan(plan_id.to_owned());
    let mut events = Resumable::new(client, replicas, watched, statements, since);
    events.open().await?;
    if start {
        events
            .client()
            .start_rollout(PlanAction {
                plan_id: plan_id.to_owned(),
                reason: String::new(),
            })
            .await?;
    }
    if output == Output::Human && std::io::stdout().is_terminal() {
        live::follow(&plan, &mut events).await?;
    } else {
        waiting_shards(&plan, output);
        let mut board = Board::new(&plan);
        while let Some(event) = events.next().await? {
            match output {
                Output::Json => println!("{}", event_json(&event)),
                Output::Human => board.show(&event),
            }
        }
    }
    let plan = events
        .client()
        .get_plan(GetPlanRequest {
            plan_id: plan_id.to_owned(),
        })
        .await?
        .into_inner();
    summary(&plan, output);
    Ok(Ending { plan })
}

/// One line about an agent's progress event (after its shard's name), or none for events the
/// board does not show.
pub(super) fn progress_line(progress: &ProgressEvent) -> Option<String> {
    let line = match &progress.event {
        Some(Progress::RevisionFinished(finished)) => {
            let outcome = RevisionOutcome::try_from(finished.outcome)
                .map(|outcome| {
                    outcome
                        .as_str_name()
                        .trim_start_matches("REVISION_OUTCOME_")
                        .to_lowercase()
                })
                .unwrap_or_default();
            let took = finished
                .duration
                .and_then(|duration| std::time::Duration::try_from(duration).ok())
                .unwrap_or_default();
            format!(
                "{} {outcome} in {took:.1?} ({} statements, {} lock retries)",
                finished.version, finished.statements_run, finished.lock_retries
            )
        }
        Some(Progress::LockRetry(retry)) => statements::retried_line(retry),
        Some(Progress::StatementRunning(statement)) => statements::running_line(statement),
        Some(Progress::StatementFinished(statement)) => statements::finished_line(statement),
        Some(Progress::PreflightCheck(check)) if !check.passed => {
            format!("pre-flight {} FAILED: {}", check.name, check.detail)
        }
        Some(Progress::PreflightCheck(check)) => {
            format!("pre-flight {}: {}", check.name, check.detail)
        }
        Some(Progress::BackupFinished(backup)) => format!(
            "backup {} verified ({} entries, {} bytes, sha256 {}{})",
            backup.location,
            backup.verified_entries,
            backup.size_bytes,
            backup.sha256,
            if backup.restored_tables > 0 {
                format!("; restored, {} tables' rows match", backup.restored_tables)
            } else {
                String::new()
            }
        ),
        Some(Progress::BaselineMeasured(measured)) => baseline_line(measured),
        Some(Progress::RollbackStarted(started)) => rollback_line(started),
        Some(Progress::DatabaseOutage(outage)) => outage_line(outage),
        Some(Progress::Throttled(throttled)) => throttled_line(throttled),
        Some(Progress::BackfillProgress(progress)) => backfill::line(progress),
        Some(Progress::RevisionStarted(_)) | None => return None,
    };
    Some(line)
}

/// One event as a JSON line: its fields, its sequence (to resume after) and when it happened.
pub(super) fn event_json(event: &RolloutEvent) -> serde_json::Value {
    let mut fields = event_fields(event);
    if let Some(object) = fields.as_object_mut() {
        object.insert("sequence".to_owned(), json!(event.sequence));
        object.insert("at".to_owned(), json!(event.at.map(|at| at.to_string())));
    }
    fields
}

fn event_fields(event: &RolloutEvent) -> serde_json::Value {
    match &event.event {
        Some(Event::PlanState(changed)) => json!({
            "plan": event.plan_id,
            "plan_state": plan_state_name(PlanState::try_from(changed.state).unwrap_or(PlanState::Unspecified)),
            "reason": changed.reason,
        }),
        Some(Event::ShardState(changed)) => json!({
            "plan": event.plan_id,
            "shard": changed.shard_id,
            "wave": changed.wave,
            "state": shard_state_name(ShardState::try_from(changed.state).unwrap_or(ShardState::Unspecified)),
            "error": changed.error.as_ref().map(|error| &error.message),
        }),
        Some(Event::Progress(progress)) => {
            let (kind, version) = match &progress.event {
                Some(Progress::RevisionStarted(started)) => {
                    ("revision_started", started.version.clone())
                }
                Some(Progress::RevisionFinished(finished)) => {
                    ("revision_finished", finished.version.clone())
                }
                Some(Progress::StatementRunning(statement)) => {
                    return merged(
                        json!({ "plan": event.plan_id, "shard": progress.shard_id, "progress": "statement_running" }),
                        statements::running_json(statement),
                    );
                }
                Some(Progress::StatementFinished(statement)) => {
                    return json!({
                        "plan": event.plan_id,
                        "shard": progress.shard_id,
                        "progress": "statement_finished",
                        "version": statement.version,
                        "location": statement.location,
                        "state": "committed",
                        "duration_ms": duration_of(statement.duration).map(|took| took.as_millis()),
                    });
                }
                Some(Progress::LockRetry(retry)) => {
                    return json!({
                        "plan": event.plan_id,
                        "shard": progress.shard_id,
                        "progress": "lock_retry",
                        "version": retry.version,
                        "location": retry.location,
                        "state": "rolled back, retrying",
                        "attempt": retry.attempt,
                        "sqlstate": retry.sqlstate,
                        "wait_ms": duration_of(retry.wait).map(|wait| wait.as_millis()),
                    });
                }
                Some(Progress::PreflightCheck(check)) => {
                    return json!({
                        "plan": event.plan_id,
                        "shard": progress.shard_id,
                        "progress": "preflight_check",
                        "check": check.name,
                        "passed": check.passed,
                        "detail": check.detail,
                    });
                }
                Some(Progress::BackupFinished(backup)) => {
                    return json!({
                        "plan": event.plan_id,
                        "shard": progress.shard_id,
                        "progress": "backup_finished",
                        "backup": backup_json(backup),
                    });
                }
                Some(Progress::BaselineMeasured(measured)) => {
                    return json!({
                        "plan": event.plan_id,
                        "shard": progress.shard_id,
                        "progress": "baseline_measured",
                        "baselines": baseline_json(measured),
                    });
                }
                Some(Progress::BackfillProgress(backfill)) => {
                    return merged(
                        json!({ "plan": event.plan_id, "shard": progress.shard_id, "progress": "backfill" }),
                        backfill::json(backfill),
                    );
                }
                Some(Progress::RollbackStarted(started)) => {
                    return json!({
                        "plan": event.plan_id,
                        "shard": progress.shard_id,
                        "progress": "rollback_started",
                        "reason": started.reason,
                        "target_version": started.target_version,
                    });
                }
                Some(Progress::Throttled(throttled)) => {
                    return json!({
                        "plan": event.plan_id,
                        "shard": progress.shard_id,
                        "progress": if throttled.resumed { "throttle_lifted" } else { "throttled" },
                        "signal": throttled.signal,
                        "detail": throttled.detail,
                        "waited_ms": duration_of(throttled.waited).map(|waited| waited.as_millis()),
                    });
                }
                Some(Progress::DatabaseOutage(outage)) => {
                    return json!({
                        "plan": event.plan_id,
                        "shard": progress.shard_id,
                        "progress": if outage.recovered { "database_back" } else { "database_lost" },
                        "server": outage.server,
                        "step": outage.step,
                        "detail": (!outage.detail.is_empty()).then_some(&outage.detail),
                        "waited_ms": duration_of(outage.waited).map(|waited| waited.as_millis()),
                        "bound_ms": duration_of(outage.bound).map(|bound| bound.as_millis()),
                    });
                }
                None => ("unknown", String::new()),
            };
            json!({ "plan": event.plan_id, "shard": progress.shard_id, "progress": kind, "version": version })
        }
        None => json!({ "plan": event.plan_id }),
    }
}

/// `fields` with `more`'s fields added.
fn merged(mut fields: serde_json::Value, more: serde_json::Value) -> serde_json::Value {
    if let (Some(fields), serde_json::Value::Object(more)) = (fields.as_object_mut(), more) {
        fields.extend(more);
    }
    fields
}

/// The plan, shard by shard.
pub fn summary(plan: &Plan, output: Output) {
    let state = PlanState::try_from(plan.state).unwrap_or(PlanState::Unspecified);
    let now = jiff::Timestamp::now();
    if output == Output::Json {
        summary_json(plan, state, now);
        return;
    }
    println!(
        "plan {} — {} — target {} — set {}",
        plan.plan_id,
        plan_state_name(state),
        plan.target_version,
        plan.set_digest.get(..16).unwrap_or(&plan.set_digest)
    );
    if !plan.state_reason.is_empty() {
        println!("  {}", plan.state_reason);
    }
    for line in super::gate::lines(plan) {
        println!("  {line}");
    }
    println!(
        "{:<6} {:<28} {:<11} {:<16} {:<20} {:>8} {:>7}  ERROR",
        "WAVE", "SHARD", "STATE", "AGENT", "VERSION", "TOOK", "RETRIES"
    );
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for task in failed_first(plan) {
        let state =
            shard_state_name(ShardState::try_from(task.state).unwrap_or(ShardState::Unspecified));
        *counts.entry(state).or_default() += 1;
        let metrics = task.metrics.as_ref();
        println!(
            "{:<6} {:<28} {:<11} {:<16} {:<20} {:>8} {:>7}  {}",
            task.wave,
            task.shard_id,
            state,
            task.agent_id,
            if task.current_version.is_empty() {
                "-"
            } else {
                &task.current_version
            },
            metrics
                .and_then(run_time)
                .map_or_else(|| "-".to_owned(), humane),
            metrics.map_or_else(
                || "-".to_owned(),
                |metrics| metrics.lock_retries.to_string()
            ),
            problem(plan, task, now)
        );
    }
    let counts: Vec<String> = counts
        .iter()
        .map(|(state, count)| format!("{count} {state}"))
        .collect();
    println!("{}", counts.join(", "));
    if let Some(throttled) = throttled_summary(plan) {
        println!("{throttled}");
    }
    validation::print_section(plan);
}

/// The summary as one JSON document.
fn summary_json(plan: &Plan, state: PlanState, now: jiff::Timestamp) {
    let shards: Vec<_> = failed_first(plan)
        .map(|task| {
            json!({
                "shard": task.shard_id,
                "wave": task.wave,
                "state": shard_state_name(ShardState::try_from(task.state).unwrap_or(ShardState::Unspecified)),
                "agent": task.agent_id,
                "fence_token": task.fence_token,
                "current_version": task.current_version,
                "target_version": (!task.target_version.is_empty()).then_some(&task.target_version),
                "error": task.error.as_ref().map(|error| &error.message),
                "backup": task.backup.as_ref().map(backup_json),
                "previous_version": (!task.previous_version.is_empty()).then_some(&task.previous_version),
                "baselines": task.baselines.iter().map(baseline_json).collect::<Vec<_>>(),
                "rollback": task.rollback.as_ref().map(rollback_json),
                "schema": task.schema.as_ref().map(|schema| json!({
                    "before": schema.before,
                    "after": schema.after,
                    "objects_changed": schema.objects_changed,
                })),
                "validation": task.validation.as_ref().map(validation::report_json),
                "windows": task.windows,
                "waiting": waiting(plan, task, now),
                "interruptions": task.interruptions,
                "interruption_causes": task.interruption_causes,
                "metrics": task.metrics.as_ref().map(|metrics| json!({
                    "revisions_run": metrics.revisions_run,
                    "statements": metrics.statements,
                    "lock_retries": metrics.lock_retries,
                    "duration_ms": run_time(metrics).map(|took| took.as_millis()),
                    "throttled_ms": duration_of(metrics.throttled).map(|took| took.as_millis()),
                })),
            })
        })
        .collect();
    println!(
        "{}",
        json!({
            "plan": plan.plan_id,
            "state": plan_state_name(state),
            "reason": plan.state_reason,
            "target_version": plan.target_version,
            "phases": super::gate::json_of(plan),
            "direction": if plan.direction() == Direction::Down { "down" } else { "up" },
            "rolls_back": (!plan.rolls_back.is_empty()).then_some(&plan.rolls_back),
            "retries": (!plan.retries.is_empty()).then_some(&plan.retries),
            "fleet_target": (!plan.fleet_target.is_empty()).then_some(&plan.fleet_target),
            "baseline": plan.baseline.as_ref().map(|baseline| &baseline.baseline_id),
            "left_out": plan.left_out.iter().map(|left| json!({
                "shard": left.shard_id,
                "reason": left.reason,
            })).collect::<Vec<_>>(),
            "set_digest": plan.set_digest,
            "author": plan.author,
            "approvals": plan.approvals.iter().map(|approval| &approval.approver).collect::<Vec<_>>(),
            "shards": shards,
            "risk": plan.risk.as_ref().map(risk_json),
            "analyses": plan.analyses.iter().map(|analysis| json!({
                "shard": analysis.shard_id,
                "observed_at": analysis.observed_at.map(|at| at.to_string()),
                "tables": analysis.tables.iter().map(catalog::facts_json).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "rehearsals": super::rehearsals::summaries_json(plan),
            "schedule": plan.schedule.as_ref().map(|schedule| json!({
                "windows": schedule.windows,
                "start_at": schedule.start_at.map(|at| at.to_string()),
            })),
            "drift_allowed": plan.drift_allowed.iter().map(|allowed| json!({
                "shard": allowed.shard_id,
                "version": allowed.version,
                "fingerprint": allowed.fingerprint,
                "majority": allowed.majority,
                "reason": allowed.reason,
            })).collect::<Vec<_>>(),
            "findings": plan.findings.iter().map(|finding| json!({
                "rule": finding.rule,
                "severity": finding.severity,
                "file": finding.file,
                "line": finding.line,
                "revision": finding.revision,
                "message": finding.message,
                "allowed": (!finding.allowed.is_empty()).then_some(&finding.allowed),
            })).collect::<Vec<_>>(),
        })
    );
}

/// The plan's tasks, those that failed or were rolled back first (each group in wave order).
fn failed_first(plan: &Plan) -> impl Iterator<Item = &ShardTask> {
    let tasks = || waves::planned_tasks(plan);
    let failed = |task: &&ShardTask| fleetshift_coordinator::rollout::task_failed(task.state());
    tasks()
        .filter(failed)
        .chain(tasks().filter(move |task| !failed(task)))
}

/// A task's error (or what a pending one waits for), and how often its runs were interrupted
/// when they were.
fn problem(plan: &Plan, task: &ShardTask, now: jiff::Timestamp) -> String {
    let waiting = waiting(plan, task, now);
    let error = waiting.as_deref().unwrap_or_else(|| {
        task.error
            .as_ref()
            .map(|error| error.message.as_str())
            .unwrap_or("")
    });
    match (task.interruptions, error.is_empty()) {
        (0, _) => error.to_owned(),
        (count, true) => format!("(interrupted {count}x, ran again)"),
        (count, false) => format!("{error} (interrupted {count}x)"),
    }
}

/// `lost its database server 10.0.0.5:5432 while applying revisions (…); waiting up to
/// 120s`, or `database server 10.0.0.5:5432 back after 0.8s`.
fn outage_line(outage: &DatabaseOutage) -> String {
    let waited = duration_of(outage.waited).unwrap_or_default();
    if outage.recovered {
        format!(
            "database server {} back after {}; {} goes on",
            outage.server,
            humane(waited),
            outage.step
        )
    } else {
        format!(
            "lost its database server {} while {} ({}); waiting up to {}",
            outage.server,
            outage.step,
            outage.detail,
            duration_of(outage.bound).map_or_else(|| "its bound".to_owned(), humane)
        )
    }
}

fn duration_of(duration: Option<prost_types::Duration>) -> Option<std::time::Duration> {
    duration.and_then(|duration| std::time::Duration::try_from(duration).ok())
}

/// How long the shard's run took on its agent, when reported.
fn run_time(metrics: &ShardMetrics) -> Option<std::time::Duration> {
    duration_of(metrics.duration)
}

/// `850ms`, `12.4s`.
fn humane(took: std::time::Duration) -> String {
    if took < std::time::Duration::from_secs(1) {
        format!("{}ms", took.as_millis())
    } else {
        format!("{:.1}s", took.as_secs_f64())
    }
}

/// A plan's risk as JSON output and notice templates see it.
pub fn risk_json(risk: &RiskAssessment) -> serde_json::Value {
    let level = RiskLevel::try_from(risk.level).unwrap_or(RiskLevel::Unspecified);
    json!({
        "score": risk.score,
        "level": risk_level_name(level),
        "revision": risk.revision,
        "shard": risk.shard_id,
        "approvals_required": risk.approvals_required,
        "author_may_approve": risk.author_may_approve,
        "factors": risk.factors.iter().map(|factor| json!({
            "name": factor.name,
            "points": factor.points,
            "explanation": factor.explanation,
        })).collect::<Vec<_>>(),
    })
}

mod backfill;
mod board;
mod live;
mod pacing;
pub mod resume;
mod statements;
#[cfg(test)]
mod tests;
