//! The model's tallies against a count from scratch, after every change of a long sequence
//! that moves tasks through every state, between hosts and waves, and removes tasks and
//! plans, as the watch and the leader's own records do; and where each wave's walk for work
//! starts, and the candidates for canary.

use std::collections::HashMap;

use fleetshift_common::proto::v1::{SchemaFingerprints, ShardState, ShardTask, Wave};
use prost::Message as _;

use super::{Model, Seen};
use crate::rollout::{canary, state_of, task_active, task_ended, task_failed};
use crate::store::{Change, keys};

const STATES: [ShardState; 7] = [
    ShardState::Pending,
    ShardState::Claimed,
    ShardState::Running,
    ShardState::Succeeded,
    ShardState::Failed,
    ShardState::Cancelled,
    ShardState::RolledBack,
];

/// A small linear congruential sequence: the same changes on every run.
struct Sequence(u64);

impl Sequence {
    fn below(&mut self, bound: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        usize::try_from(self.0 >> 33).expect("31 bits fit") % bound
    }
}

fn task(shard: usize, host: usize, wave: u32, state: ShardState) -> ShardTask {
    ShardTask {
        shard_id: format!("s{shard}"),
        host: format!("h{host}"),
        wave,
        state: state.into(),
        // Some with a schema on record (canary candidates when they succeed), finished at
        // different times, at two versions.
        current_version: format!("v{}", shard % 2),
        schema: host.is_multiple_of(2).then(|| SchemaFingerprints {
            after: format!("schema-{shard}"),
            ..SchemaFingerprints::default()
        }),
        finished_at: Some(prost_types::Timestamp {
            seconds: i64::try_from(host).expect("small"),
            nanos: 0,
        }),
        ..ShardTask::default()
    }
}

fn put(key: String, task: &ShardTask, revision: i64) -> Change {
    Change {
        key,
        value: Some(task.encode_to_vec()),
        revision,
        create_revision: revision,
        lease: 0,
    }
}

fn delete(key: String, revision: i64) -> Change {
    Change {
        key,
        value: None,
        revision,
        create_revision: 0,
        lease: 0,
    }
}

/// The plan's waves: shard `s` in wave `s % 3`, in the order of their numbers.
fn waves() -> Vec<Wave> {
    (0..3)
        .map(|index| Wave {
            index,
            shards: (0..20)
                .filter(|shard| shard % 3 == index as usize)
                .map(|shard| task(shard, 0, index, ShardState::Pending))
                .collect(),
        })
        .collect()
}

/// Where each wave's shards that have not ended begin, as the model says and counted anew.
fn assert_first_open(model: &mut Model, step: usize) {
    for (plan, tasks) in &mut model.tasks {
        for wave in waves() {
            let expected = wave
                .shards
                .iter()
                .position(|shard| {
                    !tasks
                        .get(&shard.shard_id)
                        .is_some_and(|seen| task_ended(state_of(&seen.value)))
                })
                .unwrap_or(wave.shards.len());
            let open = tasks.first_open(&wave);
            assert_eq!(
                open, expected,
                "step {step}, plan {plan}: wave {}",
                wave.index
            );
        }
    }
}

/// Every tally the model keeps equals the same count made from its tasks.
fn assert_tallies(model: &Model, step: usize) {
    let mut per_host: HashMap<&str, usize> = HashMap::new();
    for (plan, tasks) in &model.tasks {
        let all: Vec<&ShardTask> = tasks
            .values()
            .map(|seen: &Seen<ShardTask>| &seen.value)
            .collect();
        let unended = all.iter().filter(|t| !task_ended(state_of(t))).count();
        assert_eq!(
            tasks.unended(),
            unended,
            "step {step}, plan {plan}: unended"
        );
        let mut failed: Vec<&str> = all
            .iter()
            .filter(|t| task_failed(state_of(t)))
            .map(|t| t.shard_id.as_str())
            .collect();
        failed.sort_unstable();
        let counted: Vec<&str> = tasks.failed().map(|t| t.shard_id.as_str()).collect();
        assert_eq!(counted, failed, "step {step}, plan {plan}: failed");
        let active: Vec<&str> = all
            .iter()
            .filter(|t| task_active(state_of(t)))
            .map(|t| t.shard_id.as_str())
            .collect();
        let counted: Vec<&str> = tasks
            .active()
            .map(|seen| seen.value.shard_id.as_str())
            .collect();
        assert_eq!(counted, active, "step {step}, plan {plan}: active");
        for wave in 0..3 {
            let in_wave = || all.iter().filter(move |t| t.wave == wave);
            let ended = in_wave().filter(|t| task_ended(state_of(t))).count();
            let active = in_wave().filter(|t| task_active(state_of(t))).count();
            assert_eq!(
                tasks.ended_in_wave(wave),
                ended,
                "step {step}: wave {wave} ended"
            );
            assert_eq!(
                tasks.active_in_wave(wave),
                active,
                "step {step}: wave {wave} active"
            );
        }
        for version in ["v0", "v1"] {
            let mut expected: Vec<&ShardTask> = all
                .iter()
                .copied()
                .filter(|t| t.current_version == version && canary::candidate(t))
                .collect();
            expected.sort_by_key(|t| (canary::finished(t), t.shard_id.clone()));
            let expected: Vec<&str> = expected.iter().map(|t| t.shard_id.as_str()).collect();
            let counted: Vec<&str> = tasks
                .candidates(version)
                .map(|t| t.shard_id.as_str())
                .collect();
            assert_eq!(
                counted, expected,
                "step {step}, plan {plan}: candidates at {version}"
            );
        }
        for t in all.iter().filter(|t| task_active(state_of(t))) {
            *per_host.entry(&t.host).or_default() += 1;
        }
    }
    for host in 0..4 {
        let host = format!("h{host}");
        let expected = per_host.get(host.as_str()).copied().unwrap_or(0);
        assert_eq!(model.active_on(&host), expected, "step {step}: {host}");
    }
}

#[test]
fn tallies_match_a_count_from_scratch_after_every_change() {
    let mut model = Model::default();
    let mut sequence = Sequence(7);
    let mut revision = 0;
    for step in 0..5_000 {
        revision += 1;
        let plan = format!("p{}", sequence.below(3));
        let shard = sequence.below(20);
        let key = keys::task(&plan, &format!("s{shard}"));
        let written = |sequence: &mut Sequence| {
            let state = STATES[sequence.below(STATES.len())];
            let wave = u32::try_from(shard % 3).expect("below 3");
            task(shard, sequence.below(4), wave, state)
        };
        match sequence.below(20) {
            // The plan goes, and its tasks with it.
            0 => model.apply(&delete(keys::plan(&plan), revision)),
            1 | 2 => model.apply(&delete(key, revision)),
            // The leader's own record, or a stale echo of an older write.
            3..=7 => {
                let written = written(&mut sequence);
                let at = if sequence.below(4) == 0 {
                    revision - 5
                } else {
                    revision
                };
                model.record_task(&plan, &format!("s{shard}"), written, at);
            }
            _ => {
                let written = written(&mut sequence);
                model.apply(&put(key, &written, revision));
            }
        }
        assert_tallies(&model, step);
        // Asked at most steps, as the leader does; skipped at some, so a wave's walk
        // sometimes resumes across several changes.
        if sequence.below(3) > 0 {
            assert_first_open(&mut model, step);
        }
    }
}

#[test]
fn the_current_wave_is_the_first_with_a_shard_not_ended() {
    let plan = fleetshift_common::proto::v1::Plan {
        plan_id: "p1".to_owned(),
        waves: waves(),
        ..Default::default()
    };
    let mut model = Model::default();
    let current = |model: &Model| {
        let none = super::PlanTasks::default();
        let tasks = model.tasks.get("p1").unwrap_or(&none);
        tasks.current_wave(&plan).map(|wave| wave.index)
    };
    assert_eq!(
        current(&model),
        Some(0),
        "shards without a task have not ended"
    );
    let mut revision = 0;
    let mut end_wave = |model: &mut Model, wave: u32, state: ShardState| {
        for shard in (0..20).filter(|shard| shard % 3 == wave as usize) {
            revision += 1;
            let ended = task(shard, 0, wave, state);
            model.record_task("p1", &format!("s{shard}"), ended, revision);
        }
    };
    end_wave(&mut model, 0, ShardState::Succeeded);
    assert_eq!(current(&model), Some(1));
    end_wave(&mut model, 1, ShardState::Failed);
    end_wave(&mut model, 2, ShardState::Running);
    assert_eq!(current(&model), Some(2), "running is not ended");
    end_wave(&mut model, 2, ShardState::Cancelled);
    assert_eq!(current(&model), None, "every shard ended");
}
