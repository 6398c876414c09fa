//! One plan's tasks, by shard, with the tallies the leader asks for at every step kept as the
//! tasks change: how many have not ended, which hold their shard or failed, per wave how many
//! are active and how many ended (and so which wave is current) and where its shards not ended
//! begin, and per version the tasks that may be its canary. A step then costs what it
//! dispatches, not a walk of every task of the plan (at 100,000 shards those walks were most
//! of the leader's time).

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Deref;

use fleetshift_common::proto::v1::{Plan, ShardTask, Wave};

use super::Seen;
use crate::rollout::{canary, state_of, task_active, task_ended, task_failed};

#[derive(Debug, Default)]
pub struct PlanTasks {
    tasks: BTreeMap<String, Seen<ShardTask>>,
    unended: usize,
    active: BTreeSet<String>,
    failed: BTreeSet<String>,
    waves: HashMap<u32, WaveTally>,
    /// Per wave, how many of its first shards (in the plan's order) have ended: where a walk
    /// for work starts. Ended tasks stay ended, so it only moves on, unless an ended task is
    /// replaced or removed; then that wave is walked from its start once more.
    ended_prefix: HashMap<u32, usize>,
    /// Per version, the tasks that may be its canary, first to finish first.
    candidates: HashMap<String, BTreeSet<Candidate>>,
}

/// A canary candidate's place in its version's order: when it finished, then its shard.
type Candidate = ((i64, i32), String);

/// One wave's tasks, counted.
#[derive(Debug, Default, Clone, Copy)]
struct WaveTally {
    active: usize,
    ended: usize,
}

/// Reads go straight to the map; changes go through [`PlanTasks::insert`] and
/// [`PlanTasks::remove`], which keep the tallies, and only the model makes them (it keeps the
/// per-host count beside).
impl Deref for PlanTasks {
    type Target = BTreeMap<String, Seen<ShardTask>>;

    fn deref(&self) -> &Self::Target {
        &self.tasks
    }
}

impl PlanTasks {
    /// Stores `seen` for `shard`; the task it replaced, if any.
    pub(super) fn insert(&mut self, shard: &str, seen: Seen<ShardTask>) -> Option<Seen<ShardTask>> {
        let replaced = self.remove(shard);
        self.count(shard, &seen.value, true);
        self.tasks.insert(shard.to_owned(), seen);
        replaced
    }

    /// Forgets `shard`'s task; the task, if there was one.
    pub(super) fn remove(&mut self, shard: &str) -> Option<Seen<ShardTask>> {
        let removed = self.tasks.remove(shard);
        if let Some(old) = &removed {
            self.count(shard, &old.value, false);
        }
        removed
    }

    /// Adds `task` to the tallies, or takes it out of them.
    fn count(&mut self, shard: &str, task: &ShardTask, adding: bool) {
        let state = state_of(task);
        let step = |count: &mut usize| {
            if adding {
                *count += 1;
            } else {
                *count = count.saturating_sub(1);
            }
        };
        if !adding && task_ended(state) {
            self.ended_prefix.remove(&task.wave);
        }
        if canary::candidate(task) {
            let key = (canary::finished(task), shard.to_owned());
            let at_version = self.candidates.entry(task.current_version.clone());
            if adding {
                at_version.or_default().insert(key);
            } else if let Entry::Occupied(mut set) = at_version {
                set.get_mut().remove(&key);
                if set.get().is_empty() {
                    set.remove();
                }
            }
        }
        let wave = self.waves.entry(task.wave).or_default();
        if task_ended(state) {
            step(&mut wave.ended);
        } else {
            step(&mut self.unended);
        }
        if task_active(state) {
            step(&mut wave.active);
        }
        let sets = [
            (task_active(state), &mut self.active),
            (task_failed(state), &mut self.failed),
        ];
        for (member, set) in sets {
            match (member, adding) {
                (false, _) => {}
                (true, true) => {
                    set.insert(shard.to_owned());
                }
                (true, false) => {
                    set.remove(shard);
                }
            }
        }
    }

    /// The first wave of `plan` with a shard that has not ended (a shard without a task has
    /// not): the one the rollout works on. `None` once every shard has ended.
    pub fn current_wave<'p>(&self, plan: &'p Plan) -> Option<&'p Wave> {
        plan.waves
            .iter()
            .find(|wave| self.ended_in_wave(wave.index) < wave.shards.len())
    }

    /// Where `wave`'s shards that have not ended begin: every shard before has a task that
    /// ended.
    pub fn first_open(&mut self, wave: &Wave) -> usize {
        let ended = |shard: &ShardTask| {
            self.tasks
                .get(&shard.shard_id)
                .is_some_and(|seen| task_ended(state_of(&seen.value)))
        };
        let known = self.ended_prefix.get(&wave.index).copied().unwrap_or(0);
        let open = wave
            .shards
            .iter()
            .skip(known)
            .position(|shard| !ended(shard))
            .map_or(wave.shards.len(), |found| known + found);
        self.ended_prefix.insert(wave.index, open);
        open
    }

    /// The tasks that may be the canary at `version`, first to finish first.
    pub fn candidates(&self, version: &str) -> impl Iterator<Item = &ShardTask> {
        self.candidates
            .get(version)
            .into_iter()
            .flatten()
            .filter_map(|(_, shard)| self.tasks.get(shard).map(|seen| &seen.value))
    }

    /// How many tasks have not ended.
    pub fn unended(&self) -> usize {
        self.unended
    }

    /// The tasks that hold their shard now.
    pub fn active(&self) -> impl Iterator<Item = &Seen<ShardTask>> {
        self.active.iter().filter_map(|shard| self.tasks.get(shard))
    }

    /// The tasks that count against the plan's failure threshold.
    pub fn failed(&self) -> impl Iterator<Item = &ShardTask> {
        self.failed
            .iter()
            .filter_map(|shard| self.tasks.get(shard).map(|seen| &seen.value))
    }

    /// How many tasks of wave `index` hold their shard now.
    pub fn active_in_wave(&self, index: u32) -> usize {
        self.waves.get(&index).map_or(0, |wave| wave.active)
    }

    /// How many tasks of wave `index` have ended.
    pub fn ended_in_wave(&self, index: u32) -> usize {
        self.waves.get(&index).map_or(0, |wave| wave.ended)
    }
}
