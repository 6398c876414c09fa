//! Rollback plans: the shards a finished plan moved (took to its target, or part of the way
//! before failing or being cancelled), each sent back to the version it had before that plan
//! (recorded from its first run), with the plan's own migration set and its down scripts; the
//! plan's other shards are listed with why they are left out. A rollback plan goes through the
//! same gates as any plan: one approval, then the fenced protocol shard by shard, in the
//! source plan's waves.

use std::collections::HashMap;

use fleetshift_common::proto::v1::{
    Direction, Hello, HostDuties, LeftOut, Plan, PlanState, ShardState, ShardTask,
};
use fleetshift_common::rollout_names::plan_state_name;
use fleetshift_common::source::MigrationSet;

use super::named::{named, sift};
use super::planning::{self, Candidate};
use super::{RolloutError, plan_ended, spans, state_of};

mod reach;

/// What to roll back.
#[derive(Debug, Clone, Copy)]
pub struct Rollback<'a> {
    /// The plan, with its task records.
    pub source: &'a Plan,
    /// Its migration set, whose down scripts revert it.
    pub set: &'a MigrationSet,
    /// Shard ids or patterns; empty: every shard it moved.
    pub patterns: &'a [String],
    /// Back only this far (each shard to the later of this and its version before the plan).
    pub to: Option<&'a str>,
}

/// Plans `rollback` for `author`: the shards its plan moved that match its patterns, over the
/// agents announcing them now; refused when a revision on the way back has no down script.
pub fn plan_rollback(
    rollback: Rollback<'_>,
    author: &str,
    agents: &[(String, Hello)],
) -> Result<Plan, RolloutError> {
    let Rollback {
        source,
        set,
        patterns,
        to,
    } = rollback;
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
    let (selected, left_out) = selected_tasks(source, patterns)?;
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
    // A phased plan that reached its contract phase goes back to that phase's start: the
    // phases before it are what the application runs against, and are rolled back on their own.
    let contract_start = contract_start(source);
    let to = to.or(contract_start);
    let back_to: HashMap<String, String> = reach::destinations(set, source, &selected, to)
        .map_err(|error| match (contract_start, error) {
            (Some(start), RolloutError::BadRequest(why)) => RolloutError::BadRequest(format!(
                "plan {} ran its contract phase, which only its down scripts revert (the phases before it, to {start}, stay applied): {why}",
                source.plan_id
            )),
            (_, error) => error,
        })?
        .into_iter()
        .collect();
    let policy = source.policy.clone().unwrap_or_default();
    let mut waves = planning::waves(&shards, &policy);
    for task in waves.iter_mut().flat_map(|wave| &mut wave.shards) {
        task.target_version = back_to
            .get(task.shard_id.as_str())
            .cloned()
            .unwrap_or_default();
    }
    let mut versions: Vec<&str> = back_to.values().map(String::as_str).collect();
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
        left_out,
        state_reason: contract_start
            .filter(|_| rollback.to.is_none())
            .map(|start| format!(
                "plan {} ran its contract phase: this rollback reverts that phase with its down scripts and stops at its start ({start}); the phases before it are rolled back with `fleetshift rollback {} --to <version>` once the application no longer needs them",
                source.plan_id, source.plan_id
            ))
            .unwrap_or_default(),
        ..Plan::default()
    })
}

/// Where a phased plan's contract phase starts, when the plan ran it: the phase before it's
/// last revision.
fn contract_start(plan: &Plan) -> Option<&str> {
    let current = plan.current_phase as usize;
    let phase = plan.phases.get(current)?;
    (phase.name == "contract" && phase.started_at.is_some() && current > 0)
        .then(|| plan.phases[current - 1].last_version.as_str())
}

/// The tasks of `source` to roll back, those that moved (reached the target, or failed or
/// were cancelled after some of its revisions applied) and match `patterns` (all of them when
/// empty), each with its version from before the plan; the others, each with the reason.
fn selected_tasks<'p>(
    source: &'p Plan,
    patterns: &[String],
) -> Result<(Vec<&'p ShardTask>, Vec<LeftOut>), RolloutError> {
    let (moved, mut left_out) = sift(source, |task| unmoved(source, task));
    let what = format!("shard plan {} moved", source.plan_id);
    let (selected, unnamed) = named(moved, patterns, &what)?;
    left_out.extend(unnamed);
    if selected.is_empty() {
        return Err(RolloutError::BadRequest(format!(
            "plan {} moved no shard; there is nothing to roll back",
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
    left_out.sort_by(|left, right| left.shard_id.cmp(&right.shard_id));
    Ok((selected, left_out))
}

/// Why `task`'s shard did not move in `source` (nothing to revert), or `None` when it moved:
/// it reached the target, or ended elsewhere after some of the plan's revisions applied.
fn unmoved(source: &Plan, task: &ShardTask) -> Option<String> {
    let plan = &source.plan_id;
    let state = state_of(task);
    let partly = !task.current_version.is_empty()
        && !task.previous_version.is_empty()
        && task.current_version != task.previous_version;
    match state {
        ShardState::Succeeded => None,
        ShardState::Failed | ShardState::Cancelled if partly => None,
        ShardState::RolledBack => Some(format!(
            "its agent already rolled it back to its version before plan {plan}"
        )),
        ShardState::Failed => Some(format!(
            "failed in plan {plan} before any of its revisions applied"
        )),
        ShardState::Cancelled => Some(format!(
            "was cancelled in plan {plan} before any of its revisions applied"
        )),
        ShardState::Pending
        | ShardState::Unspecified
        | ShardState::Claimed
        | ShardState::Running => Some(format!("never ran in plan {plan}")),
    }
}

#[cfg(test)]
mod tests {
    use fleetshift_common::proto::v1::{ShardFacts, Wave, WavePolicy};

    use super::*;
    use crate::rollout::waves;

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

    /// Revisions 1 to 3, each with its down script.
    fn reversible_set() -> (tempfile::TempDir, MigrationSet) {
        let directory = tempfile::tempdir().expect("dir");
        for version in 1..=3 {
            let file = |suffix: &str| directory.path().join(format!("{version}_t.{suffix}.sql"));
            std::fs::write(file("up"), format!("CREATE TABLE t{version} (id int);")).expect("up");
            std::fs::write(file("down"), format!("DROP TABLE t{version};")).expect("down");
        }
        let set = MigrationSet::load(directory.path(), None).expect("set");
        (directory, set)
    }

    /// `plan_rollback` of `source`'s `patterns` over `agents`, with a reversible set.
    fn planned(
        source: &Plan,
        patterns: &[String],
        agents: &[(String, Hello)],
    ) -> Result<Plan, RolloutError> {
        let (_directory, set) = reversible_set();
        let rollback = Rollback {
            source,
            set: &set,
            patterns,
            to: None,
        };
        plan_rollback(rollback, "alice", agents)
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
        let plan = planned(&source(PlanState::Succeeded), &[], &agents()).expect("planned");
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

        let one = planned(
            &source(PlanState::Halted),
            &["users-2".to_owned()],
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

    fn left_out(plan: &Plan) -> Vec<(&str, &str)> {
        plan.left_out
            .iter()
            .map(|left| (left.shard_id.as_str(), left.reason.as_str()))
            .collect()
    }

    #[test]
    fn shards_that_moved_part_of_the_way_go_back_and_the_others_are_named() {
        let plan = planned(&source(PlanState::Halted), &[], &agents()).expect("planned");
        let left = left_out(&plan);
        assert_eq!(
            left,
            [(
                "orders-1",
                "failed in plan p1 before any of its revisions applied"
            )]
        );

        let mut partly = source(PlanState::Halted);
        partly.waves[0].shards[2].current_version = "2".to_owned();
        partly.waves[0]
            .shards
            .push(task("orders-2", ShardState::RolledBack, "1"));
        let plan = planned(&partly, &["orders-*".to_owned()], &agents()).expect("planned");
        let targets: Vec<(&str, &str)> = waves::planned_tasks(&plan)
            .map(|task| (task.shard_id.as_str(), task.target_version.as_str()))
            .collect();
        assert_eq!(targets, [("orders-1", "1")]);
        let left = left_out(&plan);
        assert_eq!(
            left,
            [
                (
                    "orders-2",
                    "its agent already rolled it back to its version before plan p1"
                ),
                ("users-1", "not named by --shards"),
                ("users-2", "not named by --shards"),
            ]
        );
    }

    #[test]
    fn a_rollback_is_refused_with_the_reason() {
        let refused = |plan: &Plan, patterns: &[&str]| {
            let patterns: Vec<String> = patterns.iter().map(|p| (*p).to_owned()).collect();
            planned(plan, &patterns, &agents())
                .expect_err("refused")
                .to_string()
        };
        assert!(refused(&source(PlanState::Running), &[]).contains("is running"));
        let failed_only = refused(&source(PlanState::Halted), &["orders-*"]);
        assert!(
            failed_only.contains("matches no shard plan p1 moved (users-1, users-2)"),
            "{failed_only}"
        );
        let mut unrecorded = source(PlanState::Succeeded);
        unrecorded.waves[0].shards[0].previous_version.clear();
        assert!(refused(&unrecorded, &["users-1"]).contains("no recorded version"));
        let mut rollback = source(PlanState::Succeeded);
        rollback.direction = Direction::Down.into();
        assert!(refused(&rollback, &[]).contains("itself a rollback"));
        let gone = planned(&source(PlanState::Succeeded), &[], &[])
            .expect_err("no agents")
            .to_string();
        assert!(
            gone.contains("no connected agent announces shard users-1"),
            "{gone}"
        );
    }
}
