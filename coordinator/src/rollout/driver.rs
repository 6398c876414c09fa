//! The leader's loop. It follows the fleet through one watch ([`Model`]) and, after every batch
//! of changes (or a tick), advances each plan:
//!
//! 1. results of current claims end their tasks and release the claims (one transaction);
//!    results of superseded claims are dropped;
//! 2. a task whose claim vanished (its agent's lease lapsed) goes back to pending: it runs
//!    again under a new claim, and the old holder is fenced out by the shard's ledger;
//! 3. a running plan halts at its failure threshold, finishes when every task has ended, or
//!    dispatches the current wave's pending tasks within the per-wave and per-host caps: claim
//!    (create-if-absent, on the agent's lease), then task and assignment (one transaction,
//!    only while that claim stands);
//! 4. a cancelled plan cancels its pending tasks and withdraws running assignments (the
//!    agent's replica turns the withdrawal into a Cancel).
//!
//! Every write carries the leader's epoch; the first refused one ends the loop.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetshift_common::proto::v1::{
    Assignment, AssignmentResult, Direction, Dispatch, ErrorDetail, ErrorKind, MigrationSet, Plan,
    PlanState, ShardState, ShardTask,
};
use fleetshift_common::telemetry::traces;
use prost::Message;
use tokio_util::sync::CancellationToken;

use super::model::{Model, Seen};
use super::outcome::{self, RunOutcome};
use super::spans::{self, RolloutTrace};
use super::{
    RolloutError, assignment_id, plan_ended, plan_of_assignment, records, task_active, task_ended,
    task_failed, task_token,
};
use crate::claims;
use crate::metrics::rollouts::RolloutGauges;
use crate::store::{Condition, Epoch, FenceToken, Store, StoreError, Write, keys};

/// How often the leader looks again without a change to wake it.
const TICK: Duration = Duration::from_millis(500);

/// How often, at most, the leader publishes its rollout gauges (a tick publishes the last
/// state within `TICK` of a change).
const PUBLISH_EVERY: Duration = Duration::from_millis(250);

/// Leads rollouts until `stepped_down` is cancelled or a write shows the epoch is over.
/// The rollout gauges show what this leader sees while it leads, and nothing after.
pub async fn lead<S: Store + 'static>(
    store: Arc<S>,
    epoch: Epoch,
    stepped_down: CancellationToken,
    gauges: &RolloutGauges,
) {
    tracing::info!(epoch = epoch.0, "rollout driver started");
    lead_publishing(&*store, epoch, &stepped_down, gauges).await;
    gauges.clear();
}

async fn lead_publishing<S: Store>(
    store: &S,
    epoch: Epoch,
    stepped_down: &CancellationToken,
    gauges: &RolloutGauges,
) {
    loop {
        let outcome = tokio::select! {
            () = stepped_down.cancelled() => return,
            outcome = drive(store, epoch, gauges) => outcome,
        };
        match outcome {
            Err(RolloutError::Store(StoreError::NotLeader(_))) => {
                tracing::warn!(
                    epoch = epoch.0,
                    "no longer the leader; rollout driver stopped"
                );
                return;
            }
            Err(error) => {
                tracing::warn!(epoch = epoch.0, %error, "rollout driver interrupted; reloading");
            }
            Ok(()) => {}
        }
        tokio::select! {
            () = stepped_down.cancelled() => return,
            () = tokio::time::sleep(TICK) => {}
        }
    }
}

async fn drive<S: Store>(
    store: &S,
    epoch: Epoch,
    gauges: &RolloutGauges,
) -> Result<(), RolloutError> {
    let (model, revision) = Model::load(store).await?;
    let mut changes = store.watch(&keys::all(), revision).await?;
    let mut driver = Driver {
        store,
        epoch,
        model,
        withdrawn: HashSet::new(),
        halted: HashSet::new(),
    };
    let mut ticks = tokio::time::interval(TICK);
    let mut published = None;
    loop {
        tokio::select! {
            change = changes.next() => {
                let change = change.ok_or_else(|| StoreError::Unavailable("the watch ended".to_owned()))??;
                driver.model.apply(&change);
                while let Some(more) = changes.ready() {
                    driver.model.apply(&more?);
                }
            }
            _ = ticks.tick() => {}
        }
        driver.advance().await?;
        // Scrapes come every few seconds; a busy rollout steps hundreds of times a second.
        if published.is_none_or(|at: Instant| at.elapsed() >= PUBLISH_EVERY) {
            gauges.publish(&driver.model);
            published = Some(Instant::now());
        }
    }
}

struct Driver<'s, S> {
    store: &'s S,
    epoch: Epoch,
    model: Model,
    /// Assignments withdrawn by this leader (so each is withdrawn once).
    withdrawn: HashSet<String>,
    /// Plans this leader halted, before its model hears of it (their waves' spans ended there).
    halted: HashSet<String>,
}

fn now() -> Option<prost_types::Timestamp> {
    Some(std::time::SystemTime::now().into())
}

fn state_of(task: &ShardTask) -> ShardState {
    ShardState::try_from(task.state).unwrap_or(ShardState::Unspecified)
}

fn plan_state(plan: &Plan) -> PlanState {
    PlanState::try_from(plan.state).unwrap_or(PlanState::Unspecified)
}

/// The tasks of one wave of a plan (`tasks`, by shard).
fn wave_tasks(tasks: &BTreeMap<String, Seen<ShardTask>>, wave: u32) -> Vec<&ShardTask> {
    tasks
        .values()
        .map(|seen| &seen.value)
        .filter(|task| task.wave == wave)
        .collect()
}

impl<S: Store> Driver<'_, S> {
    async fn commit(
        &self,
        conditions: &[Condition],
        writes: &[Write],
    ) -> Result<Option<i64>, RolloutError> {
        Ok(self
            .store
            .commit(Some(self.epoch), conditions, writes)
            .await?)
    }

    async fn advance(&mut self) -> Result<(), RolloutError> {
        let plans: Vec<String> = self.model.plans.keys().cloned().collect();
        for plan_id in plans {
            let Some(plan) = self
                .model
                .plans
                .get(&plan_id)
                .map(|seen| seen.value.clone())
            else {
                continue;
            };
            let busy = self.model.tasks.get(&plan_id).is_some_and(|tasks| {
                tasks
                    .values()
                    .any(|task| !task_ended(state_of(&task.value)))
            });
            if plan_ended(plan_state(&plan)) && !busy {
                continue;
            }
            self.collect_results(&plan).await?;
            self.recover_lapsed(&plan).await?;
            match plan_state(&plan) {
                PlanState::Running => self.run(&plan).await?,
                PlanState::Cancelled => self.cancel(&plan).await?,
                _ => {}
            }
        }
        Ok(())
    }

    fn task(&self, plan: &str, shard: &str) -> Option<(ShardTask, i64)> {
        self.model
            .tasks
            .get(plan)?
            .get(shard)
            .map(|seen| (seen.value.clone(), seen.revision))
    }

    async fn collect_results(&mut self, plan: &Plan) -> Result<(), RolloutError> {
        let results: Vec<(String, _)> = self
            .model
            .results
            .iter()
            .filter(|(assignment, _)| plan_of_assignment(assignment) == plan.plan_id)
            .map(|(assignment, seen)| (assignment.clone(), seen.value.clone()))
            .collect();
        for (assignment, result) in results {
            let result_key = keys::result(&assignment);
            let current = self
                .task(&plan.plan_id, &result.shard_id)
                .filter(|(task, _)| {
                    task.fence_token == result.fence_token && task_active(state_of(task))
                });
            let Some((task, revision)) = current else {
                tracing::info!(%assignment, "dropping the result of a superseded claim");
                self.commit(&[], &[Write::Delete(result_key)]).await?;
                continue;
            };
            let ran = with_result(&task, &result);
            let finished = match outcome::of_result(&result, plan_state(plan)) {
                RunOutcome::Final(state) => ShardTask {
                    state: state.into(),
                    error: result.error.clone(),
                    finished_at: now(),
                    ..ran
                },
                RunOutcome::Interrupted(cause) => after_interruption(ran, cause, retry_bound(plan)),
            };
            let task_key = keys::task(&plan.plan_id, &task.shard_id);
            let writes = vec![
                Write::put(task_key.clone(), finished.encode_to_vec()),
                Write::Delete(keys::assignment(&task.agent_id, &assignment)),
                Write::Delete(result_key),
            ];
            let unchanged = Condition::ModifiedAt(task_key.clone(), revision);
            let ours = claims::held(&task.shard_id, task_token(&task));
            let with_release = [writes.as_slice(), &[claims::release(&task.shard_id)]].concat();
            let released = self
                .commit(&[unchanged.clone(), ours], &with_release)
                .await?;
            let committed = match released {
                Some(at) => {
                    self.model.forget_claim(&task.shard_id, at);
                    Some(at)
                }
                // The claim is gone already (or is not this task's): keep whatever is there.
                None => self.commit(&[unchanged], &writes).await?,
            };
            let Some(at) = committed else { continue };
            self.model.results.remove(&assignment);
            self.recorded(plan, &task, finished, at);
        }
        Ok(())
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
        // Looking at every task of the plan per ended task costs O(shards²) per rollout: only
        // when there are spans to record.
        if !traces::enabled() {
            return;
        }
        let Some(tasks) = self.model.tasks.get(&plan.plan_id) else {
            return;
        };
        let halted = plan_state(plan) == PlanState::Halted || self.halted.contains(&plan.plan_id);
        let in_wave = wave_tasks(tasks, wave);
        if !halted && in_wave.iter().all(|task| task_ended(state_of(task))) {
            spans::wave_ended(plan, wave, &in_wave);
        }
        let all_ended = tasks.values().all(|seen| task_ended(state_of(&seen.value)));
        if plan_state(plan) == PlanState::Cancelled && all_ended {
            spans::rollout_ended(plan, PlanState::Cancelled);
        }
    }

    async fn recover_lapsed(&mut self, plan: &Plan) -> Result<(), RolloutError> {
        let lapsed: Vec<(ShardTask, i64)> = self
            .model
            .tasks
            .get(&plan.plan_id)
            .into_iter()
            .flat_map(|tasks| tasks.values())
            .filter(|seen| {
                let task = &seen.value;
                task_active(state_of(task))
                    && self
                        .model
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
            let next = after_interruption(task.clone(), cause, retry_bound(plan));
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

    async fn run(&mut self, plan: &Plan) -> Result<(), RolloutError> {
        let Some(tasks) = self.model.tasks.get(&plan.plan_id) else {
            return Ok(());
        };
        let policy = plan.policy.clone().unwrap_or_default();
        let failed: Vec<&ShardTask> = tasks
            .values()
            .map(|seen| &seen.value)
            .filter(|task| task_failed(state_of(task)))
            .collect();
        if !failed.is_empty() && failed.len() >= policy.failure_threshold.max(1) as usize {
            let first = failed[0];
            let reason = format!(
                "{} shard(s) failed, threshold {}: {} ({}); nothing new is dispatched",
                failed.len(),
                policy.failure_threshold.max(1),
                first.shard_id,
                first
                    .error
                    .as_ref()
                    .map(|error| error.message.as_str())
                    .unwrap_or("no detail")
            );
            return self.finish(plan, PlanState::Halted, reason).await;
        }
        let wave = plan.waves.iter().find(|wave| {
            wave.shards.iter().any(|shard| {
                tasks
                    .get(&shard.shard_id)
                    .is_none_or(|seen| !task_ended(state_of(&seen.value)))
            })
        });
        let Some(wave) = wave else {
            if failed.is_empty() {
                return self.finish(plan, PlanState::Succeeded, String::new()).await;
            }
            let shards: Vec<&str> = failed.iter().map(|task| task.shard_id.as_str()).collect();
            let reason = format!(
                "{} shard(s) failed, below the threshold of {}: {}",
                failed.len(),
                policy.failure_threshold.max(1),
                shards.join(", ")
            );
            return self
                .finish(plan, PlanState::FinishedWithFailures, reason)
                .await;
        };
        let mut active_in_wave = wave
            .shards
            .iter()
            .filter(|shard| {
                tasks
                    .get(&shard.shard_id)
                    .is_some_and(|seen| task_active(state_of(&seen.value)))
            })
            .count();
        let mut active_per_host: HashMap<String, usize> = HashMap::new();
        for seen in self.model.tasks.values().flat_map(|tasks| tasks.values()) {
            if task_active(state_of(&seen.value)) {
                *active_per_host.entry(seen.value.host.clone()).or_default() += 1;
            }
        }
        let pending: Vec<(ShardTask, i64)> = wave
            .shards
            .iter()
            .filter_map(|shard| tasks.get(&shard.shard_id))
            .filter(|seen| state_of(&seen.value) == ShardState::Pending)
            .map(|seen| (seen.value.clone(), seen.revision))
            .collect();
        for (task, revision) in pending {
            if active_in_wave >= policy.max_concurrency_per_wave.max(1) as usize {
                break;
            }
            let on_host = active_per_host.entry(task.host.clone()).or_default();
            if *on_host >= policy.max_concurrency_per_host.max(1) as usize {
                continue;
            }
            if self.dispatch(plan, task, revision).await? {
                active_in_wave += 1;
                *on_host += 1;
            }
        }
        Ok(())
    }

    /// Claims the shard for the agent that announces it and hands it the task; false when the
    /// shard cannot run now (no agent, held elsewhere, lease lapsed, task changed).
    async fn dispatch(
        &mut self,
        plan: &Plan,
        task: ShardTask,
        revision: i64,
    ) -> Result<bool, RolloutError> {
        let Some((agent, lease)) = self.model.agent_of(&task.shard_id, &task.agent_id) else {
            return Ok(false);
        };
        let task_key = keys::task(&plan.plan_id, &task.shard_id);
        let token = match self
            .model
            .claims
            .get(&task.shard_id)
            .map(|seen| seen.value.clone())
        {
            Some(claim) if claim.name == agent && !self.claim_in_use(claim.token) => {
                // Claimed by a leader that stopped before handing the task over: carry on.
                claim.token
            }
            Some(_) => return Ok(false),
            None => {
                let unchanged = Condition::ModifiedAt(task_key.clone(), revision);
                let claimed = claims::for_task(
                    self.store,
                    self.epoch,
                    &task.shard_id,
                    &agent,
                    lease,
                    unchanged,
                )
                .await?;
                let Some(token) = claimed else {
                    return Ok(false);
                };
                let claim = claims::Holder {
                    name: agent.clone(),
                    token,
                };
                self.model.record_claim(&task.shard_id, claim, token.get());
                token
            }
        };
        let assignment_id = assignment_id(&plan.plan_id, &task.shard_id, token);
        let direction = match plan.direction() {
            Direction::Down => Direction::Down,
            Direction::Up | Direction::Unspecified => Direction::Up,
        };
        let claimed = ShardTask {
            state: ShardState::Claimed.into(),
            fence_token: token.get(),
            agent_id: agent.clone(),
            error: None,
            started_at: now(),
            finished_at: None,
            ..task.clone()
        };
        let running = ShardTask {
            state: ShardState::Running.into(),
            ..claimed.clone()
        };
        let dispatch = Dispatch {
            assignment: Some(Assignment {
                assignment_id: assignment_id.clone(),
                plan_id: plan.plan_id.clone(),
                shard_id: task.shard_id.clone(),
                fence_token: token.get(),
                direction: direction.into(),
                target_version: if task.target_version.is_empty() {
                    plan.target_version.clone()
                } else {
                    task.target_version.clone()
                },
                revert_to: task.previous_version.clone(),
                migration_set: Some(MigrationSet {
                    format: plan.set_format.clone(),
                    digest: plan.set_digest.clone(),
                    files: Vec::new(),
                }),
                limits: plan.limits,
                duties: plan.duties.clone(),
                trace_context: RolloutTrace::of(plan)
                    .map(|trace| trace.carrier_for_run(&task.shard_id, token))
                    .unwrap_or_default(),
            }),
            task: Some(running),
        };
        let committed = self
            .store
            .commit(
                Some(self.epoch),
                &[
                    claims::held(&task.shard_id, token),
                    Condition::ModifiedAt(task_key.clone(), revision),
                ],
                &[
                    Write::put(task_key, claimed.encode_to_vec()),
                    Write::Put {
                        key: keys::assignment(&agent, &assignment_id),
                        value: dispatch.encode_to_vec(),
                        lease: Some(lease),
                    },
                ],
            )
            .await;
        match committed {
            Ok(Some(at)) => {
                tracing::info!(plan = %plan.plan_id, shard = %task.shard_id, %agent, %token, "shard task dispatched");
                self.model
                    .record_task(&plan.plan_id, &task.shard_id, claimed, at);
                Ok(true)
            }
            Ok(None) | Err(StoreError::LeaseExpired(_)) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    fn claim_in_use(&self, token: FenceToken) -> bool {
        self.model
            .tasks
            .values()
            .flat_map(|tasks| tasks.values())
            .any(|seen| seen.value.fence_token == token.get() && task_active(state_of(&seen.value)))
    }

    async fn finish(
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
        for wave in &plan.waves {
            let in_wave = wave_tasks(tasks, wave.index);
            if in_wave.iter().any(|task| !task_ended(state_of(task))) {
                spans::wave_halted(plan, wave.index, &in_wave, &plan.state_reason);
            }
        }
    }

    async fn cancel(&mut self, plan: &Plan) -> Result<(), RolloutError> {
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

/// How often a task of `plan` may be interrupted and run again.
fn retry_bound(plan: &Plan) -> u32 {
    outcome::max_retries(
        plan.policy
            .as_ref()
            .map_or(0, |policy| policy.max_shard_retries),
    )
}

/// `task` with what its run reported: the version it reached, its figures, its backup (a
/// retry that took none keeps the earlier one), the version before the plan (the first run's),
/// its baselines and rollback.
fn with_result(task: &ShardTask, result: &AssignmentResult) -> ShardTask {
    ShardTask {
        current_version: result.current_version.clone(),
        metrics: result.metrics,
        backup: result.backup.clone().or_else(|| task.backup.clone()),
        // The first run saw the shard before the plan; a retry may see it half-way.
        previous_version: if task.previous_version.is_empty() {
            result.previous_version.clone()
        } else {
            task.previous_version.clone()
        },
        baselines: result.baselines.clone(),
        rollback: result.rollback.clone(),
        ..task.clone()
    }
}

/// `task` after a run interrupted by `cause`: pending again with no claim (the next dispatch
/// claims it anew, under a newer token), or failed once its interruptions exceed `bound`.
fn after_interruption(task: ShardTask, cause: String, bound: u32) -> ShardTask {
    let interruptions = task.interruptions.saturating_add(1);
    let mut causes = task.interruption_causes.clone();
    causes.push(cause);
    if interruptions > bound {
        let message = outcome::retries_exhausted(&task.shard_id, bound, &causes);
        return ShardTask {
            state: ShardState::Failed.into(),
            error: Some(ErrorDetail {
                kind: ErrorKind::Interrupted.into(),
                message,
            }),
            interruptions,
            interruption_causes: causes,
            finished_at: now(),
            ..task
        };
    }
    ShardTask {
        state: ShardState::Pending.into(),
        fence_token: 0,
        error: None,
        started_at: None,
        finished_at: None,
        interruptions,
        interruption_causes: causes,
        ..task
    }
}
