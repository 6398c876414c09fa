//! Which runs wait on a throttle now, for `status`, `watch` and the timed updates: the replica
//! holding the agent's session writes a wait's first event under
//! `throttled/<plan>/<assignment>`, on the session's lease (so it goes with a dead session),
//! and deletes it when the wait ends or the run does: two writes per wait, none per sample.
//! Readers put it on the running task as [`ShardTask::throttled`].

use std::collections::HashMap;
use std::time::SystemTime;

use fleetshift_common::proto::v1::progress_event::Event;
use fleetshift_common::proto::v1::{Plan, ProgressEvent, ShardState, ShardTask, Throttled};
use prost::Message;

use super::records::decode;
use super::{RolloutError, assignment_id, plan_of_assignment, task_token};
use crate::store::{LeaseId, Store, Write, keys};

/// The write that keeps a throttle event's wait on record under `lease`; none for other events.
pub fn recorded(event: &ProgressEvent, lease: LeaseId) -> Option<Write> {
    let Some(Event::Throttled(throttled)) = &event.event else {
        return None;
    };
    let key = keys::throttled(
        plan_of_assignment(&event.assignment_id),
        &event.assignment_id,
    );
    let began = !throttled.resumed && throttled.waited.is_none_or(|waited| waited == zero());
    Some(if began {
        Write::Put {
            key,
            value: event.encode_to_vec(),
            lease: Some(lease),
        }
    } else {
        Write::Delete(key)
    })
}

/// The write that forgets any wait of the run `assignment`, once it ended.
pub fn ended(assignment: &str) -> Write {
    Write::Delete(keys::throttled(plan_of_assignment(assignment), assignment))
}

/// Each waiting run of `plan_id`, by assignment: the event its wait began with.
pub type Waits = HashMap<String, ProgressEvent>;

/// The runs of `plan_id` waiting on a throttle now.
pub async fn load<S: Store>(store: &S, plan_id: &str) -> Result<Waits, RolloutError> {
    let listing = store.list(&keys::throttled_prefix(plan_id)).await?;
    listing
        .entries
        .iter()
        .map(|entry| {
            let event: ProgressEvent = decode(&entry.key, &entry.value)?;
            Ok((event.assignment_id.clone(), event))
        })
        .collect()
}

/// The assignment a throttled key is for, when `key` is one.
pub fn assignment_of_key(key: &str) -> Option<&str> {
    key.strip_prefix(&keys::all_throttled_prefix())?
        .split_once('/')
        .map(|(_, assignment)| assignment)
}

/// Puts each wait of `waits` on its running task of `plan`, its `waited` counted to `now`.
pub fn put_on(plan: &mut Plan, waits: &Waits, now: SystemTime) {
    if waits.is_empty() {
        return;
    }
    let plan_id = plan.plan_id.clone();
    for task in plan.waves.iter_mut().flat_map(|wave| &mut wave.shards) {
        task.throttled = waiting(&plan_id, task, waits, now);
    }
}

/// The wait of `task`'s current run, when it runs and waits.
fn waiting(plan_id: &str, task: &ShardTask, waits: &Waits, now: SystemTime) -> Option<Throttled> {
    if !matches!(task.state(), ShardState::Claimed | ShardState::Running) {
        return None;
    }
    let event = waits.get(&assignment_id(plan_id, &task.shard_id, task_token(task)))?;
    let Some(Event::Throttled(throttled)) = &event.event else {
        return None;
    };
    let since = event.at.and_then(|at| SystemTime::try_from(at).ok())?;
    Some(Throttled {
        waited: now
            .duration_since(since)
            .ok()
            .and_then(|waited| prost_types::Duration::try_from(waited).ok()),
        ..throttled.clone()
    })
}

fn zero() -> prost_types::Duration {
    prost_types::Duration::default()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fleetshift_common::proto::v1::Wave;

    use super::*;
    use crate::store::FenceToken;

    fn event(assignment: &str, resumed: bool, waited: u64, at: SystemTime) -> ProgressEvent {
        ProgressEvent {
            assignment_id: assignment.to_owned(),
            shard_id: "s1".to_owned(),
            at: Some(at.into()),
            event: Some(Event::Throttled(Throttled {
                signal: "fleet throttle".to_owned(),
                detail: "fleet throttle t1 set by alice".to_owned(),
                waited: prost_types::Duration::try_from(Duration::from_secs(waited)).ok(),
                resumed,
            })),
        }
    }

    #[test]
    fn a_wait_is_kept_from_its_start_to_its_end_and_shown_on_its_running_task() {
        let now = SystemTime::now();
        let assignment = assignment_id("p1", "s1", FenceToken::from_raw(7));
        let began = event(&assignment, false, 0, now - Duration::from_secs(42));
        let key = keys::throttled("p1", &assignment);
        assert!(
            matches!(recorded(&began, 9), Some(Write::Put { key: written, lease: Some(9), .. }) if written == key)
        );
        let lifted = event(&assignment, true, 42, now);
        assert!(matches!(recorded(&lifted, 9), Some(Write::Delete(deleted)) if deleted == key));
        let gave_up = event(&assignment, false, 42, now);
        assert!(matches!(recorded(&gave_up, 9), Some(Write::Delete(_))));
        assert_eq!(assignment_of_key(&key), Some(assignment.as_str()));

        let task = |token: i64, state: ShardState| ShardTask {
            shard_id: "s1".to_owned(),
            fence_token: token,
            state: state.into(),
            ..ShardTask::default()
        };
        let mut plan = Plan {
            plan_id: "p1".to_owned(),
            waves: vec![Wave {
                shards: vec![task(7, ShardState::Running)],
                ..Wave::default()
            }],
            ..Plan::default()
        };
        let waits = Waits::from([(assignment.clone(), began)]);
        put_on(&mut plan, &waits, now);
        let shown = plan.waves[0].shards[0].throttled.clone().expect("shown");
        assert_eq!(shown.signal, "fleet throttle");
        assert_eq!(
            shown.waited,
            prost_types::Duration::try_from(Duration::from_secs(42)).ok()
        );
        // A newer claim's run, or an ended task, is not the one that waited.
        plan.waves[0].shards[0] = task(8, ShardState::Running);
        put_on(&mut plan, &waits, now);
        assert_eq!(plan.waves[0].shards[0].throttled, None);
        plan.waves[0].shards[0] = task(7, ShardState::Succeeded);
        put_on(&mut plan, &waits, now);
        assert_eq!(plan.waves[0].shards[0].throttled, None);
    }
}
