//! The event stream of a plan: what a watcher saw, moving between replicas as they died, is
//! in order and is exactly what a replay of the plan's events gives (no gap, no repeat);
//! each shard's progress tells a revision started before it finished; each shard's last
//! state event and the plan's last event match the plan as the store holds it.

use std::collections::{BTreeMap, BTreeSet};

use fleetshift_common::proto::v1::progress_event::Event as Progress;
use fleetshift_common::proto::v1::rollout_event::Event;
use fleetshift_common::proto::v1::{Plan, RolloutEvent, ShardState};

use super::{Check, PlanRecord, Violation};

/// Everything broken in what was seen of `record`'s plan.
pub fn check(record: &PlanRecord) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut broken = |detail: String| violations.push(Violation::fleet(Check::Events, detail));
    let live = &record.live;
    let Some(first) = live.first().map(|event| event.sequence) else {
        broken(format!("no event was seen of plan {}", record.plan.plan_id));
        return violations;
    };
    for pair in live.windows(2) {
        let ordered = pair[0].sequence < pair[1].sequence
            || (pair[0].sequence == first && pair[1].sequence == first);
        if !ordered {
            broken(format!(
                "sequence {} came after {} (only the starting state shares one)",
                pair[1].sequence, pair[0].sequence
            ));
        }
    }
    // A stream that begins after a sequence (the watcher's reconnections, the replay) tells
    // each plan's and task's first state after it even when it is the one told before; such
    // restatements say nothing new, and both sides leave them out.
    let starting: Vec<&RolloutEvent> = live
        .iter()
        .filter(|event| event.sequence == first)
        .collect();
    let seen = news(
        &starting,
        live.iter().filter(|event| event.sequence > first),
    );
    let kept = news(&starting, record.replayed.iter());
    if seen != kept {
        let sequences = |events: &[(u64, String)]| -> BTreeSet<u64> {
            events.iter().map(|(sequence, _)| *sequence).collect()
        };
        let (seen_at, kept_at) = (sequences(&seen), sequences(&kept));
        let described = |only: BTreeSet<u64>, events: &[(u64, String)]| -> Vec<String> {
            events
                .iter()
                .filter(|(sequence, _)| only.contains(sequence))
                .take(5)
                .map(|(sequence, what)| format!("{sequence} {what}"))
                .collect()
        };
        broken(format!(
            "the watcher saw {} events after {first}, a replay gives {}: missed {:?}, extra {:?}",
            seen.len(),
            kept.len(),
            described(kept_at.difference(&seen_at).copied().collect(), &kept),
            described(seen_at.difference(&kept_at).copied().collect(), &seen)
        ));
    }
    let mut started: BTreeSet<(String, String)> = BTreeSet::new();
    let mut last_state: BTreeMap<String, ShardState> = BTreeMap::new();
    for event in live {
        match &event.event {
            Some(Event::Progress(progress)) => match &progress.event {
                Some(Progress::RevisionStarted(revision)) => {
                    started.insert((progress.shard_id.clone(), revision.version.clone()));
                }
                Some(Progress::RevisionFinished(revision))
                    if !started
                        .contains(&(progress.shard_id.clone(), revision.version.clone())) =>
                {
                    broken(format!(
                        "{}: revision {} finished (sequence {}) before any start of it was told",
                        progress.shard_id, revision.version, event.sequence
                    ));
                }
                _ => {}
            },
            Some(Event::ShardState(changed)) => {
                last_state.insert(changed.shard_id.clone(), changed.state());
            }
            _ => {}
        }
    }
    for task in record.plan.waves.iter().flat_map(|wave| &wave.shards) {
        let told = last_state.get(&task.shard_id).copied();
        if told.is_some_and(|told| told != task.state()) {
            broken(format!(
                "{}: the last state told is {:?}, the plan holds {:?}",
                task.shard_id,
                told,
                task.state()
            ));
        }
    }
    let last = live.iter().rev().find_map(|event| match &event.event {
        Some(Event::PlanState(changed)) => Some(changed.state()),
        _ => None,
    });
    if last != Some(record.plan.state()) {
        broken(format!(
            "the last plan state told is {last:?}, the plan holds {:?}",
            record.plan.state()
        ));
    }
    violations
}

/// `events` as (sequence, what), less the state events that restate what was last told of
/// their plan or task, beginning with what `starting` told.
fn news<'a>(
    starting: &[&'a RolloutEvent],
    events: impl Iterator<Item = &'a RolloutEvent>,
) -> Vec<(u64, String)> {
    let mut told: BTreeMap<String, i32> = BTreeMap::new();
    let mut news = Vec::new();
    for (index, event) in starting.iter().copied().chain(events).enumerate() {
        let (key, state, what) = match &event.event {
            Some(Event::PlanState(changed)) => (
                format!("plan {}", event.plan_id),
                changed.state,
                format!("plan {:?}", changed.state()),
            ),
            Some(Event::ShardState(changed)) => (
                format!("shard {}", changed.shard_id),
                changed.state,
                format!("{} {:?}", changed.shard_id, changed.state()),
            ),
            Some(Event::Progress(progress)) => {
                if index >= starting.len() {
                    news.push((event.sequence, format!("{} progress", progress.shard_id)));
                }
                continue;
            }
            None => continue,
        };
        if told.insert(key, state) != Some(state) && index >= starting.len() {
            news.push((event.sequence, what));
        }
    }
    news
}

/// `shard=State, …` for a message.
pub fn task_states(plan: &Plan) -> String {
    plan.waves
        .iter()
        .flat_map(|wave| &wave.shards)
        .map(|task| format!("{}={:?}", task.shard_id, task.state()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetshift_common::proto::v1::{
        PlanState, PlanStateChanged, ProgressEvent, RevisionFinished, RevisionStarted,
        RolloutEvent, ShardStateChanged, ShardTask, Wave,
    };

    fn event(sequence: u64, event: Event) -> RolloutEvent {
        RolloutEvent {
            sequence,
            event: Some(event),
            ..RolloutEvent::default()
        }
    }

    fn progress(sequence: u64, kind: Progress) -> RolloutEvent {
        event(
            sequence,
            Event::Progress(ProgressEvent {
                shard_id: "s".to_owned(),
                event: Some(kind),
                ..ProgressEvent::default()
            }),
        )
    }

    fn shard_state(sequence: u64, state: ShardState) -> RolloutEvent {
        let mut changed = ShardStateChanged {
            shard_id: "s".to_owned(),
            ..ShardStateChanged::default()
        };
        changed.set_state(state);
        event(sequence, Event::ShardState(changed))
    }

    fn plan_state(sequence: u64, state: PlanState) -> RolloutEvent {
        let mut changed = PlanStateChanged::default();
        changed.set_state(state);
        event(sequence, Event::PlanState(changed))
    }

    fn record(live: Vec<RolloutEvent>) -> PlanRecord {
        let mut task = ShardTask {
            shard_id: "s".to_owned(),
            ..ShardTask::default()
        };
        task.set_state(ShardState::Succeeded);
        let mut plan = Plan {
            waves: vec![Wave {
                shards: vec![task],
                ..Wave::default()
            }],
            ..Plan::default()
        };
        plan.set_state(PlanState::Succeeded);
        let replayed = live
            .iter()
            .filter(|event| event.sequence > 10)
            .cloned()
            .collect();
        PlanRecord {
            plan,
            live,
            replayed,
            ended_after_heal: Some(std::time::Duration::ZERO),
        }
    }

    fn sound() -> Vec<RolloutEvent> {
        vec![
            plan_state(10, PlanState::Running),
            shard_state(10, ShardState::Pending),
            shard_state(11, ShardState::Running),
            progress(
                12,
                Progress::RevisionStarted(RevisionStarted {
                    version: "2".to_owned(),
                    ..RevisionStarted::default()
                }),
            ),
            progress(
                13,
                Progress::RevisionFinished(RevisionFinished {
                    version: "2".to_owned(),
                    ..RevisionFinished::default()
                }),
            ),
            shard_state(14, ShardState::Succeeded),
            plan_state(15, PlanState::Succeeded),
        ]
    }

    #[test]
    fn a_sound_stream_passes() {
        assert_eq!(check(&record(sound())), []);
    }

    #[test]
    fn a_restated_state_is_no_event_either_way() {
        let started = |sequence| {
            progress(
                sequence,
                Progress::RevisionStarted(RevisionStarted::default()),
            )
        };
        let live = vec![
            plan_state(10, PlanState::Running),
            shard_state(10, ShardState::Pending),
            shard_state(20, ShardState::Running),
            started(30),
            // The watcher reconnected after 30: the plan's state is told again.
            plan_state(35, PlanState::Running),
            started(40),
            shard_state(50, ShardState::Succeeded),
            plan_state(60, PlanState::Succeeded),
        ];
        let mut restated = record(live);
        restated.replayed = vec![
            // The replay begins after 10: the task's state is told again.
            shard_state(15, ShardState::Pending),
            shard_state(20, ShardState::Running),
            started(30),
            started(40),
            shard_state(50, ShardState::Succeeded),
            plan_state(60, PlanState::Succeeded),
        ];
        assert_eq!(check(&restated), []);

        let mut lost = restated.clone();
        lost.live.remove(6);
        let found = check(&lost);
        assert!(
            found
                .iter()
                .any(|v| v.detail.contains("missed [\"50 s Succeeded\"]")),
            "a lost change is no restatement: {found:?}"
        );
    }

    #[test]
    fn disorder_gaps_and_wrong_ends_are_named() {
        let mut swapped = record(sound());
        swapped.live.swap(2, 3);
        let found = check(&swapped);
        assert!(
            found.iter().any(|v| v.detail.contains("came after")),
            "{found:?}"
        );

        let mut gap = record(sound());
        gap.live.remove(4);
        let found = check(&gap);
        assert!(
            found
                .iter()
                .any(|v| v.detail.contains("missed [\"13 s progress\"]")),
            "{found:?}"
        );

        let mut unstarted = record(sound());
        unstarted.live.remove(3);
        unstarted.replayed.remove(1);
        let found = check(&unstarted);
        assert!(
            found.iter().any(|v| v.detail.contains("before any start")),
            "{found:?}"
        );

        let mut wrong_end = record(sound());
        wrong_end.plan.set_state(PlanState::Halted);
        let found = check(&wrong_end);
        assert!(
            found.iter().any(|v| v.detail.contains("last plan state")),
            "{found:?}"
        );

        let mut wrong_shard = record(sound());
        wrong_shard.plan.waves[0].shards[0].set_state(ShardState::Failed);
        let found = check(&wrong_shard);
        assert!(
            found.iter().any(|v| v.detail.contains("last state told")),
            "{found:?}"
        );
    }
}
