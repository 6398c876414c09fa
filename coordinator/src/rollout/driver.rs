//! The leader's loop. It follows the fleet through one watch ([`Model`]) and, after every batch
//! of changes (or a tick), advances each plan:
//!
//! 1. results of current claims end their tasks and release the claims (one transaction);
//!    results of superseded claims are dropped;
//! 2. a task whose claim vanished (its agent's lease lapsed) goes back to pending: it runs
//!    again under a new claim, and the old holder is fenced out by the shard's ledger;
//! 3. a running plan halts at its failure threshold, finishes when every task has ended, or
//!    dispatches the current wave's pending tasks within the per-wave and per-host caps, those
//!    of one step together (their store round trips overlap): claim (create-if-absent, on the
//!    agent's lease), then task and assignment (one transaction, only while that claim stands);
//! 4. a cancelled plan cancels its pending tasks and withdraws running assignments (the
//!    agent's replica turns the withdrawal into a Cancel).
//!
//! Then, when something it follows changed, the reconciler keeps the fleet at its targets
//! ([`crate::targets::reconcile`]).
//!
//! Every write carries the leader's epoch; the first refused one ends the loop.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetshift_common::proto::v1::{
    Assignment, Direction, Dispatch, MigrationSet, Plan, PlanState, RevisionDuration, ShardState,
    ShardTask,
};
use prost::Message;
use tokio_util::sync::CancellationToken;

mod endings;
mod phased;
#[cfg(test)]
mod tests;

use super::model::{Model, PlanTasks};
use super::outcome::{self};
use super::spans::RolloutTrace;
use super::{RolloutError, assignment_id, plan_ended, state_of};
use super::{phases, schedule, waves};
use crate::claims;
use crate::metrics::rollouts::RolloutGauges;
use crate::store::{
    Condition, Epoch, FenceToken, LeaseId, Store, StoreError, Transaction, Write, grouped, keys,
};
use crate::targets::reconcile::Reconciler;

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
    while !stepped_down.is_cancelled() {
        match drive(store, epoch, stepped_down, gauges).await {
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

/// Follows the fleet and advances every plan after each batch of changes, until
/// `stepped_down`: it is heeded between steps, never in the middle of one.
async fn drive<S: Store>(
    store: &S,
    epoch: Epoch,
    stepped_down: &CancellationToken,
    gauges: &RolloutGauges,
) -> Result<(), RolloutError> {
    // Reads only: dropping them when the leadership ends cuts nothing in half.
    let loaded = tokio::select! {
        () = stepped_down.cancelled() => return Ok(()),
        loaded = Model::load(store) => loaded?,
    };
    let (model, revision) = loaded;
    let everything = keys::all();
    let mut changes = tokio::select! {
        () = stepped_down.cancelled() => return Ok(()),
        changes = store.watch(&everything, revision) => changes?,
    };
    let mut driver = Driver {
        store,
        epoch,
        model,
        withdrawn: HashSet::new(),
        halted: HashSet::new(),
    };
    let mut reconciler = Reconciler::default();
    let mut ticks = tokio::time::interval(TICK);
    let mut published = None;
    loop {
        tokio::select! {
            () = stepped_down.cancelled() => return Ok(()),
            change = changes.next() => {
                let change = change.ok_or_else(|| StoreError::Unavailable("the watch ended".to_owned()))??;
                reconciler.heed(&change.key);
                driver.model.apply(&change);
                while let Some(more) = changes.ready() {
                    let more = more?;
                    reconciler.heed(&more.key);
                    driver.model.apply(&more);
                }
            }
            _ = ticks.tick() => {}
        }
        driver.advance().await?;
        if reconciler.due(Instant::now()) {
            reconciler.pass(store, epoch, &driver.model).await?;
        }
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

fn plan_state(plan: &Plan) -> PlanState {
    PlanState::try_from(plan.state).unwrap_or(PlanState::Unspecified)
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
                .map(|seen| Arc::clone(&seen.value))
            else {
                continue;
            };
            let busy = self
                .model
                .tasks
                .get(&plan_id)
                .is_some_and(|tasks| tasks.unended() > 0);
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

    async fn run(&mut self, plan: &Plan) -> Result<(), RolloutError> {
        let Some(tasks) = self.model.tasks.get_mut(&plan.plan_id) else {
            return Ok(());
        };
        // The wave the rollout works on, and where in it the walk for work starts.
        let current = tasks.current_wave(plan);
        let open = current.map_or(0, |wave| tasks.first_open(wave));
        let Some(tasks) = self.model.tasks.get(&plan.plan_id) else {
            return Ok(());
        };
        let policy = plan.policy.clone().unwrap_or_default();
        let failed: Vec<&ShardTask> = tasks.failed().collect();
        if let Some(reason) = outcome::halt_reason(&failed, &policy) {
            return self.finish(plan, PlanState::Halted, reason).await;
        }
        let Some(wave) = current else {
            let (state, mut reason) = outcome::plan_end(&failed, &policy);
            if let Some(next) = phases::next(plan) {
                if failed.is_empty() {
                    return self.phase_boundary(plan, next).await;
                }
                reason = format!(
                    "{reason}; phase {} did not finish on every shard, so phase {} never started",
                    plan.phases[plan.current_phase as usize].name, plan.phases[next].name
                );
            }
            return self.finish(plan, state, reason).await;
        };
        let mut slots = waves::Slots::new(&policy, tasks.active_in_wave(wave.index), |host| {
            self.model.active_on(host)
        });
        // Walked lazily and cloned only when chosen: most steps choose a few of many.
        let pending = wave.shards[open..]
            .iter()
            .filter_map(|shard| tasks.get(&shard.shard_id))
            .filter(|seen| state_of(&seen.value) == ShardState::Pending);
        let now = jiff::Timestamp::now();
        let mut chosen = Vec::new();
        for seen in pending {
            if slots.wave_full() {
                break;
            }
            let task = &seen.value;
            if schedule::waiting(plan, task, now).is_some()
                || self.model.throttle_of(&task.shard_id).is_some()
            {
                continue;
            }
            if !slots.admits(&task.host) {
                continue;
            }
            let Some(ready) = self.ready(task, seen.revision) else {
                continue;
            };
            slots.take(&ready.task.host);
            chosen.push(ready);
        }
        // Different shards' claims are independent: sent together, their round trips to the
        // store overlap (one at a time, a leader dispatched ~170 shards/s on this machine's
        // etcd). Their hand-overs then go in as few commits as the store takes. A rare
        // refusal leaves its slot unused until the next step.
        let claimed =
            futures_util::future::join_all(chosen.into_iter().map(|ready| self.claim(plan, ready)))
                .await
                .into_iter()
                .filter_map(Result::transpose)
                .collect::<Result<Vec<_>, _>>()?;
        for dispatched in self.hand_over(plan, claimed).await? {
            self.record(&plan.plan_id, dispatched);
        }
        Ok(())
    }

    /// What a dispatch wrote, in the model (before the watch brings it).
    fn record(&mut self, plan_id: &str, dispatched: Dispatched) {
        match dispatched {
            Dispatched::Handed {
                shard,
                claim,
                task,
                at,
            } => {
                if let Some((holder, claimed_at)) = claim {
                    self.model.record_claim(&shard, holder, claimed_at);
                }
                self.model.record_task(plan_id, &shard, *task, at);
            }
            Dispatched::Claimed { shard, holder, at } => {
                self.model.record_claim(&shard, holder, at);
            }
            Dispatched::Refused => {}
        }
    }

    /// The task with the agent to run it and its claim, when the model shows it can run now:
    /// its shard's agent is connected and no other claim holds the shard.
    fn ready(&self, task: &ShardTask, revision: i64) -> Option<Ready> {
        let (agent, lease) = self.model.agent_of(&task.shard_id, &task.agent_id)?;
        let claim = match self
            .model
            .claims
            .get(&task.shard_id)
            .map(|seen| seen.value.clone())
        {
            // Claimed by a leader that stopped before handing the task over: carry on.
            Some(claim) if claim.name == agent && !self.claim_in_use(claim.token) => {
                Some(claim.token)
            }
            Some(_) => return None,
            None => None,
        };
        Some(Ready {
            task: task.clone(),
            revision,
            agent,
            lease,
            claim,
        })
    }

    /// Claims the shard for its agent unless claimed already; `None` when it cannot be now.
    async fn claim(&self, plan: &Plan, ready: Ready) -> Result<Option<Claimed>, RolloutError> {
        if let Some(token) = ready.claim {
            return Ok(Some(Claimed {
                ready,
                token,
                new: None,
            }));
        }
        let task_key = keys::task(&plan.plan_id, &ready.task.shard_id);
        let unchanged = Condition::ModifiedAt(task_key, ready.revision);
        let claimed = claims::for_task(
            self.store,
            self.epoch,
            &ready.task.shard_id,
            &ready.agent,
            ready.lease,
            unchanged,
        )
        .await?;
        Ok(claimed.map(|token| {
            let holder = claims::Holder {
                name: ready.agent.clone(),
                token,
            };
            Claimed {
                ready,
                token,
                new: Some((holder, token.get())),
            }
        }))
    }

    /// Writes each claimed task as running, with its assignment, while its claim stands and
    /// the task is as the model saw it; in the store only (the caller records what it did).
    async fn hand_over(
        &self,
        plan: &Plan,
        claimed: Vec<Claimed>,
    ) -> Result<Vec<Dispatched>, RolloutError> {
        let (running, transactions): (Vec<ShardTask>, Vec<Transaction>) = claimed
            .iter()
            .map(|claimed| self.running(plan, claimed))
            .unzip();
        let applied = grouped::commit(self.store, Some(self.epoch), &transactions).await?;
        let handed = claimed.into_iter().zip(running).zip(applied);
        Ok(handed
            .map(|((claimed, task), at)| {
                let Claimed { ready, token, new } = claimed;
                let shard = task.shard_id.clone();
                match (at, new) {
                    (Some(at), new) => {
                        tracing::info!(plan = %plan.plan_id, %shard, agent = %ready.agent, %token, "shard task dispatched");
                        Dispatched::Handed {
                            shard,
                            claim: new,
                            task: Box::new(task),
                            at,
                        }
                    }
                    (None, Some((holder, at))) => Dispatched::Claimed { shard, holder, at },
                    (None, None) => Dispatched::Refused,
                }
            })
            .collect())
    }

    /// `claimed` as it runs, and the transaction that writes it and its assignment (bound to
    /// the agent's session lease) while its claim stands and it is as the model saw it.
    fn running(&self, plan: &Plan, claimed: &Claimed) -> (ShardTask, Transaction) {
        let Claimed { ready, token, .. } = claimed;
        let task = &ready.task;
        let task_key = keys::task(&plan.plan_id, &task.shard_id);
        let assignment_id = assignment_id(&plan.plan_id, &task.shard_id, *token);
        let running = ShardTask {
            state: ShardState::Running.into(),
            fence_token: token.get(),
            agent_id: ready.agent.clone(),
            error: None,
            started_at: now(),
            finished_at: None,
            ..task.clone()
        };
        let tasks = self.model.tasks.get(&plan.plan_id);
        let others = tasks
            .into_iter()
            .flat_map(|tasks| tasks.values())
            .map(|seen| &seen.value);
        let estimates = schedule::estimates(plan, &running, others);
        let dispatch = dispatch_of(plan, &running, &assignment_id, *token, estimates);
        let transaction = Transaction {
            conditions: vec![
                claims::held(&task.shard_id, *token),
                Condition::ModifiedAt(task_key.clone(), ready.revision),
            ],
            writes: vec![
                Write::put(task_key, running.encode_to_vec()),
                Write::Put {
                    key: keys::assignment(&ready.agent, &assignment_id),
                    value: dispatch.encode_to_vec(),
                    lease: Some(ready.lease),
                },
            ],
        };
        (running, transaction)
    }

    fn claim_in_use(&self, token: FenceToken) -> bool {
        self.model
            .tasks
            .values()
            .flat_map(PlanTasks::active)
            .any(|seen| seen.value.fence_token == token.get())
    }
}

/// A pending task the model shows can run now, with its agent, the agent's session lease and
/// the claim it runs under when the shard is claimed already.
struct Ready {
    task: ShardTask,
    revision: i64,
    agent: String,
    lease: LeaseId,
    claim: Option<FenceToken>,
}

/// A ready task whose shard is claimed for its agent under `token`; `new` is the claim (and
/// the revision it was made at) when this step took it.
struct Claimed {
    ready: Ready,
    token: FenceToken,
    new: Option<(claims::Holder, i64)>,
}

/// What a dispatch did in the store.
enum Dispatched {
    /// The task and its assignment are written; `claim` is the claim taken for it, if new.
    Handed {
        shard: String,
        claim: Option<(claims::Holder, i64)>,
        task: Box<ShardTask>,
        at: i64,
    },
    /// The shard was claimed, but the task changed or the claim lapsed before the hand-over.
    Claimed {
        shard: String,
        holder: claims::Holder,
        at: i64,
    },
    /// Nothing was written.
    Refused,
}

/// What the agent's replica delivers for `task` (as handed over): the assignment, its
/// migration set named by digest only, with the revisions' `estimates` for its windows.
fn dispatch_of(
    plan: &Plan,
    task: &ShardTask,
    assignment_id: &str,
    token: FenceToken,
    estimates: Vec<RevisionDuration>,
) -> Dispatch {
    let direction = match plan.direction() {
        Direction::Down => Direction::Down,
        Direction::Up | Direction::Unspecified => Direction::Up,
    };
    let target_version = if task.target_version.is_empty() {
        phases::target(plan).to_owned()
    } else {
        task.target_version.clone()
    };
    // An automatic rollback in a later phase stops at the phase's start: the phases before
    // it are the application's, deployed against.
    let revert_to = match (plan.current_phase as usize).checked_sub(1) {
        Some(previous) => plan.phases[previous].last_version.clone(),
        None => task.previous_version.clone(),
    };
    let assignment = Assignment {
        assignment_id: assignment_id.to_owned(),
        plan_id: plan.plan_id.clone(),
        shard_id: task.shard_id.clone(),
        fence_token: token.get(),
        direction: direction.into(),
        target_version,
        revert_to,
        windows: task.windows.clone(),
        estimates,
        migration_set: Some(MigrationSet {
            format: plan.set_format.clone(),
            digest: plan.set_digest.clone(),
            files: Vec::new(),
            origin: plan.set_origin.clone(),
        }),
        limits: plan.limits,
        duties: plan.duties.clone(),
        // Named only; the relay attaches its SQL.
        baseline: plan.baseline.clone(),
        trace_context: RolloutTrace::of(plan)
            .map(|trace| trace.carrier_for_run(&task.shard_id, token))
            .unwrap_or_default(),
    };
    Dispatch {
        assignment: Some(assignment),
        task: Some(task.clone()),
    }
}
