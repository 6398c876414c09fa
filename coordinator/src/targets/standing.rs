//! Where each shard stands against a fleet target, and why it is not there yet: the one
//! judgement behind both the leader's reconciliation (which shards to plan) and
//! `GetTargetStatus` (what to tell the operator). Pure: it is given the announced shards, the
//! operators' lifecycles and the plans' tasks, and reads nothing itself.

use std::collections::{BTreeMap, HashMap};

use fleetshift_common::proto::v1::{
    FleetTarget, HostFacts, Plan, PlanState, ShardFacts, ShardLifecycle, ShardState, ShardTask,
    TargetShard, TargetStanding,
};
use fleetshift_common::rollout_names::plan_state_name;
use fleetshift_common::selector::{self, Announced};

use crate::lifecycles::{self, Settings};
use crate::rollout::{plan_ended, state_of, task_ended};

/// A shard as its agent announced it.
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    pub agent: &'a str,
    pub host: Option<&'a HostFacts>,
    pub facts: &'a ShardFacts,
}

/// What the plans say about the shards: which are in a plan that has not ended, and how each
/// shard's newest task of the target's present goal went.
#[derive(Debug, Default, Clone)]
pub struct PlanIndex {
    busy: HashMap<String, Busy>,
    latest: HashMap<String, Latest>,
}

#[derive(Debug, Clone)]
struct Busy {
    plan_id: String,
    state: PlanState,
}

#[derive(Debug, Clone)]
struct Latest {
    plan_id: String,
    state: ShardState,
    error: String,
    /// The claim's token the task ran under: the shard's fence after its run. Facts with an
    /// older fence were read before the run, however late they arrived.
    fence_token: i64,
}

impl PlanIndex {
    /// Takes in one task of `plan`.
    pub fn add(&mut self, target: &FleetTarget, plan: &Plan, task: &ShardTask) {
        let plan_state = PlanState::try_from(plan.state).unwrap_or(PlanState::Unspecified);
        let state = state_of(task);
        if !plan_ended(plan_state) && !task_ended(state) {
            self.busy.insert(
                task.shard_id.clone(),
                Busy {
                    plan_id: plan.plan_id.clone(),
                    state: plan_state,
                },
            );
        }
        if super::plan_serves(target, plan) {
            let newer = self
                .latest
                .get(&task.shard_id)
                .is_none_or(|latest| latest.plan_id < plan.plan_id);
            if newer {
                self.latest.insert(
                    task.shard_id.clone(),
                    Latest {
                        plan_id: plan.plan_id.clone(),
                        state,
                        error: task
                            .error
                            .as_ref()
                            .map(|error| error.message.clone())
                            .unwrap_or_default(),
                        fence_token: task.fence_token,
                    },
                );
            }
        }
    }

    /// Whether a plan is worth reading for `target`: one that has not ended (its shards are
    /// busy), or one of the target's own.
    pub fn reads(target: &FleetTarget, plan: &Plan) -> bool {
        let state = PlanState::try_from(plan.state).unwrap_or(PlanState::Unspecified);
        !plan_ended(state) || plan.fleet_target == target.name
    }
}

/// The target's versions in order, and where its goal is among them.
struct Order<'t> {
    places: HashMap<&'t str, usize>,
    goal: Option<usize>,
}

impl<'t> Order<'t> {
    fn of(target: &'t FleetTarget) -> Self {
        let places: HashMap<&str, usize> = target
            .versions
            .iter()
            .enumerate()
            .map(|(index, version)| (version.as_str(), index))
            .collect();
        let goal = places.get(super::version(target)).copied();
        Self { places, goal }
    }

    /// A version's place against the goal (an empty ledger is before all).
    fn place(&self, current: &str) -> TargetStanding {
        let Some(goal) = self.goal else {
            return TargetStanding::UnknownVersion;
        };
        if current.is_empty() {
            return TargetStanding::Behind;
        }
        match self.places.get(current) {
            None => TargetStanding::UnknownVersion,
            Some(&at) if at == goal => TargetStanding::At,
            Some(&at) if at < goal => TargetStanding::Behind,
            Some(_) => TargetStanding::Ahead,
        }
    }
}

fn selector_of(target: &FleetTarget) -> HashMap<String, String> {
    target
        .terms
        .as_ref()
        .map(|terms| terms.selector.clone())
        .unwrap_or_default()
}

fn selected(selector: &HashMap<String, String>, seen: &Seen<'_>) -> bool {
    let announced = Announced {
        agent: seen.agent,
        host: seen.host,
        shard: seen.facts,
    };
    selector::selects(selector, &announced.attributes())
}

/// The shards the leader should plan now for `target`, each with its version. Only versions
/// are read until a shard is behind: a fleet at its target costs a lookup per shard, and the
/// plans (`plans`, built only then) are not read at all.
pub fn catch_ups(
    target: &FleetTarget,
    shards: &[Seen<'_>],
    settings: &Settings,
    plans: impl FnOnce() -> PlanIndex,
) -> Vec<(String, String)> {
    let order = Order::of(target);
    let behind: Vec<&Seen<'_>> = shards
        .iter()
        .filter(|seen| order.place(&seen.facts.current_version) == TargetStanding::Behind)
        .collect();
    if behind.is_empty() {
        return Vec::new();
    }
    let selector = selector_of(target);
    let plans = plans();
    let mut due: Vec<(String, String)> = behind
        .into_iter()
        .filter(|seen| selected(&selector, seen))
        .filter_map(|seen| {
            let (_, from) = judge_behind(target, seen, settings, &plans);
            from.map(|from| (seen.facts.shard_id.clone(), from))
        })
        .collect();
    due.sort();
    due.dedup_by(|later, earlier| later.0 == earlier.0);
    due
}

/// Where the target's shards stand: every announced shard its selector matches, and every
/// shard one of its plans took that is not announced now; by shard id.
pub fn judge(
    target: &FleetTarget,
    shards: &[Seen<'_>],
    settings: &Settings,
    plans: &PlanIndex,
) -> Vec<TargetShard> {
    let selector = selector_of(target);
    let order = Order::of(target);
    let mut judged: BTreeMap<String, TargetShard> = BTreeMap::new();
    for seen in shards.iter().filter(|seen| selected(&selector, seen)) {
        let standing = order.place(&seen.facts.current_version);
        let reason = if standing == TargetStanding::Behind {
            judge_behind(target, seen, settings, plans).0
        } else {
            other_reason(standing, &seen.facts.current_version)
        };
        let plan_id = plans
            .busy
            .get(&seen.facts.shard_id)
            .map(|busy| busy.plan_id.clone())
            .or_else(|| {
                plans
                    .latest
                    .get(&seen.facts.shard_id)
                    .map(|latest| latest.plan_id.clone())
            })
            .unwrap_or_default();
        judged.insert(
            seen.facts.shard_id.clone(),
            TargetShard {
                shard_id: seen.facts.shard_id.clone(),
                current_version: seen.facts.current_version.clone(),
                standing: standing.into(),
                plan_id,
                reason,
            },
        );
    }
    for (shard_id, latest) in &plans.latest {
        judged
            .entry(shard_id.clone())
            .or_insert_with(|| TargetShard {
                shard_id: shard_id.clone(),
                current_version: String::new(),
                standing: TargetStanding::Unseen.into(),
                plan_id: latest.plan_id.clone(),
                reason: "its agent has no session now; it is caught up when it returns".to_owned(),
            });
    }
    judged.into_values().collect()
}

fn other_reason(standing: TargetStanding, current: &str) -> String {
    match standing {
        TargetStanding::Ahead => {
            "past the target; nothing takes a shard back on its own (`fleetshift rollback` does)"
                .to_owned()
        }
        TargetStanding::UnknownVersion => format!(
            "at version {current}, which the target's set does not have; fix the shard or the set"
        ),
        _ => String::new(),
    }
}

/// Why a shard behind the target is not caught up yet, and whether to plan it now.
fn judge_behind(
    target: &FleetTarget,
    seen: &Seen<'_>,
    settings: &Settings,
    plans: &PlanIndex,
) -> (String, Option<String>) {
    let facts = seen.facts;
    let (lifecycle, source) = lifecycles::in_force(facts, settings);
    if lifecycle != ShardLifecycle::Active {
        return (
            format!(
                "{} ({source}); caught up once active",
                fleetshift_common::rollout_names::lifecycle_name(lifecycle)
            ),
            None,
        );
    }
    if !facts.reachable {
        return (
            format!(
                "its agent {} cannot reach the database; caught up once it can",
                seen.agent
            ),
            None,
        );
    }
    if let Some(busy) = plans.busy.get(&facts.shard_id) {
        let reason = match busy.state {
            PlanState::AwaitingApproval => format!(
                "in plan {0}, awaiting approval: `fleetshift approve {0}`",
                busy.plan_id
            ),
            PlanState::Running => format!("catching up in plan {}", busy.plan_id),
            state => format!("in plan {}, {}", busy.plan_id, plan_state_name(state)),
        };
        return (reason, None);
    }
    if let Some(latest) = plans.latest.get(&facts.shard_id) {
        match latest.state {
            ShardState::Succeeded if facts.fence_token < latest.fence_token => {
                return (
                    format!(
                        "caught up in plan {}; waiting for its agent's fresh facts",
                        latest.plan_id
                    ),
                    None,
                );
            }
            ShardState::Failed | ShardState::RolledBack => {
                return (
                    format!(
                        "failed in plan {0}: {1}; `fleetshift retry {0} --failed` tries again",
                        latest.plan_id, latest.error
                    ),
                    None,
                );
            }
            ShardState::Cancelled => {
                return (
                    format!(
                        "cancelled in plan {0}; `fleetshift retry {0}` plans it again",
                        latest.plan_id
                    ),
                    None,
                );
            }
            _ => {}
        }
    }
    let from = facts.current_version.clone();
    let reason = match super::covering(target, &from) {
        Some(approval) => format!(
            "behind; its catch-up runs without asking again (approved in plan {})",
            approval.plan_id
        ),
        None => "behind; its catch-up is planned for approval".to_owned(),
    };
    (reason, Some(from))
}

#[cfg(test)]
mod tests;
