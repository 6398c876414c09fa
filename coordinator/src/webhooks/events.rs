//! Which events a change makes: a plan appearing, rehearsed, approved, started, halted,
//! completed (a rollback plan's completion is `rollout.rolled_back`) or cancelled; a shard
//! failing or rolled back by its agent; a wave whose every shard has ended; a shard whose
//! schema fingerprint changed while its version stayed (a change made outside fleetshift).
//! The tracker remembers what it has seen, so a change that repeats a known state makes no
//! event.

use fleetshift_common::validation;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use fleetshift_common::proto::v1::{
    Direction, Hello, Plan, PlanState, RiskLevel, ShardState, ShardTask,
};
use fleetshift_common::rollout_names::{plan_state_name, risk_level_name};
use serde::Serialize;
use serde_json::{Value, json};

use crate::rollout::{task_ended, waves};

/// One event, as its JSON body carries it.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// `plan.created`, `plan.rehearsed`, `plan.approved`, `rollout.started`, `wave.finished`, `shard.failed`,
    /// `shard.rolled_back`, `rollout.halted`, `rollout.completed`, `rollout.rolled_back`,
    /// `rollout.cancelled`, `shard.schema_changed`.
    pub event: &'static str,
    /// Empty for `shard.schema_changed`, which no plan made.
    pub plan_id: String,
    /// RFC 3339, when the coordinator saw it.
    pub at: String,
    /// What the event is about (the approver, the shard and its error, the wave, the reason).
    pub detail: Value,
}

#[derive(Debug, Default)]
struct PlanSeen {
    state: i32,
    approvals: usize,
    /// Shards per wave, as planned.
    waves: BTreeMap<u32, BTreeSet<String>>,
    /// Shards that have ended, per wave.
    ended: BTreeMap<u32, BTreeSet<String>>,
    /// Rehearsals reported, as (shard, when it ended).
    rehearsals: BTreeSet<(String, String)>,
    /// The post-migration validation of the wave's ended shards.
    validated: BTreeMap<u32, WaveValidation>,
}

/// How a wave's shards passed their post-migration validation, for `wave.finished`.
#[derive(Debug, Default)]
struct WaveValidation {
    passed: usize,
    failed: Vec<String>,
    with_notes: Vec<String>,
}

impl WaveValidation {
    fn count(&mut self, task: &ShardTask) {
        let Some(report) = &task.validation else {
            return;
        };
        if report.passed {
            self.passed += 1;
        } else {
            self.failed.push(task.shard_id.clone());
        }
        if !report.notes.is_empty() {
            self.with_notes.push(task.shard_id.clone());
        }
    }
}

/// What the follower has seen of every plan and task.
#[derive(Debug, Default)]
pub struct Tracker {
    plans: HashMap<String, PlanSeen>,
    tasks: HashMap<(String, String), i32>,
    /// Each shard's (version, schema fingerprint) as its agent last announced them.
    schemas: HashMap<String, (String, String)>,
}

pub(super) fn event(name: &'static str, plan_id: &str, detail: Value) -> Event {
    Event {
        event: name,
        plan_id: plan_id.to_owned(),
        at: prost_types::Timestamp::from(std::time::SystemTime::now()).to_string(),
        detail,
    }
}

/// `plan.rehearsed` for the rehearsals of `plan` not in `seen` (then added): each shard's
/// verdict and the hints found, the plan's risk with them, and its state (a rehearsal that
/// raised an approved plan's risk sends it back to awaiting approval, saying why).
fn rehearsed(plan: &Plan, seen: &mut BTreeSet<(String, String)>) -> Option<Event> {
    let new: Vec<Value> = plan
        .rehearsals
        .iter()
        .filter(|rehearsal| {
            let at = rehearsal
                .rehearsed_at
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default();
            seen.insert((rehearsal.shard_id.clone(), at))
        })
        .map(|rehearsal| {
            json!({ "shard": rehearsal.shard_id, "passed": rehearsal.passed,
                    "shard_version": rehearsal.shard_version, "hints": rehearsal.hints,
                    "failure": (!rehearsal.failure.is_empty()).then_some(&rehearsal.failure) })
        })
        .collect();
    if new.is_empty() {
        return None;
    }
    let state = PlanState::try_from(plan.state).unwrap_or(PlanState::Unspecified);
    let risk = plan.risk.as_ref().map(|risk| {
        let level = RiskLevel::try_from(risk.level).unwrap_or(RiskLevel::Unspecified);
        json!({ "level": risk_level_name(level), "score": risk.score })
    });
    Some(event(
        "plan.rehearsed",
        &plan.plan_id,
        json!({ "rehearsals": new, "risk": risk, "state": plan_state_name(state),
                "reason": plan.state_reason }),
    ))
}

impl Tracker {
    /// `shard.schema_changed` for each shard of `hello` whose fingerprint changed while its
    /// version stayed the same (agents read a shard's schema again whenever its version moves,
    /// so a run's own change never shows here).
    pub fn agent_announced(&mut self, agent: &str, hello: &Hello) -> Vec<Event> {
        let mut events = Vec::new();
        for shard in hello
            .shards
            .iter()
            .filter(|shard| !shard.schema_fingerprint.is_empty())
        {
            let now = (
                shard.current_version.clone(),
                shard.schema_fingerprint.clone(),
            );
            let Some((version, before)) = self.schemas.insert(shard.shard_id.clone(), now) else {
                continue;
            };
            if version == shard.current_version && before != shard.schema_fingerprint {
                events.push(event(
                    "shard.schema_changed",
                    "",
                    json!({ "shard": shard.shard_id, "agent": agent,
                            "version": if version.is_empty() { "base" } else { &version },
                            "before": before, "after": shard.schema_fingerprint }),
                ));
            }
        }
        events
    }

    /// The events `plan`'s stored state makes, given what was seen of it before.
    pub fn plan_changed(&mut self, plan: Plan) -> Vec<Event> {
        let mut events = Vec::new();
        let seen = self.plans.entry(plan.plan_id.clone()).or_insert_with(|| {
            events.push(event(
                "plan.created",
                &plan.plan_id,
                json!({ "author": plan.author, "target_version": plan.target_version,
                        "shards": waves::shard_count(&plan) }),
            ));
            PlanSeen {
                waves: plan
                    .waves
                    .iter()
                    .map(|wave| {
                        let shards = wave
                            .shards
                            .iter()
                            .map(|task| task.shard_id.clone())
                            .collect();
                        (wave.index, shards)
                    })
                    .collect(),
                ..PlanSeen::default()
            }
        });
        if let Some(rehearsed) = rehearsed(&plan, &mut seen.rehearsals) {
            events.push(rehearsed);
        }
        for approval in plan.approvals.iter().skip(seen.approvals) {
            events.push(event(
                "plan.approved",
                &plan.plan_id,
                json!({ "approver": approval.approver, "comment": approval.comment }),
            ));
        }
        seen.approvals = plan.approvals.len();
        if seen.state != plan.state {
            let previous = PlanState::try_from(seen.state).unwrap_or(PlanState::Unspecified);
            let state = PlanState::try_from(plan.state).unwrap_or(PlanState::Unspecified);
            let reason = if plan.rolls_back.is_empty() {
                json!({ "reason": plan.state_reason })
            } else {
                json!({ "reason": plan.state_reason, "rolls_back": plan.rolls_back })
            };
            let name = match state {
                PlanState::Running if previous == PlanState::Approved => Some("rollout.started"),
                PlanState::Halted => Some("rollout.halted"),
                PlanState::Succeeded if plan.direction() == Direction::Down => {
                    Some("rollout.rolled_back")
                }
                PlanState::Succeeded => Some("rollout.completed"),
                PlanState::FinishedWithFailures => Some("rollout.finished_with_failures"),
                PlanState::Cancelled => Some("rollout.cancelled"),
                _ => None,
            };
            if let Some(name) = name {
                events.push(event(name, &plan.plan_id, reason));
            }
            seen.state = plan.state;
        }
        events
    }

    /// The events a task's stored state makes: its failure, and its wave's end.
    pub fn task_changed(&mut self, task: ShardTask, plan_id: String) -> Vec<Event> {
        let key = (plan_id.clone(), task.shard_id.clone());
        if self.tasks.insert(key, task.state) == Some(task.state) {
            return Vec::new();
        }
        let state = ShardState::try_from(task.state).unwrap_or(ShardState::Unspecified);
        let mut events = Vec::new();
        if state == ShardState::Failed {
            events.push(event(
                "shard.failed",
                &plan_id,
                json!({ "shard": task.shard_id, "agent": task.agent_id, "wave": task.wave,
                        "error": task.error.as_ref().map(|error| &error.message),
                        "validation": task.validation.as_ref().map(validation::report_json) }),
            ));
        }
        if state == ShardState::RolledBack {
            let rollback = task.rollback.as_ref();
            events.push(event(
                "shard.rolled_back",
                &plan_id,
                json!({ "shard": task.shard_id, "agent": task.agent_id, "wave": task.wave,
                        "reason": rollback.map(|rollback| &rollback.reason),
                        "reverted_to": rollback.map(|rollback| &rollback.reverted_to),
                        "revisions": rollback.map(|rollback| &rollback.revisions),
                        "recovered": rollback.map(|rollback| rollback.recovered),
                        "validation": task.validation.as_ref().map(validation::report_json) }),
            ));
        }
        if task_ended(state)
            && let Some(seen) = self.plans.get_mut(&plan_id)
        {
            let ended = seen.ended.entry(task.wave).or_default();
            let newly = ended.insert(task.shard_id.clone());
            let validated = seen.validated.entry(task.wave).or_default();
            if newly {
                validated.count(&task);
            }
            let planned = seen.waves.get(&task.wave);
            if newly && planned.is_some_and(|planned| planned.is_subset(ended)) {
                events.push(event(
                    "wave.finished",
                    &plan_id,
                    json!({ "wave": task.wave, "shards": ended.len(),
                            "validation": { "passed": validated.passed,
                                            "failed": validated.failed,
                                            "with_notes": validated.with_notes } }),
                ));
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use fleetshift_common::proto::v1::{Approval, RehearsalSummary, ValidationReport, Wave};

    use super::*;

    fn task(shard: &str, state: ShardState) -> ShardTask {
        ShardTask {
            shard_id: shard.to_owned(),
            state: state.into(),
            wave: 0,
            ..ShardTask::default()
        }
    }

    fn announced(shards: &[(&str, &str, &str)]) -> Hello {
        Hello {
            shards: shards
                .iter()
                .map(
                    |(shard, version, fingerprint)| fleetshift_common::proto::v1::ShardFacts {
                        shard_id: (*shard).to_owned(),
                        current_version: (*version).to_owned(),
                        schema_fingerprint: (*fingerprint).to_owned(),
                        ..Default::default()
                    },
                )
                .collect(),
            ..Hello::default()
        }
    }

    #[test]
    fn a_schema_that_changes_without_a_revision_makes_one_event() {
        let mut tracker = Tracker::default();
        assert!(
            tracker
                .agent_announced("a", &announced(&[("s1", "1", "aa"), ("s2", "", "bb")]))
                .is_empty()
        );
        // The same again, a run that moved s1's version with its schema, a shard not yet read.
        assert!(
            tracker
                .agent_announced("a", &announced(&[("s1", "1", "aa"), ("s2", "", "bb")]))
                .is_empty()
        );
        assert!(
            tracker
                .agent_announced("a", &announced(&[("s1", "2", "cc"), ("s2", "", "")]))
                .is_empty()
        );
        let events =
            tracker.agent_announced("a", &announced(&[("s1", "2", "cc"), ("s2", "", "dd")]));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event, "shard.schema_changed");
        assert_eq!(
            events[0].detail,
            json!({ "shard": "s2", "agent": "a", "version": "base", "before": "bb", "after": "dd" })
        );
    }

    #[test]
    fn a_plans_life_makes_each_event_once() {
        let mut tracker = Tracker::default();
        let mut plan = Plan {
            plan_id: "p".to_owned(),
            state: PlanState::AwaitingApproval.into(),
            waves: vec![Wave {
                index: 0,
                shards: vec![
                    task("a", ShardState::Pending),
                    task("b", ShardState::Pending),
                    task("c", ShardState::Pending),
                ],
            }],
            ..Plan::default()
        };
        let names = |events: Vec<Event>| {
            events
                .into_iter()
                .map(|event| event.event)
                .collect::<Vec<_>>()
        };
        assert_eq!(names(tracker.plan_changed(plan.clone())), ["plan.created"]);
        assert!(tracker.plan_changed(plan.clone()).is_empty(), "unchanged");
        plan.rehearsals.push(RehearsalSummary {
            shard_id: "a".to_owned(),
            hints: vec!["E6".to_owned()],
            rehearsed_at: Some(prost_types::Timestamp::default()),
            ..RehearsalSummary::default()
        });
        let rehearsed = tracker.plan_changed(plan.clone());
        assert_eq!(names(rehearsed.clone()), ["plan.rehearsed"]);
        assert_eq!(rehearsed[0].detail["rehearsals"][0]["hints"][0], "E6");
        assert!(tracker.plan_changed(plan.clone()).is_empty(), "seen");
        plan.approvals.push(Approval::default());
        plan.state = PlanState::Approved.into();
        assert_eq!(names(tracker.plan_changed(plan.clone())), ["plan.approved"]);
        plan.state = PlanState::Running.into();
        assert_eq!(
            names(tracker.plan_changed(plan.clone())),
            ["rollout.started"]
        );
        assert!(
            tracker
                .task_changed(task("a", ShardState::Running), "p".to_owned())
                .is_empty()
        );
        let noted = ShardTask {
            validation: Some(ValidationReport {
                passed: true,
                notes: vec!["constraint orders.fk is NOT VALID".to_owned()],
                ..ValidationReport::default()
            }),
            ..task("a", ShardState::Succeeded)
        };
        assert!(tracker.task_changed(noted, "p".to_owned()).is_empty());
        assert_eq!(
            names(tracker.task_changed(task("c", ShardState::RolledBack), "p".to_owned())),
            ["shard.rolled_back"]
        );
        let invalid = ShardTask {
            validation: Some(ValidationReport {
                failures: vec!["--verify-data orders: the data changed".to_owned()],
                ..ValidationReport::default()
            }),
            ..task("b", ShardState::Failed)
        };
        let ended = tracker.task_changed(invalid, "p".to_owned());
        assert_eq!(names(ended.clone()), ["shard.failed", "wave.finished"]);
        assert_eq!(
            ended[0].detail["validation"]["failures"][0],
            "--verify-data orders: the data changed"
        );
        assert_eq!(
            ended[1].detail["validation"],
            json!({ "passed": 1, "failed": ["b"], "with_notes": ["a"] })
        );
        assert!(
            tracker
                .task_changed(task("b", ShardState::Failed), "p".to_owned())
                .is_empty(),
            "seen"
        );
        plan.state = PlanState::Halted.into();
        assert_eq!(names(tracker.plan_changed(plan)), ["rollout.halted"]);
    }

    #[test]
    fn a_plan_that_finished_with_failures_says_so_and_not_completed() {
        let mut tracker = Tracker::default();
        let mut plan = Plan {
            plan_id: "p".to_owned(),
            state: PlanState::Running.into(),
            ..Plan::default()
        };
        tracker.plan_changed(plan.clone());
        plan.state = PlanState::FinishedWithFailures.into();
        plan.state_reason = "1 shard(s) failed, below the threshold of 2: b".to_owned();
        let events = tracker.plan_changed(plan);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event, "rollout.finished_with_failures");
        assert_eq!(
            events[0].detail["reason"],
            "1 shard(s) failed, below the threshold of 2: b"
        );
    }

    #[test]
    fn a_finished_rollback_plan_says_so_and_names_the_plan_it_reverted() {
        let mut tracker = Tracker::default();
        let mut plan = Plan {
            plan_id: "r".to_owned(),
            state: PlanState::Running.into(),
            direction: Direction::Down.into(),
            rolls_back: "p".to_owned(),
            ..Plan::default()
        };
        tracker.plan_changed(plan.clone());
        plan.state = PlanState::Succeeded.into();
        let events = tracker.plan_changed(plan);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event, "rollout.rolled_back");
        assert_eq!(events[0].detail["rolls_back"], "p");
    }
}
