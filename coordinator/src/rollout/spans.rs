//! The coordinator's spans of a rollout: the rollout itself (the trace's root), each wave, and
//! each run of a shard task, under which the agent's spans of that run hang.
//!
//! No replica can hold these open (a rollout outlives leaders), so their ids are fixed in
//! advance: the root's is stored in the plan (`trace_context`), and every other one is derived
//! from it, so whichever replica leads computes the same ids. A run's id goes to the agent in
//! its assignment before the run starts. Each span is recorded, with its start and end times,
//! by the leader whose commit ends it:
//!
//! - a run: the commit that ends its task with the agent's result, or returns the task to
//!   pending because the claim lapsed;
//! - a wave: the commit that ends its last task; for a halted plan, the halt, since its
//!   pending tasks never run;
//! - the rollout: the commit that ends the plan (succeeded or halted); for a cancelled plan,
//!   the commit that ends its last task. A plan cancelled before it started has no trace.

use std::collections::HashMap;
use std::time::SystemTime;

use fleetshift_common::proto::v1::{Plan, PlanState, ShardState, ShardTask};
use fleetshift_common::telemetry::traces::context;
use fleetshift_common::telemetry::traces::enabled;
use fleetshift_common::telemetry::traces::finished::{self, FinishedSpan};
use opentelemetry::KeyValue;
use opentelemetry::trace::{SpanContext, SpanId, TraceState};
use sha2::{Digest, Sha256};

use super::task_token;
use super::waves;
use crate::store::FenceToken;

/// A new plan's trace context: a fresh trace, whose root is the rollout's span.
pub fn new_trace_context() -> HashMap<String, String> {
    context::carrier_of(&finished::new_root())
}

/// The ids of one plan's spans.
#[derive(Debug, Clone)]
pub struct RolloutTrace {
    root: SpanContext,
}

impl RolloutTrace {
    /// `None` for a plan stored without a trace context.
    pub fn of(plan: &Plan) -> Option<Self> {
        context::span_in(&plan.trace_context).map(|root| Self { root })
    }

    /// The span of wave `index`.
    pub fn wave(&self, index: u32) -> SpanContext {
        self.derived("wave", &[&index.to_be_bytes()])
    }

    /// The span of the run of `shard`'s task under claim `token`.
    pub fn run(&self, shard: &str, token: FenceToken) -> SpanContext {
        self.derived("run", &[shard.as_bytes(), &token.get().to_be_bytes()])
    }

    /// What an assignment carries so the agent's spans hang under the run's.
    pub fn carrier_for_run(&self, shard: &str, token: FenceToken) -> HashMap<String, String> {
        context::carrier_of(&self.run(shard, token))
    }

    fn derived(&self, kind: &str, parts: &[&[u8]]) -> SpanContext {
        let mut hash = Sha256::new();
        hash.update(self.root.span_id().to_bytes());
        hash.update(kind.as_bytes());
        for part in parts {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part);
        }
        let digest = hash.finalize();
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        if id == [0; 8] {
            id[7] = 1;
        }
        SpanContext::new(
            self.root.trace_id(),
            SpanId::from_bytes(id),
            self.root.trace_flags(),
            false,
            TraceState::default(),
        )
    }

    /// The rollout's span, ended at `end` in `state`.
    fn rollout_span(&self, plan: &Plan, state: PlanState, end: SystemTime) -> FinishedSpan {
        let failed = matches!(
            state,
            PlanState::Halted | PlanState::Cancelled | PlanState::FinishedWithFailures
        );
        FinishedSpan {
            name: "rollout",
            id: self.root.clone(),
            parent: None,
            start: time_of(plan.created_at.as_ref()).unwrap_or(end),
            end,
            attributes: vec![
                KeyValue::new("fleetshift.plan", plan.plan_id.clone()),
                KeyValue::new("fleetshift.author", plan.author.clone()),
                KeyValue::new("fleetshift.target_version", plan.target_version.clone()),
                KeyValue::new("fleetshift.direction", plan.direction().as_str_name()),
                KeyValue::new("fleetshift.state", state.as_str_name()),
                KeyValue::new("fleetshift.waves", plan.waves.len() as i64),
                KeyValue::new("fleetshift.shards", waves::shard_count(plan) as i64),
            ],
            error: failed.then(|| {
                if plan.state_reason.is_empty() {
                    state.as_str_name().to_owned()
                } else {
                    plan.state_reason.clone()
                }
            }),
        }
    }

    /// Wave `index`'s span over the runs of `tasks` (its tasks), ended at the last run's end or
    /// at `halted` (when, and why).
    fn wave_span(
        &self,
        plan: &Plan,
        index: u32,
        tasks: &[&ShardTask],
        halted: Option<(SystemTime, &str)>,
    ) -> Option<FinishedSpan> {
        let start = tasks
            .iter()
            .filter_map(|task| time_of(task.started_at.as_ref()))
            .min()?;
        let end = match halted {
            Some((at, _)) => at,
            None => tasks
                .iter()
                .filter_map(|task| time_of(task.finished_at.as_ref()))
                .max()
                .unwrap_or(start),
        };
        let failed = tasks
            .iter()
            .filter(|task| matches!(task.state(), ShardState::Failed | ShardState::RolledBack))
            .count();
        let error = match halted {
            Some((_, reason)) => Some(format!("the plan halted: {reason}")),
            None => (failed > 0).then(|| format!("{failed} shard(s) failed")),
        };
        Some(FinishedSpan {
            name: "wave",
            id: self.wave(index),
            parent: Some(self.root.span_id()),
            start,
            end,
            attributes: vec![
                KeyValue::new("fleetshift.plan", plan.plan_id.clone()),
                KeyValue::new("fleetshift.wave", i64::from(index)),
                KeyValue::new("fleetshift.shards", tasks.len() as i64),
                KeyValue::new("fleetshift.shards_failed", failed as i64),
            ],
            error,
        })
    }

    /// The span of `task`'s run, ended at `end`; `error` says why it did not succeed.
    fn run_span(
        &self,
        plan: &Plan,
        task: &ShardTask,
        end: SystemTime,
        error: Option<String>,
    ) -> FinishedSpan {
        FinishedSpan {
            name: "shard task",
            id: self.run(&task.shard_id, task_token(task)),
            parent: Some(self.wave(task.wave).span_id()),
            start: time_of(task.started_at.as_ref()).unwrap_or(end),
            end,
            attributes: vec![
                KeyValue::new("fleetshift.plan", plan.plan_id.clone()),
                KeyValue::new("fleetshift.shard", task.shard_id.clone()),
                KeyValue::new("fleetshift.agent", task.agent_id.clone()),
                KeyValue::new("fleetshift.host", task.host.clone()),
                KeyValue::new("fleetshift.fence", task.fence_token),
                KeyValue::new("fleetshift.wave", i64::from(task.wave)),
                KeyValue::new("fleetshift.state", task.state().as_str_name()),
                KeyValue::new("fleetshift.current_version", task.current_version.clone()),
            ],
            error,
        }
    }
}

// Each of these records a span as its leader's commit ends it; each does nothing when traces
// are off or the plan has no trace context.

/// A run that ended with its agent's result (`task` as committed).
pub fn run_ended(plan: &Plan, task: &ShardTask) {
    let Some(trace) = traced(plan) else { return };
    let end = time_of(task.finished_at.as_ref()).unwrap_or_else(SystemTime::now);
    let error = match task.state() {
        ShardState::Succeeded => None,
        state => Some(
            task.error
                .as_ref()
                .map(|error| error.message.clone())
                .unwrap_or_else(|| state.as_str_name().to_owned()),
        ),
    };
    finished::record(trace.run_span(plan, task, end, error));
}

/// A run interrupted by `cause` (`task` as it was before): the task runs again under a new
/// claim.
pub fn run_interrupted(plan: &Plan, task: &ShardTask, cause: &str) {
    let Some(trace) = traced(plan) else { return };
    let reason = format!("interrupted: {cause}; the task runs again under a new claim");
    finished::record(trace.run_span(plan, task, SystemTime::now(), Some(reason)));
}

/// Wave `index` whose tasks (`tasks`) have all ended.
pub fn wave_ended(plan: &Plan, index: u32, tasks: &[&ShardTask]) {
    let Some(trace) = traced(plan) else { return };
    if let Some(span) = trace.wave_span(plan, index, tasks, None) {
        finished::record(span);
    }
}

/// Wave `index`, cut short by the plan's halt.
pub fn wave_halted(plan: &Plan, index: u32, tasks: &[&ShardTask], reason: &str) {
    let Some(trace) = traced(plan) else { return };
    let halted = Some((SystemTime::now(), reason));
    if let Some(span) = trace.wave_span(plan, index, tasks, halted) {
        finished::record(span);
    }
}

/// The rollout, ended in `state` (`plan.state_reason` says why, when it failed).
pub fn rollout_ended(plan: &Plan, state: PlanState) {
    let Some(trace) = traced(plan) else { return };
    finished::record(trace.rollout_span(plan, state, SystemTime::now()));
}

fn traced(plan: &Plan) -> Option<RolloutTrace> {
    if enabled() {
        RolloutTrace::of(plan)
    } else {
        None
    }
}

fn time_of(timestamp: Option<&prost_types::Timestamp>) -> Option<SystemTime> {
    timestamp.and_then(|timestamp| SystemTime::try_from(*timestamp).ok())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fleetshift_common::proto::v1::{ErrorDetail, Wave};

    use super::*;

    fn plan() -> Plan {
        Plan {
            plan_id: "p1".to_owned(),
            trace_context: new_trace_context(),
            created_at: Some(SystemTime::UNIX_EPOCH.into()),
            waves: vec![Wave {
                index: 0,
                shards: vec![ShardTask::default(), ShardTask::default()],
            }],
            ..Plan::default()
        }
    }

    fn at(seconds: u64) -> Option<prost_types::Timestamp> {
        Some((SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)).into())
    }

    fn run(shard: &str, state: ShardState, started: u64, finished: u64) -> ShardTask {
        ShardTask {
            shard_id: shard.to_owned(),
            state: state.into(),
            fence_token: 42,
            agent_id: "a".to_owned(),
            started_at: at(started),
            finished_at: at(finished),
            ..ShardTask::default()
        }
    }

    #[test]
    fn every_replica_derives_the_same_distinct_ids_under_the_stored_root() {
        let plan = plan();
        let (first, second) = (
            RolloutTrace::of(&plan).expect("traced"),
            RolloutTrace::of(&plan.clone()).expect("traced"),
        );
        assert_eq!(first.wave(0).span_id(), second.wave(0).span_id());
        assert_eq!(
            first.run("s1", FenceToken::from_raw(42)).span_id(),
            second.run("s1", FenceToken::from_raw(42)).span_id()
        );
        let ids = [
            first.root.span_id(),
            first.wave(0).span_id(),
            first.wave(1).span_id(),
            first.run("s1", FenceToken::from_raw(42)).span_id(),
            first.run("s1", FenceToken::from_raw(43)).span_id(),
            first.run("s2", FenceToken::from_raw(42)).span_id(),
        ];
        for (index, id) in ids.iter().enumerate() {
            assert!(!ids[index + 1..].contains(id), "{ids:?}");
        }
        let other = RolloutTrace::of(&Plan {
            trace_context: new_trace_context(),
            ..plan.clone()
        })
        .expect("traced");
        assert_ne!(other.wave(0).trace_id(), first.wave(0).trace_id());
        assert_ne!(other.wave(0).span_id(), first.wave(0).span_id());
    }

    #[test]
    fn the_carrier_for_a_run_names_the_run_span_in_the_rollouts_trace() {
        let trace = RolloutTrace::of(&plan()).expect("traced");
        let carried =
            context::span_in(&trace.carrier_for_run("s1", FenceToken::from_raw(7))).expect("valid");
        assert_eq!(carried.trace_id(), trace.root.trace_id());
        assert_eq!(
            carried.span_id(),
            trace.run("s1", FenceToken::from_raw(7)).span_id()
        );
    }

    #[test]
    fn spans_nest_rollout_wave_run_and_keep_the_stored_times() {
        let plan = plan();
        let trace = RolloutTrace::of(&plan).expect("traced");
        let failed = ShardTask {
            error: Some(ErrorDetail {
                message: "relation exists".to_owned(),
                ..ErrorDetail::default()
            }),
            ..run("s2", ShardState::Failed, 12, 30)
        };
        let done = run("s1", ShardState::Succeeded, 10, 20);
        let wave = trace
            .wave_span(&plan, 0, &[&done, &failed], None)
            .expect("started");
        assert_eq!(wave.parent, Some(trace.root.span_id()));
        assert_eq!(wave.start, SystemTime::UNIX_EPOCH + Duration::from_secs(10));
        assert_eq!(wave.end, SystemTime::UNIX_EPOCH + Duration::from_secs(30));
        assert_eq!(wave.error.as_deref(), Some("1 shard(s) failed"));
        let end = SystemTime::UNIX_EPOCH + Duration::from_secs(30);
        let run = trace.run_span(&plan, &failed, end, Some("relation exists".to_owned()));
        assert_eq!(run.parent, Some(wave.id.span_id()));
        assert_eq!(
            run.id.span_id(),
            trace.run("s2", FenceToken::from_raw(42)).span_id()
        );
        let rollout = trace.rollout_span(&plan, PlanState::Succeeded, end);
        assert_eq!(rollout.parent, None);
        assert_eq!(rollout.start, SystemTime::UNIX_EPOCH);
        assert_eq!(rollout.error, None);
    }

    #[test]
    fn a_wave_no_task_of_which_started_has_no_span() {
        let plan = plan();
        let trace = RolloutTrace::of(&plan).expect("traced");
        let pending = ShardTask::default();
        assert!(trace.wave_span(&plan, 0, &[&pending], None).is_none());
    }
}
