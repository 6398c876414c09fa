//! Where shards stand against a target, and why: each reason a shard behind is not planned,
//! and the one case it is.

use std::collections::HashMap;

use fleetshift_common::proto::v1::{
    CreatePlanRequest, ErrorDetail, FleetTarget, MigrationSet, Plan, PlanState, ShardLifecycle,
    ShardLifecycleSetting, ShardState, ShardTask, TargetApproval,
};

use super::*;

fn target() -> FleetTarget {
    FleetTarget {
        name: "main".to_owned(),
        terms: Some(CreatePlanRequest {
            migration_set: Some(MigrationSet {
                digest: "d1".to_owned(),
                ..MigrationSet::default()
            }),
            target_version: "3".to_owned(),
            selector: HashMap::from([("tier".to_owned(), "gold".to_owned())]),
            ..CreatePlanRequest::default()
        }),
        versions: ["1", "2", "3", "4"].map(str::to_owned).to_vec(),
        ..FleetTarget::default()
    }
}

fn facts(shard: &str, version: &str) -> ShardFacts {
    ShardFacts {
        shard_id: shard.to_owned(),
        labels: HashMap::from([("tier".to_owned(), "gold".to_owned())]),
        current_version: version.to_owned(),
        reachable: true,
        ..ShardFacts::default()
    }
}

fn seen(facts: &ShardFacts) -> Seen<'_> {
    Seen {
        agent: "a1",
        host: None,
        facts,
    }
}

/// Takes in `task` of `plan`, run under the claim token `fence`.
fn added(plans: &mut PlanIndex, target: &FleetTarget, plan: &Plan, task: &ShardTask, fence: i64) {
    let task = ShardTask {
        fence_token: fence,
        ..task.clone()
    };
    plans.add(target, plan, &task);
}

fn plan(id: &str, state: PlanState, target: &str) -> Plan {
    Plan {
        plan_id: id.to_owned(),
        state: state.into(),
        set_digest: "d1".to_owned(),
        target_version: "3".to_owned(),
        fleet_target: target.to_owned(),
        ..Plan::default()
    }
}

fn task(shard: &str, state: ShardState) -> ShardTask {
    ShardTask {
        shard_id: shard.to_owned(),
        state: state.into(),
        ..ShardTask::default()
    }
}

/// The one shard's standing, and the version its catch-up would start from if one is due.
fn judged_one(
    target: &FleetTarget,
    facts: &ShardFacts,
    fence: i64,
    plans: &PlanIndex,
) -> (TargetShard, Option<String>) {
    judged_with(target, facts, fence, &Settings::new(), plans)
}

fn judged_with(
    target: &FleetTarget,
    facts: &ShardFacts,
    fence: i64,
    settings: &Settings,
    plans: &PlanIndex,
) -> (TargetShard, Option<String>) {
    // The shard's fence as its agent read it.
    let facts = ShardFacts {
        fence_token: fence,
        ..facts.clone()
    };
    let shards = [seen(&facts)];
    let mut judged = judge(target, &shards, settings, plans);
    assert_eq!(judged.len(), 1, "{judged:?}");
    let due = catch_ups(target, &shards, settings, || plans.clone());
    (
        judged.remove(0),
        due.into_iter().next().map(|(_, from)| from),
    )
}

#[test]
fn versions_are_placed_in_the_sets_order_and_only_a_shard_behind_is_planned() {
    let target = target();
    let plans = PlanIndex::default();
    let cases = [
        ("", TargetStanding::Behind, Some("")),
        ("2", TargetStanding::Behind, Some("2")),
        ("3", TargetStanding::At, None),
        ("4", TargetStanding::Ahead, None),
        ("9", TargetStanding::UnknownVersion, None),
    ];
    for (version, standing, catch_up) in cases {
        let facts = facts("s1", version);
        let judged = judged_one(&target, &facts, 1, &plans);
        assert_eq!(judged.0.standing, i32::from(standing), "{version:?}");
        assert_eq!(judged.1.as_deref(), catch_up, "{version:?}");
    }
    let facts = facts("s1", "9");
    assert!(
        judged_one(&target, &facts, 1, &plans)
            .0
            .reason
            .contains("does not have")
    );
}

#[test]
fn shards_the_selector_does_not_match_are_not_the_targets() {
    let target = target();
    let mut other = facts("s2", "");
    other.labels.insert("tier".to_owned(), "free".to_owned());
    let mine = facts("s1", "");
    let shards = [seen(&mine), seen(&other)];
    let judged = judge(&target, &shards, &Settings::new(), &PlanIndex::default());
    let ids: Vec<&str> = judged.iter().map(|j| j.shard_id.as_str()).collect();
    assert_eq!(ids, ["s1"]);
    let due = catch_ups(&target, &shards, &Settings::new(), PlanIndex::default);
    assert_eq!(due, [("s1".to_owned(), String::new())]);
}

#[test]
fn an_inactive_or_unreachable_shard_behind_waits_and_says_why() {
    let target = target();
    let suspended = facts("s1", "1");
    let settings = Settings::from([(
        "s1".to_owned(),
        ShardLifecycleSetting {
            shard_id: "s1".to_owned(),
            lifecycle: ShardLifecycle::Suspended.into(),
            reason: "tenant paused".to_owned(),
            author: "alice".to_owned(),
            at: None,
        },
    )]);
    let judged = judged_with(&target, &suspended, 1, &settings, &PlanIndex::default());
    assert_eq!(judged.1, None);
    assert!(
        judged.0.reason.starts_with("suspended (set by alice"),
        "{judged:?}"
    );
    let mut unreachable = facts("s1", "1");
    unreachable.reachable = false;
    let judged = judged_one(&target, &unreachable, 1, &PlanIndex::default());
    assert_eq!(judged.1, None);
    assert!(judged.0.reason.contains("cannot reach"), "{judged:?}");
}

#[test]
fn a_shard_in_a_plan_that_has_not_ended_is_left_to_it() {
    let target = target();
    let facts = facts("s1", "1");
    for (state, says) in [
        (PlanState::AwaitingApproval, "`fleetshift approve p1`"),
        (PlanState::Running, "catching up in plan p1"),
        (PlanState::Paused, "in plan p1, paused"),
    ] {
        let mut plans = PlanIndex::default();
        // Any plan holds the shard, the target's or an operator's.
        added(
            &mut plans,
            &target,
            &plan("p1", state, ""),
            &task("s1", ShardState::Pending),
            5,
        );
        let judged = judged_one(&target, &facts, 9, &plans);
        assert_eq!(judged.1, None, "{state:?}");
        assert!(judged.0.reason.contains(says), "{judged:?}");
        assert_eq!(judged.0.plan_id, "p1");
    }
}

#[test]
fn a_shard_that_failed_in_the_targets_plan_waits_for_a_retry() {
    let target = target();
    let facts = facts("s1", "1");
    let mut failed = task("s1", ShardState::Failed);
    failed.error = Some(ErrorDetail {
        message: "lock timeout".to_owned(),
        ..ErrorDetail::default()
    });
    let mut plans = PlanIndex::default();
    added(
        &mut plans,
        &target,
        &plan("p1", PlanState::FinishedWithFailures, "main"),
        &failed,
        5,
    );
    let judged = judged_one(&target, &facts, 9, &plans);
    assert_eq!(judged.1, None);
    assert!(
        judged
            .0
            .reason
            .contains("failed in plan p1: lock timeout; `fleetshift retry p1 --failed`"),
        "{judged:?}"
    );
    // A newer plan of the target that succeeded takes over from the failure.
    added(
        &mut plans,
        &target,
        &plan("p2", PlanState::Succeeded, "main"),
        &task("s1", ShardState::Succeeded),
        12,
    );
    let judged = judged_one(&target, &facts, 9, &plans);
    assert!(judged.0.reason.contains("fresh facts"), "{judged:?}");
}

#[test]
fn facts_older_than_a_success_are_awaited_and_newer_ones_believed() {
    let target = target();
    let facts = facts("s1", "1");
    let mut plans = PlanIndex::default();
    added(
        &mut plans,
        &target,
        &plan("p1", PlanState::Succeeded, "main"),
        &task("s1", ShardState::Succeeded),
        10,
    );
    let stale = judged_one(&target, &facts, 9, &plans);
    assert_eq!(stale.1, None);
    // Behind under a newer fence than the run's: restored under a later claim, say.
    let fresh = judged_one(&target, &facts, 11, &plans);
    assert_eq!(fresh.1.as_deref(), Some("1"));
}

#[test]
fn another_goals_plans_do_not_count_and_an_approval_covers_its_starting_version() {
    let mut target = target();
    let facts = facts("s1", "1");
    let mut plans = PlanIndex::default();
    let mut older = plan("p1", PlanState::FinishedWithFailures, "main");
    older.target_version = "2".to_owned();
    added(
        &mut plans,
        &target,
        &older,
        &task("s1", ShardState::Failed),
        5,
    );
    let judged = judged_one(&target, &facts, 9, &plans);
    assert_eq!(
        judged.1.as_deref(),
        Some("1"),
        "a failure towards another version"
    );
    assert!(
        judged.0.reason.contains("planned for approval"),
        "{judged:?}"
    );
    target.approved.push(TargetApproval {
        from_version: "1".to_owned(),
        plan_id: "p0".to_owned(),
        approvals: Vec::new(),
    });
    let judged = judged_one(&target, &facts, 9, &plans);
    assert!(
        judged.0.reason.contains("approved in plan p0"),
        "{judged:?}"
    );
}

#[test]
fn a_shard_of_the_targets_plans_not_announced_is_unseen() {
    let target = target();
    let mut plans = PlanIndex::default();
    added(
        &mut plans,
        &target,
        &plan("p1", PlanState::Succeeded, "main"),
        &task("gone", ShardState::Succeeded),
        5,
    );
    let judged = judge(&target, &[], &Settings::new(), &plans);
    assert_eq!(judged.len(), 1);
    assert_eq!(judged[0].standing, i32::from(TargetStanding::Unseen));
}
