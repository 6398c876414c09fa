//! What operators may do to a plan in each state. Each function changes the plan in place or
//! says why not and what to do instead; [`super::records::update_plan`] applies it atomically.

use std::time::SystemTime;

use fleetshift_common::proto::v1::{Approval, Plan, PlanState, RiskAssessment};
use fleetshift_common::rollout_names::plan_state_name;

use super::RolloutError;
use super::rehearsal_gate::{self, ShardVersions};

fn state(plan: &Plan) -> PlanState {
    PlanState::try_from(plan.state).unwrap_or(PlanState::Unspecified)
}

fn not_now(plan: &Plan, action: &str) -> RolloutError {
    RolloutError::NotNow(format!(
        "plan {} is {}; it cannot be {action} now",
        plan.plan_id,
        plan_state_name(state(plan))
    ))
}

/// Records `approver`'s approval; a HIGH or CRITICAL plan first needs the rehearsals its level
/// asks for (see [`rehearsal_gate`]), judged against each shard's version in `versions`.
/// The capacities an approver may sign in (empty: none given).
pub const CAPACITIES: [&str; 5] = ["", "dba", "eng", "ops", "sec"];

/// Records `approval` (its time is set here) if the plan may take it.
pub fn approve(
    plan: &mut Plan,
    approval: Approval,
    versions: &ShardVersions,
) -> Result<(), RolloutError> {
    if state(plan) != PlanState::AwaitingApproval && state(plan) != PlanState::Approved {
        return Err(not_now(plan, "approved"));
    }
    if !CAPACITIES.contains(&approval.capacity.as_str()) {
        return Err(RolloutError::BadRequest(format!(
            "--as {}: an approver signs as dba, eng, ops or sec",
            approval.capacity
        )));
    }
    let approver = approval.approver.as_str();
    if plan
        .approvals
        .iter()
        .any(|approval| approval.approver == approver)
    {
        return Err(RolloutError::NotNow(format!(
            "{approver} has approved plan {} already",
            plan.plan_id
        )));
    }
    let gate = gate(plan);
    if !gate.author_may_approve && approver == plan.author {
        return Err(RolloutError::Forbidden(format!(
            "plan {} is CRITICAL (risk {}): its author cannot approve it; {} other approvers must",
            plan.plan_id, gate.score, gate.approvals_required
        )));
    }
    if let Some(missing) = rehearsal_gate::missing(plan, versions) {
        return Err(RolloutError::NotNow(missing));
    }
    plan.approvals.push(Approval {
        at: Some(prost_types::Timestamp::from(SystemTime::now())),
        ..approval
    });
    let given = u32::try_from(plan.approvals.len()).unwrap_or(u32::MAX);
    if given >= gate.approvals_required {
        plan.state = PlanState::Approved.into();
        plan.state_reason.clear();
    } else {
        plan.state_reason = format!(
            "{given} of {} approvals (risk {}); another approver is needed",
            gate.approvals_required, gate.score
        );
    }
    Ok(())
}

/// The approvals the plan's risk asks for (one, by anyone with the role, when not assessed).
fn gate(plan: &Plan) -> RiskAssessment {
    plan.risk.clone().unwrap_or(RiskAssessment {
        approvals_required: 1,
        author_may_approve: true,
        ..RiskAssessment::default()
    })
}

pub fn start(plan: &mut Plan) -> Result<(), RolloutError> {
    match state(plan) {
        PlanState::Approved => {
            plan.state = PlanState::Running.into();
            plan.state_reason.clear();
            Ok(())
        }
        PlanState::AwaitingApproval => {
            let gate = gate(plan);
            Err(RolloutError::NotNow(format!(
                "plan {} has {} of {} approvals it needs: `fleetshift approve {}` (approver role{})",
                plan.plan_id,
                plan.approvals.len(),
                gate.approvals_required,
                plan.plan_id,
                if gate.author_may_approve {
                    ""
                } else {
                    ", not the plan's author"
                }
            )))
        }
        _ => Err(not_now(plan, "started")),
    }
}

pub fn pause(plan: &mut Plan, reason: &str) -> Result<(), RolloutError> {
    if state(plan) != PlanState::Running {
        return Err(not_now(plan, "paused"));
    }
    plan.state = PlanState::Paused.into();
    plan.state_reason = reason.to_owned();
    Ok(())
}

pub fn resume(plan: &mut Plan) -> Result<(), RolloutError> {
    if state(plan) != PlanState::Paused {
        return Err(not_now(plan, "resumed"));
    }
    plan.state = PlanState::Running.into();
    plan.state_reason.clear();
    Ok(())
}

pub fn cancel(plan: &mut Plan, reason: &str) -> Result<(), RolloutError> {
    if matches!(
        state(plan),
        PlanState::Succeeded | PlanState::FinishedWithFailures | PlanState::Cancelled
    ) {
        return Err(not_now(plan, "cancelled"));
    }
    plan.state = PlanState::Cancelled.into();
    plan.state_reason = reason.to_owned();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            plan_id: "p1".to_owned(),
            state: PlanState::AwaitingApproval.into(),
            ..Plan::default()
        }
    }

    fn by(approver: &str, comment: &str) -> Approval {
        Approval {
            approver: approver.to_owned(),
            comment: comment.to_owned(),
            ..Approval::default()
        }
    }

    #[test]
    fn an_approval_is_in_one_of_the_known_capacities() {
        let mut plan = plan();
        let unknown = Approval {
            capacity: "cfo".to_owned(),
            ..by("alice", "ok")
        };
        let refused = approve(&mut plan, unknown, &ShardVersions::new()).expect_err("unknown");
        assert!(
            refused.to_string().contains("dba, eng, ops or sec"),
            "{refused}"
        );
        let dba = Approval {
            capacity: "dba".to_owned(),
            ..by("alice", "ok")
        };
        approve(&mut plan, dba, &ShardVersions::new()).expect("approve");
        assert_eq!(plan.approvals[0].capacity, "dba");
        assert!(plan.approvals[0].at.is_some());
    }

    #[test]
    fn a_plan_runs_only_once_approved_and_pauses_only_while_running() {
        let mut plan = plan();
        assert!(
            matches!(start(&mut plan), Err(RolloutError::NotNow(message)) if message.contains("fleetshift approve p1"))
        );
        assert!(pause(&mut plan, "").is_err());
        approve(&mut plan, by("alice", "checked"), &ShardVersions::new()).expect("approve");
        assert!(
            approve(&mut plan, by("alice", "again"), &ShardVersions::new()).is_err(),
            "one approval per approver"
        );
        start(&mut plan).expect("start");
        assert!(start(&mut plan).is_err());
        pause(&mut plan, "lunch").expect("pause");
        assert_eq!(plan.state_reason, "lunch");
        resume(&mut plan).expect("resume");
        cancel(&mut plan, "changed our minds").expect("cancel");
        assert!(cancel(&mut plan, "twice").is_err());
        assert!(resume(&mut plan).is_err());
    }

    #[test]
    fn a_critical_plan_needs_two_approvers_neither_its_author() {
        let mut plan = Plan {
            author: "alice".to_owned(),
            risk: Some(RiskAssessment {
                score: 95,
                approvals_required: 2,
                author_may_approve: false,
                ..RiskAssessment::default()
            }),
            ..plan()
        };
        assert!(matches!(
            approve(&mut plan, by("alice", "mine"), &ShardVersions::new()),
            Err(RolloutError::Forbidden(message)) if message.contains("author cannot approve")
        ));
        approve(&mut plan, by("bob", "ok"), &ShardVersions::new()).expect("first approver");
        assert_eq!(plan.state, i32::from(PlanState::AwaitingApproval));
        assert!(
            matches!(start(&mut plan), Err(RolloutError::NotNow(message)) if message.contains("1 of 2"))
        );
        approve(&mut plan, by("carol", "ok"), &ShardVersions::new()).expect("second approver");
        assert_eq!(plan.state, i32::from(PlanState::Approved));
        start(&mut plan).expect("start");
    }
}
