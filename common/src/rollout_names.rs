//! Names of plan and shard-task states and risk levels as the CLI, logs and JSON output spell
//! them.

use crate::proto::v1::{PlanState, RiskLevel, ShardLifecycle, ShardState, TargetStanding};

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

/// The lifecycles an agent's configuration and an operator may name, in their spelling.
pub const LIFECYCLES: [(&str, ShardLifecycle); 4] = [
    ("active", ShardLifecycle::Active),
    ("suspended", ShardLifecycle::Suspended),
    ("provisioning", ShardLifecycle::Provisioning),
    ("retired", ShardLifecycle::Retired),
];

/// A lifecycle's name; unspecified reads as active (agents that predate lifecycles).
pub fn lifecycle_name(lifecycle: ShardLifecycle) -> &'static str {
    match lifecycle {
        ShardLifecycle::Unspecified | ShardLifecycle::Active => "active",
        ShardLifecycle::Suspended => "suspended",
        ShardLifecycle::Provisioning => "provisioning",
        ShardLifecycle::Retired => "retired",
    }
}

/// How a shard's standing against a fleet target is spelled (CLI, JSON).
pub fn target_standing_name(standing: TargetStanding) -> &'static str {
    match standing {
        TargetStanding::Unspecified => "unknown",
        TargetStanding::At => "at",
        TargetStanding::Behind => "behind",
        TargetStanding::Ahead => "ahead",
        TargetStanding::UnknownVersion => "unknown-version",
        TargetStanding::Unseen => "unseen",
    }
}

/// The lifecycle `name` spells, or why not (naming the ones there are).
pub fn parse_lifecycle(name: &str) -> Result<ShardLifecycle, String> {
    LIFECYCLES
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, lifecycle)| *lifecycle)
        .ok_or_else(|| {
            let known: Vec<&str> = LIFECYCLES.iter().map(|(known, _)| *known).collect();
            format!(
                "{name:?} is not a shard lifecycle; use one of {}",
                known.join(", ")
            )
        })
}
