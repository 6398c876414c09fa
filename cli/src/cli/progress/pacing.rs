//! What shards wait for, as `watch` and `status` tell it: a shard's window or the plan's
//! start before it runs, and a busy server while it runs.

use fleetshift_common::proto::v1::{Plan, PlanState, ShardState, ShardTask, Throttled};
use fleetshift_coordinator::rollout::{schedule, waves};
use serde_json::json;

use super::super::Output;
use super::duration_of;

/// Each shard that cannot start yet, and what it waits for, once as the watch begins.
pub(super) fn waiting_shards(plan: &Plan, output: Output) {
    let now = jiff::Timestamp::now();
    for task in waves::planned_tasks(plan) {
        let Some(waiting) = waiting(plan, task, now) else {
            continue;
        };
        match output {
            Output::Json => println!(
                "{}",
                json!({ "plan": plan.plan_id, "shard": task.shard_id, "progress": "waiting", "detail": waiting })
            ),
            Output::Human => println!("    {} {waiting}", task.shard_id),
        }
    }
}

/// What a task of a running or approved plan waits for: its start or its window while pending,
/// a throttle while it runs (`throttled: replica lag 7.2s > 5s (for 42s)`).
pub(super) fn waiting(plan: &Plan, task: &ShardTask, now: jiff::Timestamp) -> Option<String> {
    if let Some(throttled) = &task.throttled {
        let waited = duration_of(throttled.waited).unwrap_or_default();
        let waited = fleetshift_common::window::humane(waited);
        return Some(format!("throttled: {} (for {waited})", throttled.detail));
    }
    let open = matches!(
        plan.state(),
        PlanState::Running | PlanState::Approved | PlanState::AwaitingApproval
    );
    (open && task.state() == ShardState::Pending)
        .then(|| schedule::waiting(plan, task, now))
        .flatten()
        .map(|waiting| waiting.describe(now))
}

/// `throttled: 2 shard(s) waited 4m12s in all for their shards to be less busy`, when any did.
pub(super) fn throttled_summary(plan: &Plan) -> Option<String> {
    let waits: Vec<std::time::Duration> = waves::planned_tasks(plan)
        .filter_map(|task| duration_of(task.metrics.as_ref()?.throttled))
        .filter(|waited| !waited.is_zero())
        .collect();
    if waits.is_empty() {
        return None;
    }
    Some(format!(
        "throttled: {} shard(s) waited {} in all for their shards to be less busy",
        waits.len(),
        fleetshift_common::window::humane(waits.iter().sum())
    ))
}

/// `throttled: replica lag 7.2s > 5s`, then `throttle lifted after 42.0s (replica lag …)`.
pub(super) fn throttled_line(throttled: &Throttled) -> String {
    let waited = duration_of(throttled.waited).unwrap_or_default();
    match (waited.is_zero(), throttled.resumed) {
        (true, _) => format!("throttled: {}", throttled.detail),
        (false, true) => format!("throttle lifted after {waited:.1?} ({})", throttled.detail),
        (false, false) => format!("gave up waiting after {waited:.1?}: {}", throttled.detail),
    }
}
