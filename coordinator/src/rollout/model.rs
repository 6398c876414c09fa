//! The leader's view of the fleet: plans, tasks, claims, live agents and unread results, loaded
//! once and then kept current by one watch. Every key remembers the revision it was seen at,
//! so a replayed or late change never overwrites a newer one (the leader also records its own
//! commits at once, before their echo arrives).

mod plan_tasks;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use fleetshift_common::proto::v1::{
    AssignmentResult, FleetTarget, FleetThrottle, Hello, Plan, ShardLifecycleSetting, ShardTask,
};

use super::records::decode;
use super::{RolloutError, state_of, task_active};
use crate::claims;
use crate::store::{Change, Entry, LeaseId, Store, keys};
pub use plan_tasks::PlanTasks;

/// A value and the revision it was written at.
#[derive(Debug, Clone)]
pub struct Seen<T> {
    pub value: T,
    pub revision: i64,
}

/// An agent with a live session.
#[derive(Debug, Clone)]
pub struct AgentSeen {
    pub lease: LeaseId,
    pub hello: Hello,
}

#[derive(Debug, Default)]
pub struct Model {
    /// Shared: the leader takes a plan out for every step, and a plan holds all its shards.
    pub plans: BTreeMap<String, Seen<Arc<Plan>>>,
    /// By plan, then shard; changed only through [`Model::record_task`] and the watch, which
    /// keep the tallies (the plan's, and the hosts' below).
    pub tasks: BTreeMap<String, PlanTasks>,
    /// Active tasks per host, over every plan: the per-host cap's count.
    active_per_host: HashMap<String, usize>,
    pub claims: HashMap<String, Seen<claims::Holder>>,
    pub agents: HashMap<String, Seen<AgentSeen>>,
    /// By assignment id.
    pub results: BTreeMap<String, Seen<AssignmentResult>>,
    /// Operators' throttles in force, by id.
    pub throttles: BTreeMap<String, Seen<FleetThrottle>>,
    /// Fleet targets, by name; shared, as the reconciler's actions hold them.
    pub targets: BTreeMap<String, Seen<Arc<FleetTarget>>>,
    /// Operators' shard lifecycles, by shard.
    pub lifecycles: HashMap<String, ShardLifecycleSetting>,
}

/// What a key is, by its place in the layout.
enum Place<'k> {
    Plan(&'k str),
    Task(&'k str, &'k str),
    Claim(&'k str),
    Agent(&'k str),
    Result(&'k str),
    Throttle(&'k str),
    Target(&'k str),
    Lifecycle(&'k str),
    Other,
}

fn place(key: &str) -> Place<'_> {
    if let Some(plan) = key.strip_prefix(&keys::plans_prefix()) {
        Place::Plan(plan)
    } else if let Some(rest) = key.strip_prefix(&keys::all_tasks_prefix()) {
        rest.split_once('/')
            .map_or(Place::Other, |(plan, shard)| Place::Task(plan, shard))
    } else if let Some(shard) = key.strip_prefix(&claims::prefix()) {
        Place::Claim(shard)
    } else if let Some(agent) = key.strip_prefix(&keys::agents_prefix()) {
        Place::Agent(agent)
    } else if let Some(assignment) = key.strip_prefix(&keys::results_prefix()) {
        Place::Result(assignment)
    } else if let Some(id) = key.strip_prefix(&keys::throttles_prefix()) {
        Place::Throttle(id)
    } else if let Some(name) = key.strip_prefix(&keys::targets_prefix()) {
        Place::Target(name)
    } else if let Some(shard) = key.strip_prefix(&keys::lifecycles_prefix()) {
        Place::Lifecycle(shard)
    } else {
        Place::Other
    }
}

/// Whether a change at `revision` is newer than what `slot` holds.
fn newer<T>(slot: Option<&Seen<T>>, revision: i64) -> bool {
    slot.is_none_or(|seen| seen.revision < revision)
}

impl Model {
    /// Reads everything the leader follows; watch from the returned revision.
    pub async fn load<S: Store>(store: &S) -> Result<(Self, i64), RolloutError> {
        let mut model = Self::default();
        let mut first_revision = None;
        for prefix in [
            keys::plans_prefix(),
            keys::all_tasks_prefix(),
            claims::prefix(),
            keys::agents_prefix(),
            keys::results_prefix(),
            keys::throttles_prefix(),
            keys::targets_prefix(),
            keys::lifecycles_prefix(),
        ] {
            let listing = store.list(&prefix).await?;
            first_revision.get_or_insert(listing.revision);
            for entry in &listing.entries {
                model.apply(&change_of(entry));
            }
        }
        Ok((model, first_revision.unwrap_or_default()))
    }

    /// Takes in one change; unreadable values are logged and skipped.
    pub fn apply(&mut self, change: &Change) {
        if let Err(error) = self.try_apply(change) {
            tracing::warn!(key = %change.key, %error, "skipping an unreadable change");
        }
    }

    fn try_apply(&mut self, change: &Change) -> Result<(), RolloutError> {
        let revision = change.revision;
        match (place(&change.key), &change.value) {
            (Place::Plan(id), Some(value)) => {
                let plan: Plan = decode(&change.key, value)?;
                if newer(self.plans.get(id), revision) {
                    self.plans.insert(
                        id.to_owned(),
                        Seen {
                            value: Arc::new(plan),
                            revision,
                        },
                    );
                }
            }
            (Place::Plan(id), None) => {
                if newer(self.plans.get(id), revision) {
                    self.plans.remove(id);
                    if let Some(tasks) = self.tasks.remove(id) {
                        for seen in tasks.values() {
                            self.count_host(&seen.value, false);
                        }
                    }
                }
            }
            (Place::Task(plan, shard), Some(value)) => {
                let task: ShardTask = decode(&change.key, value)?;
                self.record_task(plan, shard, task, revision);
            }
            (Place::Task(plan, shard), None) => {
                if let Some(tasks) = self.tasks.get_mut(plan)
                    && newer(tasks.get(shard), revision)
                    && let Some(removed) = tasks.remove(shard)
                {
                    self.count_host(&removed.value, false);
                }
            }
            (Place::Claim(shard), Some(value)) => {
                let claim = claims::Holder::from_stored(value, change.create_revision);
                self.record_claim(shard, claim, revision);
            }
            (Place::Claim(shard), None) => {
                if newer(self.claims.get(shard), revision) {
                    self.claims.remove(shard);
                }
            }
            (Place::Agent(agent), Some(value)) => {
                let hello: Hello = decode(&change.key, value)?;
                if newer(self.agents.get(agent), revision) {
                    let seen = AgentSeen {
                        lease: change.lease,
                        hello,
                    };
                    self.agents.insert(
                        agent.to_owned(),
                        Seen {
                            value: seen,
                            revision,
                        },
                    );
                }
            }
            (Place::Agent(agent), None) => {
                if newer(self.agents.get(agent), revision) {
                    self.agents.remove(agent);
                }
            }
            (Place::Result(assignment), Some(value)) => {
                let result: AssignmentResult = decode(&change.key, value)?;
                if newer(self.results.get(assignment), revision) {
                    self.results.insert(
                        assignment.to_owned(),
                        Seen {
                            value: result,
                            revision,
                        },
                    );
                }
            }
            (Place::Result(assignment), None) => {
                if newer(self.results.get(assignment), revision) {
                    self.results.remove(assignment);
                }
            }
            (Place::Throttle(id), Some(value)) => {
                let throttle: FleetThrottle = decode(&change.key, value)?;
                let value = throttle;
                self.throttles
                    .insert(id.to_owned(), Seen { value, revision });
            }
            (Place::Throttle(id), None) => {
                self.throttles.remove(id);
            }
            (Place::Target(name), Some(value)) => {
                let value: Arc<FleetTarget> = Arc::new(decode(&change.key, value)?);
                if newer(self.targets.get(name), revision) {
                    self.targets
                        .insert(name.to_owned(), Seen { value, revision });
                }
            }
            (Place::Target(name), None) => {
                if newer(self.targets.get(name), revision) {
                    self.targets.remove(name);
                }
            }
            (Place::Lifecycle(shard), Some(value)) => {
                let setting: ShardLifecycleSetting = decode(&change.key, value)?;
                self.lifecycles.insert(shard.to_owned(), setting);
            }
            (Place::Lifecycle(shard), None) => {
                self.lifecycles.remove(shard);
            }
            (Place::Other, _) => {}
        }
        Ok(())
    }

    /// A plan this leader wrote at `revision`, before the watch brings it.
    pub fn record_plan(&mut self, plan: Plan, revision: i64) {
        if newer(self.plans.get(&plan.plan_id), revision) {
            self.plans.insert(
                plan.plan_id.clone(),
                Seen {
                    value: Arc::new(plan),
                    revision,
                },
            );
        }
    }

    pub fn record_task(&mut self, plan: &str, shard: &str, task: ShardTask, revision: i64) {
        let stored = self.tasks.get(plan).and_then(|tasks| tasks.get(shard));
        if !newer(stored, revision) {
            return;
        }
        self.count_host(&task, true);
        let seen = Seen {
            value: task,
            revision,
        };
        let replaced = self
            .tasks
            .entry(plan.to_owned())
            .or_default()
            .insert(shard, seen);
        if let Some(replaced) = replaced {
            self.count_host(&replaced.value, false);
        }
    }

    /// Takes an active task into the per-host count, or out of it.
    fn count_host(&mut self, task: &ShardTask, adding: bool) {
        if !task_active(state_of(task)) {
            return;
        }
        if adding {
            *self.active_per_host.entry(task.host.clone()).or_default() += 1;
        } else if let Some(count) = self.active_per_host.get_mut(&task.host) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.active_per_host.remove(&task.host);
            }
        }
    }

    /// Active tasks on `host`, over every plan.
    pub fn active_on(&self, host: &str) -> usize {
        self.active_per_host.get(host).copied().unwrap_or(0)
    }

    pub fn record_claim(&mut self, shard: &str, claim: claims::Holder, revision: i64) {
        if newer(self.claims.get(shard), revision) {
            self.claims.insert(
                shard.to_owned(),
                Seen {
                    value: claim,
                    revision,
                },
            );
        }
    }

    pub fn forget_claim(&mut self, shard: &str, revision: i64) {
        if newer(self.claims.get(shard), revision) {
            self.claims.remove(shard);
        }
    }

    /// The agent announcing `shard` now, preferring `preferred`.
    /// The throttle holding `shard` (by its attributes as its agent announced them), if one
    /// does.
    pub fn throttle_of(&self, shard: &str) -> Option<&FleetThrottle> {
        // Asked for every pending task on every round: nothing to look up without throttles.
        if self.throttles.is_empty() {
            return None;
        }
        let attributes = self.agents.iter().find_map(|(agent, seen)| {
            let hello = &seen.value.hello;
            let facts = hello.shards.iter().find(|facts| facts.shard_id == shard)?;
            let announced = fleetshift_common::selector::Announced {
                agent,
                host: hello.host.as_ref(),
                shard: facts,
            };
            Some(announced.attributes())
        })?;
        fleetshift_common::selector::holding(
            self.throttles.values().map(|seen| &seen.value),
            &attributes,
            std::time::SystemTime::now(),
        )
    }

    pub fn agent_of(&self, shard: &str, preferred: &str) -> Option<(String, LeaseId)> {
        let announces = |seen: &Seen<AgentSeen>| {
            seen.value
                .hello
                .shards
                .iter()
                .any(|facts| facts.shard_id == shard)
        };
        if let Some(seen) = self.agents.get(preferred).filter(|seen| announces(seen)) {
            return Some((preferred.to_owned(), seen.value.lease));
        }
        self.agents
            .iter()
            .filter(|(_, seen)| announces(seen))
            .min_by(|left, right| left.0.cmp(right.0))
            .map(|(agent, seen)| (agent.clone(), seen.value.lease))
    }
}

/// A listed entry as the change that would have created it.
fn change_of(entry: &Entry) -> Change {
    Change {
        key: entry.key.clone(),
        value: Some(entry.value.clone()),
        revision: entry.mod_revision,
        create_revision: entry.create_revision,
        lease: entry.lease,
    }
}

#[cfg(test)]
mod tests;
