//! The line-per-event log of a followed rollout (a pipe, a file): a wave's bar each time one of
//! its shards changes state, and a line per notable progress event.

use std::collections::BTreeMap;

use fleetshift_common::proto::v1::rollout_event::Event;
use fleetshift_common::proto::v1::{Plan, PlanState, RolloutEvent, ShardState};
use fleetshift_common::rollout_names::{plan_state_name, shard_state_name};

use super::{bar, progress_line};

/// Shard states by wave, for the bars.
pub(super) struct Board {
    waves: BTreeMap<u32, BTreeMap<String, ShardState>>,
}

impl Board {
    pub(super) fn new(plan: &Plan) -> Self {
        let waves = plan
            .waves
            .iter()
            .map(|wave| {
                let shards = wave
                    .shards
                    .iter()
                    .map(|task| {
                        let state = ShardState::try_from(task.state).unwrap_or(ShardState::Pending);
                        (task.shard_id.clone(), state)
                    })
                    .collect();
                (wave.index, shards)
            })
            .collect();
        Self { waves }
    }

    pub(super) fn show(&mut self, event: &RolloutEvent) {
        match &event.event {
            Some(Event::PlanState(changed)) => {
                let state = PlanState::try_from(changed.state).unwrap_or(PlanState::Unspecified);
                if changed.reason.is_empty() {
                    println!("plan {}: {}", event.plan_id, plan_state_name(state));
                } else {
                    println!(
                        "plan {}: {} ({})",
                        event.plan_id,
                        plan_state_name(state),
                        changed.reason
                    );
                }
            }
            Some(Event::ShardState(changed)) => {
                let state = ShardState::try_from(changed.state).unwrap_or(ShardState::Unspecified);
                let shards = self.waves.entry(changed.wave).or_default();
                if shards.get(&changed.shard_id) == Some(&state) {
                    return;
                }
                shards.insert(changed.shard_id.clone(), state);
                let done = shards
                    .values()
                    .filter(|state| fleetshift_coordinator::rollout::task_ended(**state))
                    .count();
                let failed = shards
                    .values()
                    .filter(|state| fleetshift_coordinator::rollout::task_failed(**state))
                    .count();
                let bar = bar(done, shards.len());
                let error = changed
                    .error
                    .as_ref()
                    .map(|error| format!(": {}", error.message))
                    .unwrap_or_default();
                println!(
                    "wave {} {bar} {done:>3}/{:<3} {failed} failed  {} {}{error}",
                    changed.wave,
                    shards.len(),
                    changed.shard_id,
                    shard_state_name(state),
                );
            }
            Some(Event::Progress(progress)) => {
                if let Some(line) = progress_line(progress) {
                    println!("    {} {line}", progress.shard_id);
                }
            }
            None => {}
        }
    }
}
