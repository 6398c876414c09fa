//! Rollout gauges, from the leader's model of the fleet: plans by state, and for each plan
//! that is running or paused its shard tasks by state and its current wave. A plan's series go
//! away when it ends, so `plan` stays a bounded label.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Mutex, PoisonError};

use fleetshift_common::proto::v1::PlanState;
use fleetshift_common::rollout_names::{plan_state_name, shard_state_name};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::rollout::model::{Model, PlanTasks};
use crate::rollout::waves;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PlanStateLabels {
    plan: String,
    state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PlanLabel {
    plan: String,
}

/// `awaiting-approval` and `rolled back` as Prometheus label values: `awaiting_approval`,
/// `rolled_back`.
fn label_value(name: &str) -> String {
    name.replace([' ', '-'], "_")
}

/// What the leader last published, so series that no longer apply can be removed.
#[derive(Debug, Default)]
struct Published {
    plan_states: HashSet<String>,
    shard_states: HashSet<(String, String)>,
    plans: HashSet<String>,
}

/// Every rollout gauge.
#[derive(Debug, Default)]
pub struct RolloutGauges {
    plans: Family<StateLabel, Gauge>,
    shards: Family<PlanStateLabels, Gauge>,
    wave: Family<PlanLabel, Gauge>,
    waves: Family<PlanLabel, Gauge>,
    published: Mutex<Published>,
}

/// One plan in progress, as published.
#[derive(Debug, Default, PartialEq, Eq)]
struct PlanFigures {
    shards_by_state: BTreeMap<String, i64>,
    /// The wave being worked on (0 is the canary).
    wave: i64,
    waves: i64,
}

impl RolloutGauges {
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "fleetshift_rollouts",
            "Plans by state, as the leader sees them",
            self.plans.clone(),
        );
        registry.register(
            "fleetshift_rollout_shards",
            "Shard tasks of running or paused plans, by state",
            self.shards.clone(),
        );
        registry.register(
            "fleetshift_rollout_wave",
            "The wave a running or paused plan is working on (0 is the canary)",
            self.wave.clone(),
        );
        registry.register(
            "fleetshift_rollout_waves",
            "Waves in a running or paused plan",
            self.waves.clone(),
        );
    }

    /// Publishes what `model` shows.
    pub(crate) fn publish(&self, model: &Model) {
        let mut plans_by_state: BTreeMap<String, i64> = BTreeMap::new();
        let mut in_progress: BTreeMap<String, PlanFigures> = BTreeMap::new();
        for (plan_id, seen) in &model.plans {
            let plan = &seen.value;
            let state = PlanState::try_from(plan.state).unwrap_or(PlanState::Unspecified);
            *plans_by_state
                .entry(label_value(plan_state_name(state)))
                .or_default() += 1;
            if !matches!(state, PlanState::Running | PlanState::Paused) {
                continue;
            }
            let tasks = model.tasks.get(plan_id);
            let mut figures = PlanFigures {
                waves: i64::try_from(plan.waves.len()).unwrap_or(i64::MAX),
                ..PlanFigures::default()
            };
            // Counted by state first: a label is made once per state, not per task.
            let stored = tasks.into_iter().flat_map(|tasks| tasks.values());
            for (state, count) in waves::counts(stored.map(|seen| &seen.value)) {
                *figures
                    .shards_by_state
                    .entry(label_value(shard_state_name(state)))
                    .or_default() += i64::try_from(count).unwrap_or(i64::MAX);
            }
            // The current wave, or the last once every shard has ended.
            let none = PlanTasks::default();
            let current = tasks.unwrap_or(&none).current_wave(plan);
            let wave = current.or_else(|| plan.waves.last());
            figures.wave = i64::from(wave.map_or(0, |wave| wave.index));
            in_progress.insert(plan_id.clone(), figures);
        }
        self.set(&plans_by_state, &in_progress);
    }

    /// Removes every series: this replica no longer leads.
    pub fn clear(&self) {
        self.set(&BTreeMap::new(), &BTreeMap::new());
    }

    fn set(
        &self,
        plans_by_state: &BTreeMap<String, i64>,
        in_progress: &BTreeMap<String, PlanFigures>,
    ) {
        let mut published = self
            .published
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let plan_states: HashSet<String> = plans_by_state.keys().cloned().collect();
        for (state, count) in plans_by_state {
            self.plans
                .get_or_create(&StateLabel {
                    state: state.clone(),
                })
                .set(*count);
        }
        for stale in published.plan_states.difference(&plan_states) {
            self.plans.remove(&StateLabel {
                state: stale.clone(),
            });
        }
        let mut shard_states = HashSet::new();
        for (plan, figures) in in_progress {
            for (state, count) in &figures.shards_by_state {
                self.shards
                    .get_or_create(&PlanStateLabels {
                        plan: plan.clone(),
                        state: state.clone(),
                    })
                    .set(*count);
                shard_states.insert((plan.clone(), state.clone()));
            }
            let label = PlanLabel { plan: plan.clone() };
            self.wave.get_or_create(&label).set(figures.wave);
            self.waves.get_or_create(&label).set(figures.waves);
        }
        for (plan, state) in published.shard_states.difference(&shard_states) {
            self.shards.remove(&PlanStateLabels {
                plan: plan.clone(),
                state: state.clone(),
            });
        }
        let plans: HashSet<String> = in_progress.keys().cloned().collect();
        for stale in published.plans.difference(&plans) {
            let label = PlanLabel {
                plan: stale.clone(),
            };
            self.wave.remove(&label);
            self.waves.remove(&label);
        }
        *published = Published {
            plan_states,
            shard_states,
            plans,
        };
    }
}

#[cfg(test)]
mod tests {
    use fleetshift_common::proto::v1::{Plan, ShardTask, Wave};

    use super::*;
    use crate::rollout::model::Seen;
    use fleetshift_common::proto::v1::ShardState;

    fn seen<T>(value: T) -> Seen<T> {
        Seen { value, revision: 1 }
    }

    fn task(shard: &str, wave: u32, state: ShardState) -> ShardTask {
        ShardTask {
            shard_id: shard.to_owned(),
            wave,
            state: state.into(),
            ..ShardTask::default()
        }
    }

    fn text(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).expect("encode");
        text
    }

    fn model(plan_state: PlanState, second: ShardState) -> Model {
        let waves = vec![
            Wave {
                index: 0,
                shards: vec![task("a", 0, ShardState::Pending)],
            },
            Wave {
                index: 1,
                shards: vec![task("b", 1, ShardState::Pending)],
            },
        ];
        let mut model = Model::default();
        model.plans.insert(
            "p1".to_owned(),
            seen(std::sync::Arc::new(Plan {
                plan_id: "p1".to_owned(),
                state: plan_state.into(),
                waves,
                ..Plan::default()
            })),
        );
        model.record_task("p1", "a", task("a", 0, ShardState::Succeeded), 1);
        model.record_task("p1", "b", task("b", 1, second), 1);
        model
    }

    #[test]
    fn a_running_plan_shows_its_shards_and_wave_and_an_ended_one_goes_away() {
        let mut registry = Registry::default();
        let gauges = RolloutGauges::default();
        gauges.register(&mut registry);

        gauges.publish(&model(PlanState::Running, ShardState::RolledBack));
        let running = text(&registry);
        for expected in [
            "fleetshift_rollouts{state=\"running\"} 1",
            "fleetshift_rollout_shards{plan=\"p1\",state=\"succeeded\"} 1",
            "fleetshift_rollout_shards{plan=\"p1\",state=\"rolled_back\"} 1",
            "fleetshift_rollout_wave{plan=\"p1\"} 1",
            "fleetshift_rollout_waves{plan=\"p1\"} 2",
        ] {
            assert!(running.contains(expected), "{expected} in {running}");
        }

        gauges.publish(&model(PlanState::Halted, ShardState::RolledBack));
        let ended = text(&registry);
        assert!(
            ended.contains("fleetshift_rollouts{state=\"halted\"} 1"),
            "{ended}"
        );
        assert!(!ended.contains("state=\"running\""), "{ended}");
        assert!(!ended.contains("plan=\"p1\""), "{ended}");

        gauges.publish(&model(PlanState::Running, ShardState::Running));
        gauges.clear();
        assert!(!text(&registry).contains("fleetshift_rollouts{"));
    }
}
