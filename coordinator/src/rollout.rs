//! Rollouts: a plan splits the selected shards into waves; the leader advances it wave by wave
//! through the store; the replica holding each agent's session delivers its tasks.
//!
//! - [`planning`]: a `CreatePlanRequest` checked, linted, assessed and split into waves.
//! - [`rollback`]: a rollback plan, sending a finished plan's shards back where they were.
//! - [`retry`]: a retry plan, the shards of an ended plan that did not succeed, planned again.
//! - [`risk`]: the plan's risk score, explained, and the approvals it needs.
//! - [`records`]: plans, shard tasks and migration sets as stored, and compare-and-set updates.
//! - [`transitions`]: what operators may do to a plan in each state.
//! - [`driver`]: the leader's loop: claim, dispatch, collect results, halt, finish.
//! - [`waves`]: a plan's shard count, current wave, counts per state and the caps on starts.
//! - [`outcome`]: which results end a task and which interrupt it (run again, bounded).
//! - [`relay`]: every replica's side: dispatches to the agents it holds, results back.
//! - [`watch`]: a rollout's events for `WatchRollout`.
//! - [`spans`]: the rollout's trace: its root, waves and shard task runs, recorded as they end.
//!
//! Per shard and rollout the store sees five requests: the claim, the task and assignment
//! (one transaction), RUNNING, the result, and the final state with the release (one
//! transaction). See `docs/architecture.md` for the capacity arithmetic.

pub mod canary;
pub mod driver;
pub(crate) mod model;
mod named;
pub mod outcome;
pub mod phases;
pub mod planning;
pub mod records;
pub mod rehearsal_gate;
pub mod relay;
pub mod retry;
pub mod risk;
pub mod rollback;
pub mod schedule;
pub mod spans;
pub mod throttled;
pub mod transitions;
pub mod waves;

use fleetshift_common::proto::v1::{PlanState, ShardState, ShardTask};

use crate::store::{FenceToken, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{key} holds unreadable data: {detail}")]
    Corrupt { key: String, detail: String },
    #[error("no plan {0}; `fleetshift status` lists the plans")]
    UnknownPlan(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotNow(String),
    #[error("plan {0} kept changing while this request was applied; retry")]
    Contended(String),
    #[error("{0}")]
    Forbidden(String),
}

/// A task's state; one this release does not know reads as unspecified.
pub fn state_of(task: &ShardTask) -> ShardState {
    ShardState::try_from(task.state).unwrap_or(ShardState::Unspecified)
}

/// Whether a task has ended.
pub fn task_ended(state: ShardState) -> bool {
    matches!(
        state,
        ShardState::Succeeded | ShardState::Failed | ShardState::Cancelled | ShardState::RolledBack
    )
}

/// Whether a task counts against its plan's failure threshold: it failed, or its agent rolled
/// the shard back.
pub fn task_failed(state: ShardState) -> bool {
    matches!(state, ShardState::Failed | ShardState::RolledBack)
}

/// Whether a task holds its shard: it runs under a claim (CLAIMED is how earlier releases
/// wrote a task handed over but not yet delivered).
pub fn task_active(state: ShardState) -> bool {
    matches!(state, ShardState::Claimed | ShardState::Running)
}

/// Whether nothing new is dispatched for a plan in this state, ever.
pub fn plan_ended(state: PlanState) -> bool {
    matches!(
        state,
        PlanState::Succeeded
            | PlanState::FinishedWithFailures
            | PlanState::Halted
            | PlanState::Cancelled
    )
}

/// `<plan>~<shard>~<token>`: unique per claim, and its plan is its prefix.
pub fn assignment_id(plan: &str, shard: &str, token: FenceToken) -> String {
    format!("{plan}~{shard}~{token}")
}

/// What an assignment id made by [`assignment_id`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimNamed<'a> {
    pub plan: &'a str,
    pub shard: &'a str,
    pub token: FenceToken,
}

/// Reads `<plan>~<shard>~<token>`; `None` for an id of any other form.
pub fn claim_of(assignment: &str) -> Option<ClaimNamed<'_>> {
    let mut parts = assignment.split('~');
    let (plan, shard, token) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some(ClaimNamed {
        plan,
        shard,
        token: FenceToken::from_raw(token.parse().ok()?),
    })
}

/// The token of the claim `task` runs under (the initial fence while it is pending).
pub fn task_token(task: &ShardTask) -> FenceToken {
    FenceToken::from_raw(task.fence_token)
}

/// The plan an assignment id belongs to.
pub fn plan_of_assignment(assignment: &str) -> &str {
    assignment.split('~').next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_assignment_id_names_the_claim_it_was_made_for_and_nothing_else_parses() {
        let id = assignment_id("p-1", "users-0001", FenceToken::from_raw(42));
        assert_eq!(
            claim_of(&id),
            Some(ClaimNamed {
                plan: "p-1",
                shard: "users-0001",
                token: FenceToken::from_raw(42),
            })
        );
        assert_eq!(plan_of_assignment(&id), "p-1");
        for other in ["restore-7", "p-1~users-0001", "p-1~users-0001~x", "p~s~1~2"] {
            assert_eq!(claim_of(other), None, "{other}");
        }
    }
}
