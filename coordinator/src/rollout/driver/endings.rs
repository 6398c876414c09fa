//! How tasks and plans end, for the leader's loop: results collected and claims released,
//! lapsed claims recovered, plans finished or halted, cancelled plans wound down, and the
//! spans of waves and rollouts that end with them.

use fleetshift_common::proto::v1::{AssignmentResult, Plan, PlanState, ShardState, ShardTask};
use fleetshift_common::telemetry::traces;
use prost::Message;

use super::{Driver, now, plan_state};
use crate::claims;
use crate::rollout::model::PlanTasks;
use crate::rollout::outcome::{self, RunOutcome};
use crate::rollout::{
    RolloutError, assignment_id, plan_of_assignment, records, state_of, task_active, task_ended,
    task_token,
};
use crate::rollout::{canary, spans, waves};
use crate::store::{Condition, Store, Transaction, Write, grouped, keys};

impl<S: Store> Driver<'_, S> {
    fn task(&self, plan: &str, shard: &str) -> Option<(ShardTask, i64)> {
        self.model
            .tasks
            .get(plan)?
            .get(shard)
            .map(|seen| (seen.value.clone(), seen.revision))
    }

    /// Ends the tasks whose agents reported, in as few commits as the store takes: each
    /// ending writes the task, deletes its assignment and result and releases its claim,
    /// while the task is as the model saw it and the claim is still its own. An ending whose
    /// claim is gone already (it lapsed after the result came) goes in a second round without
    /// the release. Results of superseded claims are dropped.
    pub(super) async fn collect_results(&mut self, plan: &Plan) -> Result<(), RolloutError> {
        let results: Vec<(String, _)> = self
            .model
            .results
            .iter()
            .filter(|(assignment, _)| plan_of_assignment(assignment) == plan.plan_id)
            .map(|(assignment, seen)| (assignment.clone(), seen.value.clone()))
            .collect();
        let mut endings = Vec::new();
        let mut superseded = Vec::new();
        for (assignment, result) in results {
            let current = self
                .task(&plan.plan_id, &result.shard_id)
                .filter(|(task, _)| {
                    task.fence_token == result.fence_token && task_active(state_of(task))
                });
            let Some((task, revision)) = current else {
                tracing::info!(%assignment, "dropping the result of a superseded claim");
                superseded.push(Transaction {
                    conditions: Vec::new(),
                    writes: vec![Write::Delete(keys::result(&assignment))],
                });
                continue;
            };
            let finished = self.finished(plan, &task, &result).await?;
            endings.push(Ending {
                assignment,
                task,
                revision,
                finished,
            });
        }
        let releasing: Vec<Transaction> = endings
            .iter()
            .map(|ending| ending.transaction(true))
            .chain(superseded)
            .collect();
        let applied = grouped::commit(self.store, Some(self.epoch), &releasing).await?;
        let mut claim_gone = Vec::new();
        for (ending, at) in endings.into_iter().zip(applied) {
            match at {
                Some(at) => {
                    self.model.forget_claim(&ending.task.shard_id, at);
                    self.ended(plan, ending, at);
                }
                None => claim_gone.push(ending),
            }
        }
        // Rare: the claim lapsed (or the task changed) after the result came.
        let keeping: Vec<Transaction> = claim_gone
            .iter()
            .map(|ending| ending.transaction(false))
            .collect();
        let applied = grouped::commit(self.store, Some(self.epoch), &keeping).await?;
        for (ending, at) in claim_gone.into_iter().zip(applied) {
            if let Some(at) = at {
                self.ended(plan, ending, at);
            }
        }
        Ok(())
    }

    /// `task` as `result` leaves it.
    async fn finished(
        &self,
        plan: &Plan,
        task: &ShardTask,
        result: &AssignmentResult,
    ) -> Result<ShardTask, RolloutError> {
        let ran = outcome::with_result(task, result);
        let finished = match outcome::of_result(result, plan_state(plan)) {
            RunOutcome::Final(state) => ShardTask {
                state: state.into(),
                error: result.error.clone(),
                finished_at: now(),
                ..ran
            },
            RunOutcome::Interrupted(cause) => {
                outcome::after_interruption(ran, cause, outcome::retry_bound(plan))
            }
            RunOutcome::Waits(why) => outcome::after_window(ran, why),
        };
        self.compared_with_canary(plan, finished).await
    }

    /// After `ending` committed at `at`.
    fn ended(&mut self, plan: &Plan, ending: Ending, at: i64) {
        self.model.results.remove(&ending.assignment);
        self.recorded(plan, &ending.task, ending.finished, at);
    }

    /// `task`, when it succeeded, compared with the plan's canary at its version.
    async fn compared_with_canary(
        &self,
        plan: &Plan,
        task: ShardTask,
    ) -> Result<ShardTask, RolloutError> {
        if state_of(&task) != ShardState::Succeeded {
            return Ok(task);
        }
        let tasks = self.model.tasks.get(&plan.plan_id);
        let candidates = tasks
            .into_iter()
            .flat_map(|tasks| tasks.candidates(&task.current_version));
        // A canary is a task that succeeded, never one still running: never `task` itself.
        let Some(canary) = canary::of(plan, &task, candidates).cloned() else {
            return Ok(task);
        };
        Ok(canary::compare(self.store, plan, task, &canary).await?)
    }

    /// After a commit moved `task` (as it was) to `next`: the log line, the run's span, the
    /// model, and the wave's span when the task ended.
    fn recorded(&mut self, plan: &Plan, task: &ShardTask, next: ShardTask, at: i64) {
        let state = state_of(&next);
        let wave = next.wave;
        if state == ShardState::Pending {
            let cause = next.interruption_causes.last().map_or("", String::as_str);
            tracing::warn!(plan = %plan.plan_id, shard = %task.shard_id, agent = %task.agent_id, token = %task_token(task), interruptions = next.interruptions, %cause, "shard task interrupted; it runs again under a new claim");
            spans::run_interrupted(plan, task, cause);
        } else {
            tracing::info!(plan = %plan.plan_id, shard = %task.shard_id, state = ?state, "shard task ended");
            spans::run_ended(plan, &next);
        }
        self.model
            .record_task(&plan.plan_id, &task.shard_id, next, at);
        if task_ended(state) {
            self.task_ended(plan, wave);
        }
    }

    /// After a commit ended a task of wave `wave`: the wave's span when that was its last
    /// task, and a cancelled rollout's when it was the plan's.
    fn task_ended(&self, plan: &Plan, wave: u32) {
        // Looking at every task of the wave per ended task costs O(shards²) per rollout: only
        // when there are spans to record.
        if !traces::enabled() {
            return;
        }
        let Some(tasks) = self.model.tasks.get(&plan.plan_id) else {
            return;
        };
        let halted = plan_state(plan) == PlanState::Halted || self.halted.contains(&plan.plan_id);
        let progress = waves::Progress::new(plan, |shard| tasks.get(shard).map(|seen| &seen.value));
        let in_wave = progress.tasks_of(wave);
        if !halted && in_wave.iter().all(|task| task_ended(state_of(task))) {
            spans::wave_ended(plan, wave, &in_wave);
        }
        if plan_state(plan) == PlanState::Cancelled && tasks.unended() == 0 {
            spans::rollout_ended(plan, PlanState::Cancelled);
        }
    }

    pub(super) async fn recover_lapsed(&mut self, plan: &Plan) -> Result<(), RolloutError> {
        let lapsed: Vec<(ShardTask, i64)> = self
            .model
            .tasks
            .get(&plan.plan_id)
            .into_iter()
            .flat_map(PlanTasks::active)
            .filter(|seen| {
                let task = &seen.value;
                self.model
                    .claims
                    .get(&task.shard_id)
                    .is_none_or(|claim| claim.value.token != task_token(task))
            })
            .map(|seen| (seen.value.clone(), seen.revision))
            .collect();
        for (task, revision) in lapsed {
            let assignment = assignment_id(&plan.plan_id, &task.shard_id, task_token(&task));
            if self.model.results.contains_key(&assignment) {
                continue;
            }
            let cause = outcome::lapsed_cause(&task.agent_id, task_token(&task));
            let next = outcome::after_interruption(task.clone(), cause, outcome::retry_bound(plan));
            let key = keys::task(&plan.plan_id, &task.shard_id);
            let committed = self
                .commit(
                    &[Condition::ModifiedAt(key.clone(), revision)],
                    &[Write::put(key, next.encode_to_vec())],
                )
                .await?;
            if let Some(at) = committed {
                self.recorded(plan, &task, next, at);
            }
        }
        Ok(())
    }

    pub(super) async fn finish(
        &mut self,
        plan: &Plan,
        state: PlanState,
        reason: String,
    ) -> Result<(), RolloutError> {
        let updated = records::update_plan(self.store, &plan.plan_id, Some(self.epoch), |stored| {
            if plan_state(stored) != PlanState::Running {
                return Err(RolloutError::NotNow("changed meanwhile".to_owned()));
            }
            stored.state = state.into();
            stored.state_reason.clone_from(&reason);
            Ok(())
        })
        .await;
        match updated {
            Ok(ended) => {
                tracing::info!(plan = %plan.plan_id, ?state, %reason, "rollout ended");
                if state == PlanState::Halted {
                    self.halted.insert(plan.plan_id.clone());
                    self.waves_halted(&ended);
                }
                spans::rollout_ended(&ended, state);
                Ok(())
            }
            // An operator got there first; the next round sees their change.
            Err(RolloutError::NotNow(_) | RolloutError::Contended(_)) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// The spans of the waves a halt cut short: begun, with tasks that will never end.
    fn waves_halted(&self, plan: &Plan) {
        let Some(tasks) = self.model.tasks.get(&plan.plan_id) else {
            return;
        };
        let progress = waves::Progress::new(plan, |shard| tasks.get(shard).map(|seen| &seen.value));
        for wave in &plan.waves {
            let in_wave: Vec<&ShardTask> = progress.tasks_in(wave).collect();
            if in_wave.iter().any(|task| !task_ended(state_of(task))) {
                spans::wave_halted(plan, wave.index, &in_wave, &plan.state_reason);
            }
        }
    }

    pub(super) async fn cancel(&mut self, plan: &Plan) -> Result<(), RolloutError> {
        let Some(tasks) = self.model.tasks.get(&plan.plan_id) else {
            return Ok(());
        };
        let open: Vec<(ShardTask, i64)> = tasks
            .values()
            .filter(|seen| !task_ended(state_of(&seen.value)))
            .map(|seen| (seen.value.clone(), seen.revision))
            .collect();
        for (task, revision) in open {
            if task_active(state_of(&task)) {
                let assignment = assignment_id(&plan.plan_id, &task.shard_id, task_token(&task));
                if self.withdrawn.insert(assignment.clone()) {
                    self.commit(
                        &[],
                        &[Write::Delete(keys::assignment(&task.agent_id, &assignment))],
                    )
                    .await?;
                }
                continue;
            }
            let cancelled = ShardTask {
                state: ShardState::Cancelled.into(),
                ..task.clone()
            };
            let key = keys::task(&plan.plan_id, &task.shard_id);
            if let Some(at) = self
                .commit(
                    &[Condition::ModifiedAt(key.clone(), revision)],
                    &[Write::put(key, cancelled.encode_to_vec())],
                )
                .await?
            {
                let wave = cancelled.wave;
                self.model
                    .record_task(&plan.plan_id, &task.shard_id, cancelled, at);
                self.task_ended(plan, wave);
            }
        }
        Ok(())
    }
}

/// A task whose agent reported: the task as the model saw it (at `revision`) and as the
/// result leaves it.
struct Ending {
    assignment: String,
    task: ShardTask,
    revision: i64,
    finished: ShardTask,
}

impl Ending {
    /// The commit that records it while the task is unchanged, and, with `release`, gives
    /// up its claim while the claim is still the task's.
    fn transaction(&self, release: bool) -> Transaction {
        let shard = &self.task.shard_id;
        let task_key = keys::task(plan_of_assignment(&self.assignment), shard);
        let mut conditions = vec![Condition::ModifiedAt(task_key.clone(), self.revision)];
        let mut writes = vec![
            Write::put(task_key, self.finished.encode_to_vec()),
            Write::Delete(keys::assignment(&self.task.agent_id, &self.assignment)),
            Write::Delete(keys::result(&self.assignment)),
        ];
        if release {
            conditions.push(claims::held(shard, task_token(&self.task)));
            writes.push(claims::release(shard));
        }
        Transaction { conditions, writes }
    }
}
