use fleetshift_common::proto::v1::{Direction, RiskAssessment, ShardFacts, Wave, WavePolicy};

use super::*;
use crate::rollout::waves;

fn task(shard: &str, state: ShardState) -> ShardTask {
    ShardTask {
        shard_id: shard.to_owned(),
        state: state.into(),
        agent_id: "old-agent".to_owned(),
        ..ShardTask::default()
    }
}

/// An ended plan of five shards, one in each state a task ends in or never leaves.
fn source(state: PlanState) -> Plan {
    let mut failed = task("users-2", ShardState::Failed);
    failed.windows = vec!["Sat 02:00-04:00 UTC".to_owned()];
    Plan {
        plan_id: "p1".to_owned(),
        author: "alice".to_owned(),
        state: state.into(),
        target_version: "3".to_owned(),
        set_digest: "d1".to_owned(),
        direction: Direction::Up.into(),
        policy: Some(WavePolicy {
            canary_shards: 1,
            percentages: vec![100],
            ..WavePolicy::default()
        }),
        risk: Some(RiskAssessment {
            approvals_required: 2,
            ..RiskAssessment::default()
        }),
        waves: vec![
            Wave {
                index: 0,
                shards: vec![task("users-1", ShardState::Succeeded)],
            },
            Wave {
                index: 1,
                shards: vec![
                    failed,
                    task("users-3", ShardState::RolledBack),
                    task("orders-1", ShardState::Cancelled),
                    task("orders-2", ShardState::Pending),
                ],
            },
        ],
        ..Plan::default()
    }
}

fn agents() -> Vec<(String, Hello)> {
    let shard = |id: &str| ShardFacts {
        shard_id: id.to_owned(),
        ..ShardFacts::default()
    };
    vec![(
        "db-host-1".to_owned(),
        Hello {
            shards: ["users-1", "users-2", "users-3", "orders-1", "orders-2"]
                .into_iter()
                .map(shard)
                .collect(),
            ..Hello::default()
        },
    )]
}

fn planned(source: &Plan, failed_only: bool, patterns: &[&str]) -> Result<Plan, RolloutError> {
    let patterns: Vec<String> = patterns.iter().map(|p| (*p).to_owned()).collect();
    let retry = Retry {
        source,
        failed_only,
        patterns: &patterns,
        inactive: &[],
    };
    plan_retry(retry, "bob", &agents())
}

fn taken(plan: &Plan) -> Vec<&str> {
    let mut shards: Vec<&str> = waves::planned_tasks(plan)
        .map(|task| task.shard_id.as_str())
        .collect();
    shards.sort_unstable();
    shards
}

fn left_out(plan: &Plan) -> Vec<(&str, &str)> {
    plan.left_out
        .iter()
        .map(|left| (left.shard_id.as_str(), left.reason.as_str()))
        .collect()
}

#[test]
fn every_shard_that_did_not_succeed_is_planned_again_under_the_same_terms() {
    let source = source(PlanState::FinishedWithFailures);
    let plan = planned(&source, false, &[]).expect("planned");
    assert_eq!(taken(&plan), ["orders-1", "orders-2", "users-2", "users-3"]);
    assert_eq!(
        left_out(&plan),
        [("users-1", "reached its target in plan p1")]
    );
    assert_ne!(plan.plan_id, source.plan_id);
    assert_eq!(plan.retries, "p1");
    assert_eq!(plan.author, "bob");
    assert_eq!(plan.state(), PlanState::AwaitingApproval);
    assert!(plan.approvals.is_empty());
    assert_eq!(plan.set_digest, "d1");
    assert_eq!(plan.target_version, "3");
    assert_eq!(plan.direction(), Direction::Up);
    assert_eq!(plan.risk, source.risk, "the same approvals are required");
    // Waves from the source's policy: one canary, then the rest; tasks fresh, on the agent
    // announcing the shard now, each shard keeping its own windows.
    assert_eq!(plan.waves.len(), 2);
    assert_eq!(plan.waves[0].shards.len(), 1);
    for task in waves::planned_tasks(&plan) {
        assert_eq!(task.state(), ShardState::Pending);
        assert_eq!(task.agent_id, "db-host-1");
        let windows = usize::from(task.shard_id == "users-2");
        assert_eq!(task.windows.len(), windows, "{}", task.shard_id);
    }
}

#[test]
fn failed_only_takes_the_failures_and_says_why_the_rest_stay() {
    let plan = planned(&source(PlanState::Halted), true, &[]).expect("planned");
    assert_eq!(taken(&plan), ["users-2", "users-3"]);
    assert_eq!(
        left_out(&plan),
        [
            (
                "orders-1",
                "was cancelled in plan p1, not failed (retry without --failed to take it)"
            ),
            (
                "orders-2",
                "never started in plan p1, so it did not fail (retry without --failed to take it)"
            ),
            ("users-1", "reached its target in plan p1"),
        ]
    );
    let named = planned(&source(PlanState::Halted), true, &["users-3"]).expect("planned");
    assert_eq!(taken(&named), ["users-3"]);
    assert!(left_out(&named).contains(&("users-2", "not named by --shards")));
}

#[test]
fn a_shard_that_is_not_active_is_left_out_with_its_lifecycle() {
    let inactive = [LeftOut {
        shard_id: "users-3".to_owned(),
        reason: "suspended (agent configuration)".to_owned(),
    }];
    let retry = Retry {
        source: &source(PlanState::Halted),
        failed_only: true,
        patterns: &[],
        inactive: &inactive,
    };
    let plan = plan_retry(retry, "bob", &agents()).expect("planned");
    assert_eq!(taken(&plan), ["users-2"]);
    assert!(left_out(&plan).contains(&(
        "users-3",
        "is suspended (agent configuration); retry it once it is active"
    )));
}

#[test]
fn a_retry_of_a_rollback_sends_each_shard_to_its_own_version() {
    let mut source = source(PlanState::FinishedWithFailures);
    source.direction = Direction::Down.into();
    source.rolls_back = "p0".to_owned();
    source.waves[1].shards[0].target_version = "1".to_owned();
    let plan = planned(&source, true, &["users-2"]).expect("planned");
    assert_eq!(plan.direction(), Direction::Down);
    assert_eq!(plan.rolls_back, "p0");
    assert_eq!(plan.waves[0].shards[0].target_version, "1");
}

#[test]
fn a_retry_is_refused_with_the_reason() {
    let refused = |plan: &Plan, failed_only: bool, patterns: &[&str]| {
        planned(plan, failed_only, patterns)
            .expect_err("refused")
            .to_string()
    };
    assert!(refused(&source(PlanState::Running), false, &[]).contains("is running"));
    let unmatched = refused(&source(PlanState::Halted), true, &["orders-*"]);
    assert!(
        unmatched
            .contains("--shards orders-* matches no shard of plan p1 to retry (users-2, users-3)"),
        "{unmatched}"
    );
    let mut succeeded = source(PlanState::Succeeded);
    succeeded.waves.truncate(1);
    assert!(
        refused(&succeeded, false, &[]).contains("nothing to retry: every shard of it succeeded")
    );
    let mut cancelled = source(PlanState::Cancelled);
    cancelled.waves[1].shards.retain(|task| {
        task.state() != ShardState::Failed && task.state() != ShardState::RolledBack
    });
    assert!(refused(&cancelled, true, &[]).contains("nothing to retry: no shard of it failed"));
    let gone = plan_retry(
        Retry {
            source: &source(PlanState::Halted),
            failed_only: false,
            patterns: &[],
            inactive: &[],
        },
        "bob",
        &[],
    )
    .expect_err("no agents")
    .to_string();
    assert!(
        gone.contains("no connected agent announces shard users-2"),
        "{gone}"
    );
}
