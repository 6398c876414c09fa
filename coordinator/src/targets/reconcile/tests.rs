//! The leader's reconciliation against the in-memory store: catch-ups planned once, started
//! once approved, later ones covered by that approval; superseded plans cancelled; refusals
//! kept on the target; and a pass with nothing behind writes nothing.

use std::collections::HashMap;
use std::time::Duration;

use fleetshift_common::proto::v1::{Approval, Hello, Plan, PlanState, ShardFacts};
use prost::Message;

use super::*;
use crate::rollout::model::Model;
use crate::store::{MemoryStore, Store};
use crate::targets::tests::{packed, request};

const LONG: Duration = Duration::from_secs(3600);

async fn elect(store: &MemoryStore) -> Epoch {
    let lease = store.grant_lease(LONG).await.expect("lease");
    store
        .campaign("c1", lease)
        .await
        .expect("campaign")
        .expect("nobody else leads")
        .epoch
}

/// Agent `agent` announces `shards` as (id, version), all `tier=gold`.
async fn announce(store: &MemoryStore, agent: &str, shards: &[(&str, &str)]) {
    let lease = store.grant_lease(LONG).await.expect("lease");
    let hello = Hello {
        agent_id: agent.to_owned(),
        shards: shards
            .iter()
            .map(|(shard, version)| ShardFacts {
                shard_id: (*shard).to_owned(),
                current_version: (*version).to_owned(),
                labels: HashMap::from([("tier".to_owned(), "gold".to_owned())]),
                reachable: true,
                ..ShardFacts::default()
            })
            .collect(),
        ..Hello::default()
    };
    store
        .announce_agent(agent, &hello.encode_to_vec(), lease)
        .await
        .expect("announce");
}

/// One pass of a fresh reconciler over the store as it is.
async fn pass(store: &MemoryStore, epoch: Epoch) {
    let (model, _) = Model::load(store).await.expect("model");
    Reconciler::default()
        .pass(store, epoch, &model)
        .await
        .expect("pass");
}

/// The stored plans, oldest first.
async fn plans(store: &MemoryStore) -> Vec<Plan> {
    let mut plans = records::load_plans(store).await.expect("plans");
    plans.sort_by(|left, right| left.plan_id.cmp(&right.plan_id));
    plans
}

fn shards_of(plan: &Plan) -> Vec<&str> {
    let mut shards: Vec<&str> = plan.catch_up_from.keys().map(String::as_str).collect();
    shards.sort_unstable();
    shards
}

async fn revision(store: &MemoryStore) -> i64 {
    store.list("/nothing/").await.expect("list").revision
}

#[tokio::test]
async fn catch_ups_are_planned_once_started_once_approved_and_covered_after() {
    let store = MemoryStore::new();
    let epoch = elect(&store).await;
    announce(&store, "a1", &[("s1", ""), ("s2", "3")]).await;
    crate::targets::set(&store, request("main", &packed(3), ""), "alice")
        .await
        .expect("target");

    pass(&store, epoch).await;
    let first = plans(&store).await;
    assert_eq!(first.len(), 1);
    let plan = &first[0];
    assert_eq!(plan.fleet_target, "main");
    assert_eq!(plan.state, i32::from(PlanState::AwaitingApproval));
    assert_eq!(
        plan.author, "alice",
        "planned in the target's author's name"
    );
    assert_eq!(shards_of(plan), ["s1"], "s2 is at the target");
    pass(&store, epoch).await;
    assert_eq!(
        plans(&store).await.len(),
        1,
        "a shard in a plan is not planned again"
    );

    records::update_plan(&store, &plan.plan_id, None, |plan| {
        plan.state = PlanState::Approved.into();
        plan.approvals.push(Approval {
            approver: "bob".to_owned(),
            ..Approval::default()
        });
        Ok(())
    })
    .await
    .expect("approve");
    pass(&store, epoch).await;
    let started = records::load_plan(&store, &plan.plan_id)
        .await
        .expect("plan");
    assert_eq!(started.plan.state, i32::from(PlanState::Running));
    let target = crate::targets::load(&store, "main")
        .await
        .expect("load")
        .expect("target");
    let approved: Vec<(&str, &str)> = target
        .target
        .approved
        .iter()
        .map(|a| (a.from_version.as_str(), a.plan_id.as_str()))
        .collect();
    assert_eq!(approved, [("", plan.plan_id.as_str())]);

    // A new shard from an empty ledger: the same revisions, so no approval is asked.
    announce(&store, "a2", &[("s3", "")]).await;
    // One from version 1 takes other revisions: it needs an approval.
    announce(&store, "a3", &[("s4", "1")]).await;
    pass(&store, epoch).await;
    let all = plans(&store).await;
    assert_eq!(all.len(), 3, "{all:?}");
    let covered = all
        .iter()
        .find(|p| shards_of(p) == ["s3"])
        .expect("s3's plan");
    assert_eq!(covered.state, i32::from(PlanState::Running));
    assert_eq!(covered.approvals[0].approver, "bob");
    assert!(
        covered.state_reason.contains(&plan.plan_id),
        "{}",
        covered.state_reason
    );
    let asking = all
        .iter()
        .find(|p| shards_of(p) == ["s4"])
        .expect("s4's plan");
    assert_eq!(asking.state, i32::from(PlanState::AwaitingApproval));
    assert_eq!(asking.catch_up_from["s4"], "1");
}

#[tokio::test]
async fn a_pass_with_nothing_behind_writes_nothing() {
    let store = MemoryStore::new();
    let epoch = elect(&store).await;
    announce(&store, "a1", &[("s1", "3"), ("s2", "3")]).await;
    crate::targets::set(&store, request("main", &packed(3), ""), "alice")
        .await
        .expect("target");
    let before = revision(&store).await;
    pass(&store, epoch).await;
    assert_eq!(revision(&store).await, before);
    assert!(plans(&store).await.is_empty());
}

#[tokio::test]
async fn a_target_that_moves_on_cancels_its_plans_not_started() {
    let store = MemoryStore::new();
    let epoch = elect(&store).await;
    announce(&store, "a1", &[("s1", "")]).await;
    let set = packed(3);
    crate::targets::set(&store, request("main", &set, "3"), "alice")
        .await
        .expect("target");
    pass(&store, epoch).await;
    let old = plans(&store).await.remove(0);
    crate::targets::set(&store, request("main", &set, "2"), "alice")
        .await
        .expect("moved");
    pass(&store, epoch).await;
    let cancelled = records::load_plan(&store, &old.plan_id)
        .await
        .expect("plan")
        .plan;
    assert_eq!(cancelled.state, i32::from(PlanState::Cancelled));
    assert!(
        cancelled
            .state_reason
            .contains("now keeps its shards at version 2"),
        "{}",
        cancelled.state_reason
    );
    // Its shard is free again: the next pass plans it to the new version.
    pass(&store, epoch).await;
    let latest = plans(&store).await.pop().expect("a new plan");
    assert_eq!(
        (latest.target_version.as_str(), shards_of(&latest)),
        ("2", vec!["s1"])
    );

    crate::targets::remove(&store, "main")
        .await
        .expect("remove");
    pass(&store, epoch).await;
    let removed = records::load_plan(&store, &latest.plan_id)
        .await
        .expect("plan")
        .plan;
    assert_eq!(removed.state, i32::from(PlanState::Cancelled));
    assert!(
        removed.state_reason.contains("was removed"),
        "{}",
        removed.state_reason
    );
}

#[tokio::test]
async fn a_catch_up_that_cannot_be_planned_is_recorded_and_not_tried_again_at_once() {
    let store = MemoryStore::new();
    let epoch = elect(&store).await;
    // Two agents announce one shard: which would run it is a guess, so planning refuses.
    announce(&store, "a1", &[("s1", "")]).await;
    announce(&store, "a2", &[("s1", "")]).await;
    crate::targets::set(&store, request("main", &packed(2), ""), "alice")
        .await
        .expect("target");
    let (model, _) = Model::load(&store).await.expect("model");
    let mut reconciler = Reconciler::default();
    reconciler.pass(&store, epoch, &model).await.expect("pass");
    let target = crate::targets::load(&store, "main")
        .await
        .expect("load")
        .expect("target");
    assert!(
        target
            .target
            .refusal
            .contains("announced by agents a1 and a2"),
        "{}",
        target.target.refusal
    );
    assert!(plans(&store).await.is_empty());
    let (model, _) = Model::load(&store).await.expect("model");
    let before = revision(&store).await;
    reconciler.pass(&store, epoch, &model).await.expect("pass");
    assert_eq!(
        revision(&store).await,
        before,
        "not tried again within the pause"
    );
}
