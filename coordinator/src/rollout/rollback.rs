//! Rollback plans: the shards a finished plan took to its target, each sent back to the version
//! it had before that plan (recorded from its first run), with the plan's own migration set and
//! its down scripts. A rollback plan goes through the same gates as any plan: one approval,
//! then the fenced protocol shard by shard, in the source plan's waves.

use std::collections::HashMap;

use fleetshift_common::proto::v1::{
    Direction, Hello, HostDuties, Plan, PlanState, ShardState, ShardTask,
};
use fleetshift_common::rollout_names::plan_state_name;

use super::planning::{self, Candidate};
use super::{RolloutError, plan_ended, spans, waves};

/// Plans the rollback of `source` (with its task records) for `author`: the shards it took to
/// its target that match `patterns` (all of them when empty), over the agents announcing
/// them now.
pub fn plan_rollback(
    source: &Plan,
    patterns: &[String],
    author: &str,
    agents: &[(String, Hello)],
) -> Result<Plan, RolloutError> {
    let state = PlanState::try_from(source.state).unwrap_or(PlanState::Unspecified);
    if !plan_ended(state) {
        return Err(RolloutError::NotNow(format!(
            "plan {} is {}; cancel it or let it end before rolling it back",
            source.plan_id,
            plan_state_name(state)
        )));
    }
    if source.direction() == Direction::Down {
        return Err(RolloutError::BadRequest(format!(
            "plan {} is itself a rollback (of {}); plan the migration again to go forward",
            source.plan_id, source.rolls_back
        )));
    }
    let selected = selected_tasks(source, patterns)?;
    let announced: HashMap<String, Candidate> = planning::candidates(agents, &HashMap::new())?
        .into_iter()
        .map(|candidate| (candidate.shard_id.clone(), candidate))
        .collect();
    let shards: Vec<Candidate> = selected
        .iter()
        .map(|task| {
            announced.get(&task.shard_id).cloned().ok_or_else(|| {
                RolloutError::NotNow(format!(
                    "no connected agent announces shard {}; start its agent and retry",
                    task.shard_id
                ))
            })
        })
        .collect::<Result<_, _>>()?;
    let back_to: HashMap<&str, &str> = selected
        .iter()
        .map(|task| (task.shard_id.as_str(), task.previous_version.as_str()))
        .collect();
    let policy = source.policy.clone().unwrap_or_default();
    let mut waves = planning::waves(&shards, &policy);
    for task in waves.iter_mut().flat_map(|wave| &mut wave.shards) {
        task.target_version = back_to
            .get(task.shard_id.as_str())
            .map(|version| (*version).to_owned())
            .unwrap_or_default();
    }
    let mut versions: Vec<&str> = back_to.values().copied().collect();
    versions.sort_unstable();
    versions.dedup();
    let duties = source.duties.as_ref().map(|duties| HostDuties {
        // Reverting is what a rollback trigger would do; nothing is timed against a target.
        baselines: None,
        rollback: None,
        ..duties.clone()
    });
    Ok(Plan {
        plan_id: planning::new_plan_id(),
        author: author.to_owned(),
        set_digest: source.set_digest.clone(),
        target_version: match versions.as_slice() {
            [only] => (*only).to_owned(),
            _ => "each shard's version before the plan".to_owned(),
        },
        state: PlanState::AwaitingApproval.into(),
        waves,
        created_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
        policy: Some(policy),
        limits: source.limits,
        selector: source.selector.clone(),
        set_format: source.set_format.clone(),
        set_origin: source.set_origin.clone(),
        duties,
        direction: Direction::Down.into(),
        rolls_back: source.plan_id.clone(),
        trace_context: spans::new_trace_context(),
        ..Plan::default()
    })
}

/// The tasks of `source` to roll back: those it took to its target that match `patterns` (all
/// of them when empty), each with its version from before the plan.
fn selected_tasks<'p>(
    source: &'p Plan,
    patterns: &[String],
) -> Result<Vec<&'p ShardTask>, RolloutError> {
    let succeeded: Vec<&ShardTask> = waves::planned_tasks(source)
        .filter(|task| task.state() == ShardState::Succeeded)
        .collect();
    if let Some(unmatched) = patterns.iter().find(|pattern| {
        !succeeded
            .iter()
            .any(|task| matches(pattern, &task.shard_id))
    }) {
        return Err(RolloutError::BadRequest(format!(
            "--shards {unmatched} matches no shard plan {} took to its target ({})",
            source.plan_id,
            listing(&succeeded)
        )));
    }
    let selected: Vec<&ShardTask> = succeeded
        .into_iter()
        .filter(|task| {
            patterns.is_empty()
                || patterns
                    .iter()
                    .any(|pattern| matches(pattern, &task.shard_id))
        })
        .collect();
    if selected.is_empty() {
        return Err(RolloutError::BadRequest(format!(
            "plan {} took no shard to its target; there is nothing to roll back",
            source.plan_id
        )));
    }
    if let Some(unknown) = selected
        .iter()
        .find(|task| task.previous_version.is_empty())
    {
        return Err(RolloutError::BadRequest(format!(
            "shard {} has no recorded version from before plan {}; revert it on its host with `fleetshift migrate down --to <version>`",
            unknown.shard_id, source.plan_id
        )));
    }
    Ok(selected)
}

/// Whether `shard_id` matches `pattern`, where `*` stands for any run of characters.
fn matches(pattern: &str, shard_id: &str) -> bool {
    let mut pieces = pattern.split('*');
    let Some(first) = pieces.next() else {
        return pattern == shard_id;
    };
    let Some(mut rest) = shard_id.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = pieces.collect();
    let Some((last, middle)) = pieces.split_last() else {
        return rest.is_empty();
    };
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

fn listing(tasks: &[&ShardTask]) -> String {
    if tasks.is_empty() {
        return "none".to_owned();
    }
    let ids: Vec<&str> = tasks.iter().map(|task| task.shard_id.as_str()).collect();
    ids.join(", ")
}

#[cfg(test)]
mod tests {
    use fleetshift_common::proto::v1::{ShardFacts, Wave, WavePolicy};

    use super::*;

    #[test]
    fn patterns_match_whole_ids_with_stars_for_any_run() {
        assert!(matches("users-1", "users-1"));
        assert!(!matches("users-1", "users-10"));
        assert!(matches("users-*", "users-10"));
        assert!(matches("*-10", "users-10"));
        assert!(matches("u*s-*0", "users-10"));
        assert!(!matches("u*s-*0", "users-11"));
        assert!(matches("*", "anything"));
        assert!(!matches("a*a", "a"), "the two ends cannot overlap");
    }

    fn task(shard: &str, state: ShardState, previous: &str) -> ShardTask {
        ShardTask {
            shard_id: shard.to_owned(),
            state: state.into(),
            previous_version: previous.to_owned(),
            ..ShardTask::default()
        }
    }

    fn source(state: PlanState) -> Plan {
        Plan {
            plan_id: "p1".to_owned(),
            state: state.into(),
            target_version: "3".to_owned(),
            policy: Some(WavePolicy {
                percentages: vec![100],
                ..WavePolicy::default()
            }),
            waves: vec![Wave {
                index: 0,
                shards: vec![
                    task("users-1", ShardState::Succeeded, "1"),
                    task("users-2", ShardState::Succeeded, "base"),
                    task("orders-1", ShardState::Failed, "1"),
                ],
            }],
            ..Plan::default()
        }
    }

    fn agents() -> Vec<(String, Hello)> {
        let shard = |id: &str| ShardFacts {
            shard_id: id.to_owned(),
            ..ShardFacts::default()
        };
        vec![(
            "db-host-1".to_owned(),
            Hello {
                shards: vec![shard("users-1"), shard("users-2"), shard("orders-1")],
                ..Hello::default()
            },
        )]
    }

    #[test]
    fn the_shards_that_reached_the_target_go_back_each_to_its_own_version() {
        let plan =
            plan_rollback(&source(PlanState::Succeeded), &[], "alice", &agents()).expect("planned");
        assert_eq!(plan.direction(), Direction::Down);
        assert_eq!(plan.rolls_back, "p1");
        assert_eq!(plan.state(), PlanState::AwaitingApproval);
        let targets: Vec<(&str, &str)> = plan
            .waves
            .iter()
            .flat_map(|wave| &wave.shards)
            .map(|task| (task.shard_id.as_str(), task.target_version.as_str()))
            .collect();
        assert_eq!(targets, [("users-1", "1"), ("users-2", "base")]);

        let one = plan_rollback(
            &source(PlanState::Halted),
            &["users-2".to_owned()],
            "alice",
            &agents(),
        )
        .expect("planned");
        assert_eq!(one.target_version, "base");
        assert_eq!(
            one.waves
                .iter()
                .map(|wave| wave.shards.len())
                .sum::<usize>(),
            1
        );
    }

    #[test]
    fn a_rollback_is_refused_with_the_reason() {
        let refused = |plan: &Plan, patterns: &[&str]| {
            let patterns: Vec<String> = patterns.iter().map(|p| (*p).to_owned()).collect();
            plan_rollback(plan, &patterns, "alice", &agents())
                .expect_err("refused")
                .to_string()
        };
        assert!(refused(&source(PlanState::Running), &[]).contains("is running"));
        let failed_only = refused(&source(PlanState::Halted), &["orders-*"]);
        assert!(
            failed_only.contains("matches no shard plan p1 took to its target (users-1, users-2)"),
            "{failed_only}"
        );
        let mut unrecorded = source(PlanState::Succeeded);
        unrecorded.waves[0].shards[0].previous_version.clear();
        assert!(refused(&unrecorded, &["users-1"]).contains("no recorded version"));
        let mut rollback = source(PlanState::Succeeded);
        rollback.direction = Direction::Down.into();
        assert!(refused(&rollback, &[]).contains("itself a rollback"));
        let gone = plan_rollback(&source(PlanState::Succeeded), &[], "alice", &[])
            .expect_err("no agents")
            .to_string();
        assert!(
            gone.contains("no connected agent announces shard users-1"),
            "{gone}"
        );
    }
}
