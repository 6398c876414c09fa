//! What a shard's run means for its task: the one place that decides which outcomes are final
//! and which are retried.
//!
//! Only the shard's own outcome ends a task: it succeeded, its agent rolled it back, a
//! statement failed, locks could not be had, its files drifted, it needs an operator, a
//! pre-flight check or the required backup failed, its database stayed unreachable past the
//! agent's bound, or an operator cancelled the plan. A fault outside the shard (the agent's
//! session or lease lost, the agent stopping, a newer claim fencing the run out) interrupts the
//! run: the task goes back to pending and runs again under a newer claim, resuming from the
//! shard's ledger, up to the plan's bound of retries.

use fleetshift_common::proto::v1::{
    AssignmentResult, ErrorDetail, ErrorKind, Plan, PlanState, ShardState, ShardTask, WavePolicy,
};

use crate::store::FenceToken;

/// The default bound of retries after interruptions, per shard task.
pub const DEFAULT_MAX_SHARD_RETRIES: u32 = 5;

/// What a run's result does to its task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// The task ends in this state.
    Final(ShardState),
    /// A fault outside the shard stopped the run: the task runs again under a newer claim.
    Interrupted(String),
    /// The shard's window closed between revisions: the task runs again in its next window,
    /// and that is no interruption.
    Waits(String),
}

/// The outcome of `result` for a task of a plan in `plan_state`.
pub fn of_result(result: &AssignmentResult, plan_state: PlanState) -> RunOutcome {
    if result.succeeded {
        return RunOutcome::Final(ShardState::Succeeded);
    }
    if result.rollback.is_some() {
        return RunOutcome::Final(ShardState::RolledBack);
    }
    let (kind, message) = result
        .error
        .as_ref()
        .map_or((ErrorKind::Unspecified, ""), |error| {
            (
                ErrorKind::try_from(error.kind).unwrap_or(ErrorKind::Unspecified),
                error.message.as_str(),
            )
        });
    match kind {
        // A run stopped while its plan is cancelled stopped because of the cancel.
        ErrorKind::Stopped | ErrorKind::Interrupted if plan_state == PlanState::Cancelled => {
            RunOutcome::Final(ShardState::Cancelled)
        }
        // Stopped without a cancel: its assignment was withdrawn under it (its claim lapsed).
        ErrorKind::Stopped | ErrorKind::Interrupted | ErrorKind::FencedOut => {
            RunOutcome::Interrupted(first_line(message))
        }
        ErrorKind::OutsideWindow if plan_state == PlanState::Cancelled => {
            RunOutcome::Final(ShardState::Cancelled)
        }
        ErrorKind::OutsideWindow => RunOutcome::Waits(first_line(message)),
        ErrorKind::BadInput
        | ErrorKind::Drift
        | ErrorKind::LockTimeout
        | ErrorKind::Unreachable
        | ErrorKind::NeedsOperator
        | ErrorKind::Failed
        | ErrorKind::Precondition
        | ErrorKind::Unspecified => RunOutcome::Final(ShardState::Failed),
    }
}

/// `task` after a run that stopped at its window's close (`why`): pending again with no
/// claim, its interruptions untouched; the reason stays as its last word until it runs again.
pub fn after_window(task: ShardTask, why: String) -> ShardTask {
    ShardTask {
        state: ShardState::Pending.into(),
        fence_token: 0,
        error: Some(ErrorDetail {
            kind: ErrorKind::OutsideWindow.into(),
            message: why,
        }),
        started_at: None,
        finished_at: None,
        ..task
    }
}

/// The cause recorded when a task's claim lapsed with its agent's session lease.
pub fn lapsed_cause(agent: &str, token: FenceToken) -> String {
    format!("agent {agent}'s session lease lapsed, and with it claim {token}")
}

/// The plan's bound of retries after interruptions, per shard task.
pub fn max_retries(configured: u32) -> u32 {
    if configured == 0 {
        DEFAULT_MAX_SHARD_RETRIES
    } else {
        configured
    }
}

/// Why a task interrupted more often than `bound` allows fails: the count and each cause.
pub fn retries_exhausted(shard: &str, bound: u32, causes: &[String]) -> String {
    let listed: Vec<String> = causes
        .iter()
        .enumerate()
        .map(|(index, cause)| format!("  {}. {cause}", index + 1))
        .collect();
    format!(
        "shard {shard}: interrupted {} times, more than the plan's bound of {bound} retries:\n{}\nnext: find why its agent keeps losing its session or database (agent and coordinator logs), then plan the shard again",
        causes.len(),
        listed.join("\n")
    )
}

/// The first line of a message (a cause is listed on one line).
fn first_line(message: &str) -> String {
    let line = message.lines().next().unwrap_or_default();
    if line.is_empty() {
        "the run was interrupted (no detail)".to_owned()
    } else {
        line.to_owned()
    }
}

/// How often a task of `plan` may be interrupted and run again.
pub fn retry_bound(plan: &Plan) -> u32 {
    max_retries(
        plan.policy
            .as_ref()
            .map_or(0, |policy| policy.max_shard_retries),
    )
}

/// `task` with what its run reported: the version it reached, its figures, its backup (a
/// retry that took none keeps the earlier one), the version before the plan (the first run's),
/// its baselines, rollback and validation, and the schema change (a retry with no revisions
/// left to run keeps the earlier run's).
pub fn with_result(task: &ShardTask, result: &AssignmentResult) -> ShardTask {
    ShardTask {
        current_version: result.current_version.clone(),
        metrics: result.metrics,
        backup: result.backup.clone().or_else(|| task.backup.clone()),
        // The first run saw the shard before the plan; a retry may see it half-way.
        previous_version: if task.previous_version.is_empty() {
            result.previous_version.clone()
        } else {
            task.previous_version.clone()
        },
        baselines: result.baselines.clone(),
        schema: result.schema.clone().or_else(|| task.schema.clone()),
        validation: result.validation.clone(),
        durations: [task.durations.as_slice(), &result.durations].concat(),
        rollback: result.rollback.clone(),
        ..task.clone()
    }
}

/// `task` after a run interrupted by `cause`: pending again with no claim (the next dispatch
/// claims it anew, under a newer token), or failed once its interruptions exceed `bound`.
pub fn after_interruption(task: ShardTask, cause: String, bound: u32) -> ShardTask {
    let interruptions = task.interruptions.saturating_add(1);
    let mut causes = task.interruption_causes.clone();
    causes.push(cause);
    if interruptions > bound {
        let message = retries_exhausted(&task.shard_id, bound, &causes);
        return ShardTask {
            state: ShardState::Failed.into(),
            error: Some(ErrorDetail {
                kind: ErrorKind::Interrupted.into(),
                message,
            }),
            interruptions,
            interruption_causes: causes,
            finished_at: Some(std::time::SystemTime::now().into()),
            ..task
        };
    }
    ShardTask {
        state: ShardState::Pending.into(),
        fence_token: 0,
        error: None,
        started_at: None,
        finished_at: None,
        interruptions,
        interruption_causes: causes,
        ..task
    }
}

/// Why `plan` halts now: its failed tasks reached the policy's threshold.
pub fn halt_reason(failed: &[&ShardTask], policy: &WavePolicy) -> Option<String> {
    let threshold = policy.failure_threshold.max(1);
    let first = failed.first()?;
    if failed.len() < threshold as usize {
        return None;
    }
    Some(format!(
        "{} shard(s) failed, threshold {threshold}: {} ({}); nothing new is dispatched",
        failed.len(),
        first.shard_id,
        first
            .error
            .as_ref()
            .map_or("no detail", |error| error.message.as_str())
    ))
}

/// How a plan whose every task has ended, `failed` of them failed, ends.
pub fn plan_end(failed: &[&ShardTask], policy: &WavePolicy) -> (PlanState, String) {
    if failed.is_empty() {
        return (PlanState::Succeeded, String::new());
    }
    let shards: Vec<&str> = failed.iter().map(|task| task.shard_id.as_str()).collect();
    let reason = format!(
        "{} shard(s) failed, below the threshold of {}: {}",
        failed.len(),
        policy.failure_threshold.max(1),
        shards.join(", ")
    );
    (PlanState::FinishedWithFailures, reason)
}

#[cfg(test)]
mod tests {
    use fleetshift_common::proto::v1::{ErrorDetail, RollbackRecord};

    use super::*;

    fn failed(kind: ErrorKind, message: &str) -> AssignmentResult {
        AssignmentResult {
            error: Some(ErrorDetail {
                kind: kind.into(),
                message: message.to_owned(),
            }),
            ..AssignmentResult::default()
        }
    }

    #[test]
    fn only_the_shards_own_outcome_ends_its_task() {
        let running = PlanState::Running;
        let succeeded = AssignmentResult {
            succeeded: true,
            ..AssignmentResult::default()
        };
        assert_eq!(
            of_result(&succeeded, running),
            RunOutcome::Final(ShardState::Succeeded)
        );
        let rolled_back = AssignmentResult {
            rollback: Some(RollbackRecord::default()),
            ..failed(ErrorKind::Failed, "rolled back")
        };
        assert_eq!(
            of_result(&rolled_back, running),
            RunOutcome::Final(ShardState::RolledBack)
        );
        for kind in [
            ErrorKind::BadInput,
            ErrorKind::Drift,
            ErrorKind::LockTimeout,
            ErrorKind::Unreachable,
            ErrorKind::NeedsOperator,
            ErrorKind::Failed,
            ErrorKind::Precondition,
            ErrorKind::Unspecified,
        ] {
            assert_eq!(
                of_result(&failed(kind, "x"), running),
                RunOutcome::Final(ShardState::Failed),
                "{kind:?}"
            );
        }
        for kind in [
            ErrorKind::Interrupted,
            ErrorKind::Stopped,
            ErrorKind::FencedOut,
        ] {
            assert_eq!(
                of_result(&failed(kind, "lease may lapse\nmore"), running),
                RunOutcome::Interrupted("lease may lapse".to_owned()),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn a_stop_under_a_cancelled_plan_is_the_cancel() {
        for kind in [ErrorKind::Stopped, ErrorKind::Interrupted] {
            assert_eq!(
                of_result(&failed(kind, "told to stop"), PlanState::Cancelled),
                RunOutcome::Final(ShardState::Cancelled)
            );
        }
        assert_eq!(
            of_result(&failed(ErrorKind::Failed, "boom"), PlanState::Cancelled),
            RunOutcome::Final(ShardState::Failed)
        );
    }

    #[test]
    fn a_closed_window_makes_the_task_wait_without_counting_an_interruption() {
        let closed = failed(ErrorKind::OutsideWindow, "paused before revision 3\nmore");
        assert_eq!(
            of_result(&closed, PlanState::Running),
            RunOutcome::Waits("paused before revision 3".to_owned())
        );
        assert_eq!(
            of_result(&closed, PlanState::Cancelled),
            RunOutcome::Final(ShardState::Cancelled)
        );
        let task = ShardTask {
            state: ShardState::Running.into(),
            fence_token: 9,
            interruptions: 1,
            ..ShardTask::default()
        };
        let waiting = after_window(task, "paused".to_owned());
        assert_eq!(waiting.state, i32::from(ShardState::Pending));
        assert_eq!(waiting.fence_token, 0);
        assert_eq!(waiting.interruptions, 1, "not an interruption");
        assert_eq!(
            waiting.error.map(|error| error.kind),
            Some(i32::from(ErrorKind::OutsideWindow))
        );
    }

    #[test]
    fn an_exhausted_bound_names_the_count_and_every_cause() {
        let message = retries_exhausted(
            "users-1",
            1,
            &["lease lapsed".to_owned(), "agent shutting down".to_owned()],
        );
        assert!(message.contains("interrupted 2 times"), "{message}");
        assert!(message.contains("bound of 1 retries"), "{message}");
        assert!(message.contains("1. lease lapsed"), "{message}");
        assert!(message.contains("2. agent shutting down"), "{message}");
        assert_eq!(max_retries(0), DEFAULT_MAX_SHARD_RETRIES);
        assert_eq!(max_retries(2), 2);
    }
}
