//! Retry plans: the shards of an ended plan that did not succeed, planned again alone, with
//! the plan's pinned set, target (per shard), waves, limits, duties and schedule, and its lint,
//! risk and rehearsals (same revisions, same target). A retry plan is approved and applied like
//! any plan; the source plan's other shards are listed with why they are left out.

use std::collections::HashMap;

use fleetshift_common::proto::v1::{Hello, LeftOut, Plan, PlanState, ShardState, ShardTask};
use fleetshift_common::rollout_names::plan_state_name;

use super::named::{named, sift};
use super::planning::{self, Candidate};
use super::{RolloutError, plan_ended, spans, state_of};

/// What to try again.
#[derive(Debug, Clone, Copy)]
pub struct Retry<'a> {
    /// The plan, with its task records.
    pub source: &'a Plan,
    /// Only the shards that failed; otherwise every shard that did not succeed.
    pub failed_only: bool,
    /// Shard ids or patterns; empty: every shard the above takes.
    pub patterns: &'a [String],
    /// Shards that are not active now, each with why (they are left out).
    pub inactive: &'a [LeftOut],
}

/// Plans `retry` for `author` over the agents announcing its shards now.
pub fn plan_retry(
    retry: Retry<'_>,
    author: &str,
    agents: &[(String, Hello)],
) -> Result<Plan, RolloutError> {
    let Retry {
        source,
        failed_only,
        patterns,
        inactive,
    } = retry;
    let state = PlanState::try_from(source.state).unwrap_or(PlanState::Unspecified);
    if !plan_ended(state) {
        return Err(RolloutError::NotNow(format!(
            "plan {} is {}; cancel it or let it end before retrying its shards",
            source.plan_id,
            plan_state_name(state)
        )));
    }
    let Choice { taken, left_out } = choose(source, failed_only, patterns, inactive)?;
    let announced: HashMap<String, Candidate> = planning::candidates(agents, &HashMap::new())?
        .into_iter()
        .map(|candidate| (candidate.shard_id.clone(), candidate))
        .collect();
    let shards: Vec<Candidate> = taken
        .iter()
        .map(|task| {
            announced.get(&task.shard_id).cloned().ok_or_else(|| {
                RolloutError::NotNow(format!(
                    "no connected agent announces shard {}; start its agent, or leave it out with --shards",
                    task.shard_id
                ))
            })
        })
        .collect::<Result<_, _>>()?;
    let by_shard: HashMap<&str, &ShardTask> = taken
        .iter()
        .map(|task| (task.shard_id.as_str(), *task))
        .collect();
    let policy = source.policy.clone().unwrap_or_default();
    let mut waves = planning::waves(&shards, &policy);
    for task in waves.iter_mut().flat_map(|wave| &mut wave.shards) {
        if let Some(earlier) = by_shard.get(task.shard_id.as_str()) {
            task.target_version.clone_from(&earlier.target_version);
            task.windows.clone_from(&earlier.windows);
        }
    }
    let retried = |shard: &str| by_shard.contains_key(shard);
    Ok(Plan {
        plan_id: planning::new_plan_id(),
        author: author.to_owned(),
        state: PlanState::AwaitingApproval.into(),
        waves,
        approvals: Vec::new(),
        created_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
        state_reason: String::new(),
        analyses: source
            .analyses
            .iter()
            .filter(|analysis| retried(&analysis.shard_id))
            .cloned()
            .collect(),
        drift_allowed: source
            .drift_allowed
            .iter()
            .filter(|allowed| retried(&allowed.shard_id))
            .cloned()
            .collect(),
        trace_context: spans::new_trace_context(),
        retries: source.plan_id.clone(),
        left_out,
        ..source.clone()
    })
}

/// The source plan's tasks a retry takes, and the others with the reason.
struct Choice<'p> {
    taken: Vec<&'p ShardTask>,
    left_out: Vec<LeftOut>,
}

fn choose<'p>(
    source: &'p Plan,
    failed_only: bool,
    patterns: &[String],
    inactive: &[LeftOut],
) -> Result<Choice<'p>, RolloutError> {
    let (retryable, mut left_out) = sift(source, |task| {
        why_not(source, task, failed_only).or_else(|| {
            inactive
                .iter()
                .find(|left| left.shard_id == task.shard_id)
                .map(|left| format!("is {}; retry it once it is active", left.reason))
        })
    });
    let what = format!("shard of plan {} to retry", source.plan_id);
    let (taken, unnamed) = named(retryable, patterns, &what)?;
    left_out.extend(unnamed);
    if taken.is_empty() {
        let which = if failed_only {
            "no shard of it failed"
        } else {
            "every shard of it succeeded"
        };
        return Err(RolloutError::BadRequest(format!(
            "plan {} has nothing to retry: {which}",
            source.plan_id
        )));
    }
    left_out.sort_by(|left, right| left.shard_id.cmp(&right.shard_id));
    Ok(Choice { taken, left_out })
}

/// Why `task` is not retried, or `None` when it is.
fn why_not(source: &Plan, task: &ShardTask, failed_only: bool) -> Option<String> {
    let plan = &source.plan_id;
    match state_of(task) {
        ShardState::Succeeded => Some(format!("reached its target in plan {plan}")),
        ShardState::Failed | ShardState::RolledBack => None,
        ShardState::Cancelled if failed_only => Some(format!(
            "was cancelled in plan {plan}, not failed (retry without --failed to take it)"
        )),
        ShardState::Pending | ShardState::Unspecified if failed_only => Some(format!(
            "never started in plan {plan}, so it did not fail (retry without --failed to take it)"
        )),
        // An ended plan holds no running task; one left so would have been interrupted.
        ShardState::Cancelled
        | ShardState::Pending
        | ShardState::Unspecified
        | ShardState::Claimed
        | ShardState::Running => None,
    }
}

#[cfg(test)]
mod tests;
