//! The leader keeps the fleet at its targets, as a controller does. After changes to agents,
//! targets, lifecycles, plans or tasks (at most every [`PASS_EVERY`]) it judges every target's
//! shards ([`super::standing`]) from its model, in memory, and then:
//!
//! - plans the catch-up of the active shards behind a target that no plan holds: one plan,
//!   running at once, for those whose starting version an approved plan of the target took
//!   already (its approvals are copied), one awaiting approval for the others;
//! - starts each approved plan of a target and records the starting versions it took, so later
//!   catch-ups through the same revisions need no approval;
//! - cancels a target's plans that have not started when the target moved on or was removed.
//!
//! A pass where nothing is behind reads nothing from the store and writes nothing. A catch-up
//! that cannot be planned (a drifted shard, a set that no longer loads) is recorded on the
//! target and tried again after [`REFUSED_PAUSE`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetshift_common::proto::v1::{FleetTarget, Hello, Plan, PlanState, TargetApproval};
use prost::Message;

use super::standing::{self, PlanIndex};
use crate::rollout::model::{Model, Seen};
use crate::rollout::{RolloutError, planning, records};
use crate::store::{Condition, Epoch, Store, StoreError, Write, keys};

/// The least time between two passes.
const PASS_EVERY: Duration = Duration::from_secs(2);

/// How long a target whose catch-up could not be planned waits before the next attempt.
const REFUSED_PAUSE: Duration = Duration::from_secs(60);

/// The leader's reconciliation state between passes.
#[derive(Debug)]
pub struct Reconciler {
    dirty: bool,
    last_pass: Option<Instant>,
    /// Targets whose last catch-up was refused, and when.
    refused: HashMap<String, Instant>,
    /// Plans this leader created that its model has not seen yet: until it has, their shards
    /// would look free.
    unseen: HashSet<String>,
}

impl Default for Reconciler {
    /// A new leader passes once at its first chance.
    fn default() -> Self {
        Self {
            dirty: true,
            last_pass: None,
            refused: HashMap::new(),
            unseen: HashSet::new(),
        }
    }
}

/// What one pass does.
#[derive(Debug)]
enum Action {
    CatchUp {
        target: Arc<FleetTarget>,
        target_revision: i64,
        /// Shard → its version now.
        shards: BTreeMap<String, String>,
        /// The approvals that cover them; empty when they need one.
        covered_by: Vec<TargetApproval>,
    },
    Start {
        plan: Arc<Plan>,
        plan_revision: i64,
        target: Arc<FleetTarget>,
        target_revision: i64,
    },
    Cancel {
        plan: Arc<Plan>,
        plan_revision: i64,
        reason: String,
    },
}

/// Whether a change of `key` can move a shard against a target.
fn relevant(key: &str) -> bool {
    [
        keys::agents_prefix(),
        keys::targets_prefix(),
        keys::lifecycles_prefix(),
        keys::plans_prefix(),
        keys::all_tasks_prefix(),
    ]
    .iter()
    .any(|prefix| key.starts_with(prefix))
}

impl Reconciler {
    /// Takes note of a change of `key`.
    pub fn heed(&mut self, key: &str) {
        if !self.dirty && relevant(key) {
            self.dirty = true;
        }
    }

    /// Whether a pass is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        self.dirty
            && self
                .last_pass
                .is_none_or(|at| now.duration_since(at) >= PASS_EVERY)
    }

    /// One pass over every target; the leadership's end (a refused write) ends it.
    pub async fn pass<S: Store>(
        &mut self,
        store: &S,
        epoch: Epoch,
        model: &Model,
    ) -> Result<(), RolloutError> {
        let now = Instant::now();
        self.last_pass = Some(now);
        self.unseen.retain(|plan| !model.plans.contains_key(plan));
        self.refused
            .retain(|_, at| now.duration_since(*at) < REFUSED_PAUSE);
        // Still waiting: a pass now could plan the same shards twice, or skip a refused target.
        self.dirty = !self.unseen.is_empty() || !self.refused.is_empty();
        if !self.unseen.is_empty() {
            return Ok(());
        }
        for action in decide(model, &self.refused) {
            match action {
                Action::CatchUp {
                    target,
                    target_revision,
                    shards,
                    covered_by,
                } => {
                    let catch_up = CatchUp {
                        target: &target,
                        shards,
                        covered_by,
                    };
                    match plan_catch_up(store, model, catch_up).await {
                        Ok(plan) => {
                            records::create_plan_as_leader(store, &plan, epoch).await?;
                            tracing::info!(target = %target.name, plan = %plan.plan_id, shards = plan.catch_up_from.len(), approved = plan.state == i32::from(PlanState::Running), "catch-up planned");
                            self.unseen.insert(plan.plan_id);
                            self.dirty = true;
                            record_refusal(store, epoch, &target, target_revision, "").await?;
                        }
                        // The store failing is the loop's to handle; a set missing from it
                        // is this target's problem only.
                        Err(RolloutError::Store(error))
                            if !matches!(error, StoreError::Corrupt { .. }) =>
                        {
                            return Err(error.into());
                        }
                        Err(refusal) => {
                            tracing::warn!(target = %target.name, %refusal, "catch-up refused");
                            self.refused.insert(target.name.clone(), now);
                            self.dirty = true;
                            let refusal = refusal.to_string();
                            record_refusal(store, epoch, &target, target_revision, &refusal)
                                .await?;
                        }
                    }
                }
                Action::Start {
                    plan,
                    plan_revision,
                    target,
                    target_revision,
                } => start(store, epoch, &plan, plan_revision, &target, target_revision).await?,
                Action::Cancel {
                    plan,
                    plan_revision,
                    reason,
                } => cancel(store, epoch, &plan, plan_revision, &reason).await?,
            }
        }
        Ok(())
    }
}

/// What every target asks for now, from the model alone.
fn decide(model: &Model, refused: &HashMap<String, Instant>) -> Vec<Action> {
    let mut actions = Vec::new();
    for (plan_id, seen) in &model.plans {
        let plan = &seen.value;
        if plan.fleet_target.is_empty() || !not_started(plan) {
            continue;
        }
        let reason = match model.targets.get(&plan.fleet_target) {
            None => format!("fleet target {} was removed", plan.fleet_target),
            Some(target) if !super::plan_serves(&target.value, plan) => format!(
                "fleet target {} now keeps its shards at version {}",
                plan.fleet_target,
                super::version(&target.value)
            ),
            Some(_) => continue,
        };
        tracing::debug!(plan = %plan_id, %reason, "superseded catch-up");
        actions.push(Action::Cancel {
            plan: Arc::clone(plan),
            plan_revision: seen.revision,
            reason,
        });
    }
    let shards = announced(model);
    for target in model.targets.values() {
        actions.extend(for_target(model, &shards, target, refused));
    }
    actions
}

fn not_started(plan: &Plan) -> bool {
    matches!(
        PlanState::try_from(plan.state),
        Ok(PlanState::AwaitingApproval | PlanState::Approved)
    )
}

/// Every announced shard.
fn announced(model: &Model) -> Vec<standing::Seen<'_>> {
    model
        .agents
        .iter()
        .flat_map(|(agent, seen)| {
            let hello = &seen.value.hello;
            hello.shards.iter().map(move |facts| standing::Seen {
                agent,
                host: hello.host.as_ref(),
                facts,
            })
        })
        .collect()
}

fn for_target(
    model: &Model,
    shards: &[standing::Seen<'_>],
    seen: &Seen<Arc<FleetTarget>>,
    refused: &HashMap<String, Instant>,
) -> Vec<Action> {
    let target: &FleetTarget = &seen.value;
    let shared = &seen.value;
    let mut actions = Vec::new();
    for plan in model.plans.values() {
        if super::plan_serves(target, &plan.value)
            && plan.value.state == i32::from(PlanState::Approved)
        {
            actions.push(Action::Start {
                plan: Arc::clone(&plan.value),
                plan_revision: plan.revision,
                target: Arc::clone(shared),
                target_revision: seen.revision,
            });
        }
    }
    if refused.contains_key(&target.name) {
        return actions;
    }
    let index = || {
        let mut index = PlanIndex::default();
        for (plan_id, plan) in &model.plans {
            if !PlanIndex::reads(target, &plan.value) {
                continue;
            }
            for task in model
                .tasks
                .get(plan_id)
                .into_iter()
                .flat_map(|t| t.values())
            {
                index.add(target, &plan.value, &task.value);
            }
        }
        index
    };
    let mut covered = BTreeMap::new();
    let mut uncovered = BTreeMap::new();
    let mut approvals: Vec<TargetApproval> = Vec::new();
    for (shard, from) in standing::catch_ups(target, shards, &model.lifecycles, index) {
        match super::covering(target, &from) {
            Some(approval) => {
                if !approvals.iter().any(|a| a.plan_id == approval.plan_id) {
                    approvals.push(approval.clone());
                }
                covered.insert(shard, from);
            }
            None => {
                uncovered.insert(shard, from);
            }
        }
    }
    for (shards, covered_by) in [(covered, approvals), (uncovered, Vec::new())] {
        if !shards.is_empty() {
            actions.push(Action::CatchUp {
                target: Arc::clone(shared),
                target_revision: seen.revision,
                shards,
                covered_by,
            });
        }
    }
    actions
}

/// One catch-up to plan.
struct CatchUp<'t> {
    target: &'t FleetTarget,
    shards: BTreeMap<String, String>,
    covered_by: Vec<TargetApproval>,
}

/// The catch-up plan: the target's terms over its shards, running at once when covered.
async fn plan_catch_up<S: Store>(
    store: &S,
    model: &Model,
    catch_up: CatchUp<'_>,
) -> Result<Plan, RolloutError> {
    let CatchUp {
        target,
        shards,
        covered_by,
    } = catch_up;
    let set = records::load_set(store, super::digest(target)).await?;
    let mut request = super::plan_request(target, set)?;
    request.baselines = crate::schema_baselines::list(store).await?;
    let mut agents: Vec<(String, Hello)> = model
        .agents
        .iter()
        .filter_map(|(agent, seen)| {
            let mut hello = seen.value.hello.clone();
            hello
                .shards
                .retain(|facts| shards.contains_key(&facts.shard_id));
            (!hello.shards.is_empty()).then(|| (agent.clone(), hello))
        })
        .collect();
    // In a reproducible order, as `CreatePlan` is given them.
    agents.sort_by(|left, right| left.0.cmp(&right.0));
    let author = target.author.clone();
    // Unpacking, linting and scoring a long set takes a while: off the leader's loop.
    let mut plan = tokio::task::spawn_blocking(move || planning::plan(request, &author, &agents))
        .await
        .map_err(|error| RolloutError::NotNow(format!("planning stopped: {error}")))??;
    plan.fleet_target = target.name.clone();
    plan.catch_up_from = shards.into_iter().collect();
    if let Some(first) = covered_by.first() {
        plan.approvals = first.approvals.clone();
        plan.state = PlanState::Running.into();
        let plans: Vec<&str> = covered_by.iter().map(|a| a.plan_id.as_str()).collect();
        plan.state_reason = format!(
            "catch-up of fleet target {}, through revisions approved in plan {}",
            target.name,
            plans.join(", ")
        );
    } else {
        plan.state_reason = format!(
            "catch-up of fleet target {}; it starts once approved",
            target.name
        );
    }
    Ok(plan)
}

/// Starts an approved plan of `target` and records the starting versions it took.
async fn start<S: Store>(
    store: &S,
    epoch: Epoch,
    plan: &Plan,
    plan_revision: i64,
    target: &FleetTarget,
    target_revision: i64,
) -> Result<(), RolloutError> {
    let mut started = plan.clone();
    started.state = PlanState::Running.into();
    started.state_reason = format!("started by fleet target {} once approved", target.name);
    let mut recorded = target.clone();
    let mut froms: Vec<&String> = plan.catch_up_from.values().collect();
    froms.sort();
    froms.dedup();
    for from in froms {
        if super::covering(&recorded, from).is_none() {
            recorded.approved.push(TargetApproval {
                from_version: from.clone(),
                plan_id: plan.plan_id.clone(),
                approvals: plan.approvals.clone(),
            });
        }
    }
    let plan_key = keys::plan(&plan.plan_id);
    let target_key = keys::target(&target.name);
    let written = store
        .commit(
            Some(epoch),
            &[
                Condition::ModifiedAt(plan_key.clone(), plan_revision),
                Condition::ModifiedAt(target_key.clone(), target_revision),
            ],
            &[
                Write::put(plan_key, started.encode_to_vec()),
                Write::put(target_key, recorded.encode_to_vec()),
            ],
        )
        .await?;
    if written.is_some() {
        tracing::info!(target = %target.name, plan = %plan.plan_id, "approved catch-up started");
    }
    Ok(())
}

/// Cancels a target's plan that has not started.
async fn cancel<S: Store>(
    store: &S,
    epoch: Epoch,
    plan: &Plan,
    plan_revision: i64,
    reason: &str,
) -> Result<(), RolloutError> {
    let mut cancelled = plan.clone();
    cancelled.state = PlanState::Cancelled.into();
    cancelled.state_reason = reason.to_owned();
    let key = keys::plan(&plan.plan_id);
    let written = store
        .commit(
            Some(epoch),
            &[Condition::ModifiedAt(key.clone(), plan_revision)],
            &[Write::put(key, cancelled.encode_to_vec())],
        )
        .await?;
    if written.is_some() {
        tracing::info!(plan = %plan.plan_id, %reason, "catch-up cancelled");
    }
    Ok(())
}

/// Keeps why the target's last catch-up was refused (empty: it was not) on the target, when
/// that changed.
async fn record_refusal<S: Store>(
    store: &S,
    epoch: Epoch,
    target: &FleetTarget,
    target_revision: i64,
    refusal: &str,
) -> Result<(), StoreError> {
    if target.refusal == refusal {
        return Ok(());
    }
    let recorded = FleetTarget {
        refusal: refusal.to_owned(),
        ..target.clone()
    };
    let key = keys::target(&target.name);
    store
        .commit(
            Some(epoch),
            &[Condition::ModifiedAt(key.clone(), target_revision)],
            &[Write::put(key, recorded.encode_to_vec())],
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests;
