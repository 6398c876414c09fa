//! Waves as a running rollout sees them: how many shards a plan holds, how its tasks stand,
//! and which pending task may start next under the per-wave and per-host caps. Which wave is
//! current the leader's model knows (`model::PlanTasks::current_wave`).

use std::collections::{BTreeMap, HashMap};

use fleetshift_common::proto::v1::{Plan, ShardState, ShardTask, Wave, WavePolicy};

/// Every shard of `plan`, across its waves.
pub fn shard_count(plan: &Plan) -> usize {
    plan.waves.iter().map(|wave| wave.shards.len()).sum()
}

/// The tasks `plan` was created with, wave by wave.
pub fn planned_tasks(plan: &Plan) -> impl Iterator<Item = &ShardTask> {
    plan.waves.iter().flat_map(|wave| &wave.shards)
}

/// How many tasks stand in each state.
pub fn counts<'t>(tasks: impl IntoIterator<Item = &'t ShardTask>) -> BTreeMap<ShardState, usize> {
    let mut counts = BTreeMap::new();
    for task in tasks {
        *counts.entry(task.state()).or_default() += 1;
    }
    counts
}

/// A plan's waves with its tasks as stored now: `stored` finds a shard's task (`None` for a
/// shard with no task yet, which counts as not ended).
pub struct Progress<'p, F> {
    plan: &'p Plan,
    stored: F,
}

impl<F> std::fmt::Debug for Progress<'_, F> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Progress")
            .field("plan", &self.plan.plan_id)
            .finish_non_exhaustive()
    }
}

impl<'p, F> Progress<'p, F>
where
    F: Fn(&str) -> Option<&'p ShardTask>,
{
    pub fn new(plan: &'p Plan, stored: F) -> Self {
        Self { plan, stored }
    }

    /// The stored tasks of the wave numbered `index` (none for a wave the plan lacks).
    pub fn tasks_of(&self, index: u32) -> Vec<&'p ShardTask> {
        self.plan
            .waves
            .iter()
            .filter(|wave| wave.index == index)
            .flat_map(|wave| self.tasks_in(wave))
            .collect()
    }

    /// The stored tasks of `wave`.
    pub fn tasks_in(&self, wave: &'p Wave) -> impl Iterator<Item = &'p ShardTask> + '_ {
        wave.shards
            .iter()
            .filter_map(|shard| (self.stored)(&shard.shard_id))
    }
}

/// The starts a wave still has room for: at most `max_concurrency_per_wave` of its tasks and
/// `max_concurrency_per_host` of the fleet's (across plans) active at once. The counts come
/// from the leader's model as they stand; a step's own starts are added here.
pub struct Slots<H> {
    per_wave: usize,
    per_host: usize,
    active_in_wave: usize,
    /// Active tasks on a host, over every plan, before this step.
    active_on: H,
    /// The starts of this step, per host.
    taken: HashMap<String, usize>,
}

impl<H> std::fmt::Debug for Slots<H> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Slots")
            .field("per_wave", &self.per_wave)
            .field("per_host", &self.per_host)
            .field("active_in_wave", &self.active_in_wave)
            .field("taken", &self.taken)
            .finish_non_exhaustive()
    }
}

impl<H: Fn(&str) -> usize> Slots<H> {
    /// The room left in a wave with `active_in_wave` tasks active, `active_on` counting a
    /// host's active tasks across every plan.
    pub fn new(policy: &WavePolicy, active_in_wave: usize, active_on: H) -> Self {
        Self {
            per_wave: policy.max_concurrency_per_wave.max(1) as usize,
            per_host: policy.max_concurrency_per_host.max(1) as usize,
            active_in_wave,
            active_on,
            taken: HashMap::new(),
        }
    }

    /// Whether the wave runs as many tasks as it may.
    pub fn wave_full(&self) -> bool {
        self.active_in_wave >= self.per_wave
    }

    /// Whether a task on `host` may start now.
    pub fn admits(&self, host: &str) -> bool {
        let taken = self.taken.get(host).copied().unwrap_or(0);
        !self.wave_full() && (self.active_on)(host) + taken < self.per_host
    }

    /// A task on `host` started.
    pub fn take(&mut self, host: &str) {
        self.active_in_wave += 1;
        *self.taken.entry(host.to_owned()).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(shard: &str, host: &str, wave: u32, state: ShardState) -> ShardTask {
        ShardTask {
            shard_id: shard.to_owned(),
            host: host.to_owned(),
            wave,
            state: state.into(),
            ..ShardTask::default()
        }
    }

    fn plan(waves: &[&[ShardTask]]) -> Plan {
        Plan {
            waves: waves
                .iter()
                .enumerate()
                .map(|(index, shards)| Wave {
                    index: u32::try_from(index).expect("few waves"),
                    shards: shards.to_vec(),
                })
                .collect(),
            ..Plan::default()
        }
    }

    fn stored(tasks: &[ShardTask]) -> BTreeMap<String, ShardTask> {
        tasks
            .iter()
            .map(|task| (task.shard_id.clone(), task.clone()))
            .collect()
    }

    #[test]
    fn a_waves_stored_tasks_are_found_and_counted() {
        let first = [task("a", "h1", 0, ShardState::Pending)];
        let second = [task("b", "h1", 1, ShardState::Pending)];
        let planned = plan(&[&first, &second]);
        assert_eq!(shard_count(&planned), 2);
        let done = stored(&[
            task("a", "h1", 0, ShardState::Succeeded),
            task("b", "h1", 1, ShardState::Failed),
        ]);
        let progress = Progress::new(&planned, |shard| done.get(shard));
        let second: Vec<&str> = progress
            .tasks_of(1)
            .iter()
            .map(|task| task.shard_id.as_str())
            .collect();
        assert_eq!(second, ["b"]);
        assert!(progress.tasks_of(7).is_empty(), "no such wave");
        let counted = counts(done.values());
        assert_eq!(counted.get(&ShardState::Succeeded), Some(&1));
        assert_eq!(counted.get(&ShardState::Failed), Some(&1));
    }

    #[test]
    fn slots_cap_the_wave_and_each_host() {
        let policy = WavePolicy {
            max_concurrency_per_wave: 2,
            max_concurrency_per_host: 1,
            ..WavePolicy::default()
        };
        let running_elsewhere = |host: &str| usize::from(host == "h2");
        let mut slots = Slots::new(&policy, 0, running_elsewhere);
        assert!(slots.admits("h1"));
        assert!(!slots.admits("h2"), "h2 runs a task of another plan");
        slots.take("h1");
        assert!(!slots.admits("h1"), "one per host");
        assert!(slots.admits("h3"));
        slots.take("h3");
        assert!(slots.wave_full(), "two per wave");
        assert!(!slots.admits("h4"));
    }
}
