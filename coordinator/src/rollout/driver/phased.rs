//! The leader at a phased plan's phase boundary: every shard finished the current phase. The
//! next phase's gate is judged against the fleet now; while it holds, what it waits for is
//! kept in the plan; once open, every task goes back to pending (its earlier runs recorded in
//! it) and then the plan moves to the next phase, in that order, so a leader that stops in
//! between never skips a phase: it finds pending tasks of the finished phase, whose runs
//! apply nothing, and comes back to the boundary.

use std::collections::HashMap;
use std::time::SystemTime;

use fleetshift_common::proto::v1::{PlanState, ShardFacts, ShardState, ShardTask};
use prost::Message as _;

use super::{Driver, plan_state};
use crate::rollout::{RolloutError, phases, records, waves};
use crate::store::{Condition, Store, Transaction, Write, grouped, keys};

impl<S: Store> Driver<'_, S> {
    pub(super) async fn phase_boundary(
        &mut self,
        plan: &fleetshift_common::proto::v1::Plan,
        next: usize,
    ) -> Result<(), RolloutError> {
        let gate = plan.phases[next].gate.clone().unwrap_or_default();
        let shards: Vec<&str> = waves::planned_tasks(plan)
            .map(|task| task.shard_id.as_str())
            .collect();
        let facts: HashMap<&str, &ShardFacts> = self
            .model
            .agents
            .values()
            .flat_map(|seen| &seen.value.hello.shards)
            .map(|facts| (facts.shard_id.as_str(), facts))
            .collect();
        let now = SystemTime::now();
        let judged = phases::judge(&gate, &shards, &facts, now);
        if !judged.open {
            if judged.gate != gate {
                self.keep_gate(plan, next, judged.gate).await?;
            }
            return Ok(());
        }
        let Some(revision) = self
            .model
            .plans
            .get(&plan.plan_id)
            .map(|seen| seen.revision)
        else {
            return Ok(());
        };
        if !self.reset_tasks(plan).await? {
            return Ok(());
        }
        let mut advanced = plan.clone();
        advanced.current_phase = u32::try_from(next).unwrap_or(u32::MAX);
        let phase = &mut advanced.phases[next];
        phase.gate = Some(judged.gate.clone());
        phase.started_at = Some(now.into());
        // Only over the plan as this step saw it; the model has it at once, so the tasks just
        // put back to pending are never dispatched for the phase that ended.
        let key = keys::plan(&plan.plan_id);
        let written = self
            .commit(
                &[Condition::ModifiedAt(key.clone(), revision)],
                &[Write::put(key, advanced.encode_to_vec())],
            )
            .await?;
        if let Some(at) = written {
            let phase = &advanced.phases[next];
            tracing::info!(plan = %plan.plan_id, phase = %phase.name, target = %phase.last_version, opened_by = %judged.gate.opened_by, "phase started on the fleet");
            self.model.record_plan(advanced, at);
        }
        Ok(())
    }

    /// Keeps what the gate waits for in the plan, while it is the plan's current boundary.
    async fn keep_gate(
        &self,
        plan: &fleetshift_common::proto::v1::Plan,
        next: usize,
        gate: fleetshift_common::proto::v1::PhaseGate,
    ) -> Result<(), RolloutError> {
        let current = plan.current_phase;
        let kept = records::update_plan(self.store, &plan.plan_id, Some(self.epoch), |stored| {
            if plan_state(stored) != PlanState::Running || stored.current_phase != current {
                return Err(RolloutError::NotNow("changed meanwhile".to_owned()));
            }
            let stored_gate = stored.phases[next]
                .gate
                .get_or_insert_with(Default::default);
            // An approver may have opened it meanwhile: that stays.
            if stored_gate.opened {
                return Err(RolloutError::NotNow("opened meanwhile".to_owned()));
            }
            stored_gate.quiet_since = gate.quiet_since;
            stored_gate.waiting_for.clone_from(&gate.waiting_for);
            Ok(())
        })
        .await;
        match kept {
            Ok(_) | Err(RolloutError::NotNow(_) | RolloutError::Contended(_)) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Every task of `plan` back to pending, each while it is as the model saw it; whether
    /// all were.
    async fn reset_tasks(
        &mut self,
        plan: &fleetshift_common::proto::v1::Plan,
    ) -> Result<bool, RolloutError> {
        let Some(tasks) = self.model.tasks.get(&plan.plan_id) else {
            return Ok(true);
        };
        let (pending, transactions): (Vec<ShardTask>, Vec<Transaction>) = tasks
            .values()
            .map(|seen| {
                let pending = ShardTask {
                    state: ShardState::Pending.into(),
                    error: None,
                    started_at: None,
                    finished_at: None,
                    ..seen.value.clone()
                };
                let key = keys::task(&plan.plan_id, &pending.shard_id);
                let transaction = Transaction {
                    conditions: vec![Condition::ModifiedAt(key.clone(), seen.revision)],
                    writes: vec![Write::put(key, pending.encode_to_vec())],
                };
                (pending, transaction)
            })
            .unzip();
        let applied = grouped::commit(self.store, Some(self.epoch), &transactions).await?;
        let mut all = true;
        for (task, at) in pending.into_iter().zip(applied) {
            match at {
                Some(at) => {
                    let shard = task.shard_id.clone();
                    self.model.record_task(&plan.plan_id, &shard, task, at);
                }
                None => all = false,
            }
        }
        Ok(all)
    }
}
