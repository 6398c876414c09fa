//! Names of plan and shard-task states and risk levels as the CLI, logs and JSON output spell
//! them.

use crate::proto::v1::{PlanState, RiskLevel, ShardState};

pub fn plan_state_name(state: PlanState) -> &'static str {
    match state {
        PlanState::Unspecified => "unknown",
        PlanState::AwaitingApproval => "awaiting-approval",
        PlanState::Approved => "approved",
        PlanState::Running => "running",
        PlanState::Paused => "paused",
        PlanState::Succeeded => "succeeded",
        PlanState::FinishedWithFailures => "finished-with-failures",
        PlanState::Halted => "halted",
        PlanState::Cancelled => "cancelled",
    }
}

pub fn risk_level_name(level: RiskLevel) -> &'static str {
    match level {
        RiskLevel::Unspecified => "unassessed",
        RiskLevel::Low => "LOW",
        RiskLevel::Medium => "MEDIUM",
        RiskLevel::High => "HIGH",
        RiskLevel::Critical => "CRITICAL",
    }
}

pub fn shard_state_name(state: ShardState) -> &'static str {
    match state {
        ShardState::Unspecified => "unknown",
        ShardState::Pending => "pending",
        ShardState::Claimed => "claimed",
        ShardState::Running => "running",
        ShardState::Succeeded => "succeeded",
        ShardState::Failed => "failed",
        ShardState::Cancelled => "cancelled",
        ShardState::RolledBack => "rolled back",
    }
}
