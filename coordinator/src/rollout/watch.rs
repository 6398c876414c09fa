//! A rollout's events for `WatchRollout`, from any replica: first the plan's and every task's
//! current state, then each change as the store records it, and the progress agents connected
//! to this replica report for the plan's tasks. The stream ends once the plan has ended and no
//! task is still active.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use fleetshift_common::proto::v1::progress_event::Event as Progress;
use fleetshift_common::proto::v1::rollout_event::Event;
use fleetshift_common::proto::v1::{
    Plan, PlanState, PlanStateChanged, ProgressEvent, RolloutEvent, ShardState, ShardStateChanged,
    ShardTask,
};
use tokio::sync::{broadcast, mpsc};
use tonic::Status;

use super::records::{decode, load_plan, tasks_of};
use super::{RolloutError, plan_ended, plan_of_assignment, task_ended};
use crate::error::{ErrorCode, refuse};
use crate::mailbox::Mailbox;
use crate::store::{Store, keys};
use crate::tasks::TaskSet;

/// Events buffered for a slow watcher before the producer waits.
const BUFFER: usize = 256;

/// Starts following `plan_id`; fails at once for an unknown plan.
pub async fn follow<S: Store + 'static>(
    store: Arc<S>,
    mailbox: &Mailbox,
    tasks: &TaskSet,
    plan_id: &str,
    include_statements: bool,
) -> Result<mpsc::Receiver<Result<RolloutEvent, Status>>, RolloutError> {
    let progress = mailbox.subscribe_progress();
    let record = load_plan(&*store, plan_id).await?;
    let listing = store.list(&keys::tasks_prefix(plan_id)).await?;
    let current = tasks_of(&listing.entries)?;
    let plan_changes = store.watch(&keys::plan(plan_id), record.revision).await?;
    let task_changes = store
        .watch(&keys::tasks_prefix(plan_id), listing.revision)
        .await?;
    let (sender, receiver) = mpsc::channel(BUFFER);
    let follower = Follower {
        plan_id: plan_id.to_owned(),
        include_statements,
        sender,
        plan_state: PlanState::Unspecified,
        tasks: HashMap::new(),
    };
    let stopping = tasks.stopping().clone();
    let following = follower.run(record.plan, current, plan_changes, task_changes, progress);
    tasks.spawn(async move {
        // A stopping replica ends its watches; watchers reconnect to another replica.
        tokio::select! {
            () = stopping.cancelled() => {}
            () = following => {}
        }
    });
    Ok(receiver)
}

struct Follower {
    plan_id: String,
    include_statements: bool,
    sender: mpsc::Sender<Result<RolloutEvent, Status>>,
    plan_state: PlanState,
    tasks: HashMap<String, ShardState>,
}

fn now() -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp::from(SystemTime::now()))
}

impl Follower {
    async fn run(
        mut self,
        plan: Plan,
        tasks: std::collections::BTreeMap<String, ShardTask>,
        mut plan_changes: crate::store::Changes,
        mut task_changes: crate::store::Changes,
        mut progress: broadcast::Receiver<ProgressEvent>,
    ) {
        if self.plan(&plan).await.is_err() {
            return;
        }
        for task in tasks.values() {
            if self.task(task).await.is_err() {
                return;
            }
        }
        while !self.finished() {
            let sent = tokio::select! {
                change = plan_changes.next() => match change {
                    Some(Ok(change)) => match change.value.map(|value| decode::<Plan>(&change.key, &value)) {
                        Some(Ok(plan)) => self.plan(&plan).await,
                        Some(Err(error)) => self.fail(refuse(ErrorCode::Internal, error.to_string())).await,
                        None => self.fail(refuse(ErrorCode::NotFound, format!("plan {} was deleted", self.plan_id))).await,
                    },
                    Some(Err(error)) => self.fail(Status::from(error)).await,
                    None => return,
                },
                change = task_changes.next() => match change {
                    Some(Ok(change)) => match change.value.map(|value| decode::<ShardTask>(&change.key, &value)) {
                        Some(Ok(task)) => self.task(&task).await,
                        Some(Err(error)) => self.fail(refuse(ErrorCode::Internal, error.to_string())).await,
                        None => Ok(()),
                    },
                    Some(Err(error)) => self.fail(Status::from(error)).await,
                    None => return,
                },
                event = progress.recv() => match event {
                    Ok(event) => self.progress(event).await,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(plan = %self.plan_id, missed, "a watcher fell behind; progress events dropped");
                        Ok(())
                    }
                    Err(broadcast::error::RecvError::Closed) => Ok(()),
                },
                () = self.sender.closed() => return,
            };
            if sent.is_err() {
                return;
            }
        }
    }

    fn finished(&self) -> bool {
        // A halted plan's pending tasks stay pending.
        let halted = self.plan_state == PlanState::Halted;
        plan_ended(self.plan_state)
            && self
                .tasks
                .values()
                .all(|state| task_ended(*state) || (halted && *state == ShardState::Pending))
    }

    async fn send(&self, event: Event) -> Result<(), ()> {
        let event = RolloutEvent {
            plan_id: self.plan_id.clone(),
            at: now(),
            event: Some(event),
        };
        self.sender.send(Ok(event)).await.map_err(drop)
    }

    async fn fail(&self, status: Status) -> Result<(), ()> {
        let _ = self.sender.send(Err(status)).await;
        Err(())
    }

    async fn plan(&mut self, plan: &Plan) -> Result<(), ()> {
        let state = PlanState::try_from(plan.state).unwrap_or(PlanState::Unspecified);
        if state == self.plan_state {
            return Ok(());
        }
        self.plan_state = state;
        self.send(Event::PlanState(PlanStateChanged {
            state: state.into(),
            reason: plan.state_reason.clone(),
        }))
        .await
    }

    async fn task(&mut self, task: &ShardTask) -> Result<(), ()> {
        let state = ShardState::try_from(task.state).unwrap_or(ShardState::Unspecified);
        if self.tasks.insert(task.shard_id.clone(), state) == Some(state) {
            return Ok(());
        }
        self.send(Event::ShardState(ShardStateChanged {
            shard_id: task.shard_id.clone(),
            wave: task.wave,
            state: state.into(),
            error: task.error.clone(),
        }))
        .await
    }

    async fn progress(&self, event: ProgressEvent) -> Result<(), ()> {
        if plan_of_assignment(&event.assignment_id) != self.plan_id {
            return Ok(());
        }
        if !self.include_statements && matches!(event.event, Some(Progress::StatementFinished(_))) {
            return Ok(());
        }
        self.send(Event::Progress(event)).await
    }
}
