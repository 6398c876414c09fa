//! One watcher's stream, from any replica: a plan's (`WatchRollout`) or the whole fleet's
//! (`WatchEvents`). Without `since` it begins with the current state (the plan and each of its
//! tasks, or every plan and task), all at the sequence of that read; then it follows the store
//! from there, or from `since`, and sends plan and task changes and journal events in the
//! store's order, each with its [`Sequence`], skipping every one `since` covers. A state
//! change is sent when it differs from the last one this stream sent for the plan or task
//! (after `since`, the first one of each is sent). A plan's stream ends once the plan has
//! ended and no task is still active; the fleet's goes on until the watcher leaves or the
//! replica stops.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use fleetshift_common::proto::v1::progress_event::Event as Progress;
use fleetshift_common::proto::v1::rollout_event::Event;
use fleetshift_common::proto::v1::{
    JournalBatch, Plan, PlanState, PlanStateChanged, ProgressEvent, RolloutEvent, ShardState,
    ShardStateChanged, ShardTask,
};
use tokio::sync::mpsc;
use tonic::Status;

use super::Sequence;
use crate::error::{ErrorCode, refuse};
use crate::rollout::records::decode;
use crate::rollout::{RolloutError, plan_ended, plan_of_assignment, task_ended};
use crate::store::{Change, Entry, Store, StoreError, keys};
use crate::tasks::TaskSet;

/// Events buffered for a slow watcher before the follower waits.
const BUFFER: usize = 256;

/// What a stream covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Plan(String),
    Fleet,
}

impl Scope {
    fn covers(&self, plan: &str) -> bool {
        match self {
            Self::Plan(id) => id == plan,
            Self::Fleet => true,
        }
    }
}

/// What a watcher asked for.
#[derive(Debug, Clone)]
pub struct Watch {
    pub scope: Scope,
    pub include_statements: bool,
    /// Continue after this one instead of beginning with the current state.
    pub since: Option<Sequence>,
}

/// Starts a stream; fails at once for an unknown plan.
pub async fn follow<S: Store + 'static>(
    store: Arc<S>,
    tasks: &TaskSet,
    watch: Watch,
) -> Result<mpsc::Receiver<Result<RolloutEvent, Status>>, RolloutError> {
    let (plans, plans_read) = match &watch.scope {
        Scope::Plan(id) => {
            let listing = store.list(&keys::plan(id)).await?;
            let plan = listing
                .entries
                .iter()
                .find(|entry| entry.key == keys::plan(id))
                .ok_or_else(|| RolloutError::UnknownPlan(id.clone()))?;
            (vec![plan.clone()], listing.revision)
        }
        Scope::Fleet => {
            let listing = store.list(&keys::plans_prefix()).await?;
            (listing.entries, listing.revision)
        }
    };
    let task_prefix = match &watch.scope {
        Scope::Plan(id) => keys::tasks_prefix(id),
        Scope::Fleet => keys::all_tasks_prefix(),
    };
    let current_tasks = store.list(&task_prefix).await?.entries;
    // Changes after the plans were read; tasks read later show some of them already, and a
    // state sent twice is sent once.
    let read_at = Sequence::of(plans_read, 0);
    let after = watch
        .since
        .map_or(plans_read, |since| (since.revision() - 1).max(0));
    let changes = store.watch(&keys::all(), after).await?;
    let (sender, receiver) = mpsc::channel(BUFFER);
    let caught_up = watch
        .since
        .is_none_or(|since| since.revision() >= plans_read);
    let mut follower = Follower {
        watch,
        sender,
        read_at,
        plans: HashMap::new(),
        tasks: HashMap::new(),
        place: (0, 0),
        caught_up,
    };
    let stopping = tasks.stopping().clone();
    tasks.spawn(async move {
        // A stopping replica ends its streams; watchers reconnect to another replica.
        let stopped = tokio::select! {
            () = stopping.cancelled() => true,
            () = follower.run(plans, current_tasks, changes) => false,
        };
        if stopped {
            follower.stopped();
        }
    });
    Ok(receiver)
}

/// The state this stream knows of a plan or task, and the state it last sent.
#[derive(Debug, Default, Clone, Copy)]
struct Known<T> {
    current: T,
    sent: Option<T>,
}

struct Follower {
    watch: Watch,
    sender: mpsc::Sender<Result<RolloutEvent, Status>>,
    /// The sequence of the first read: the current state's.
    read_at: Sequence,
    plans: HashMap<String, Known<PlanState>>,
    /// By plan and shard.
    tasks: HashMap<(String, String), Known<ShardState>>,
    /// The revision being numbered and the next place in it.
    place: (i64, u32),
    /// Whether the stream has reached its first read (a plan's stream ends only after).
    caught_up: bool,
}

/// Sent, or the watcher is gone (or was told why the stream ends).
type Sent = Result<(), ()>;

impl Follower {
    async fn run(
        &mut self,
        plans: Vec<Entry>,
        tasks: Vec<Entry>,
        mut changes: crate::store::Changes,
    ) {
        let starting = self.watch.since.is_none();
        for entry in plans.iter().chain(&tasks) {
            let change = Change {
                key: entry.key.clone(),
                value: Some(entry.value.clone()),
                revision: entry.mod_revision,
                create_revision: entry.create_revision,
                lease: entry.lease,
            };
            if self.record(&change, self.read_at, starting).await.is_err() {
                return;
            }
        }
        while !self.finished() {
            let sent = tokio::select! {
                change = changes.next() => match change {
                    Some(Ok(change)) => self.change(&change).await,
                    Some(Err(error)) => self.fail(self.store_failed(error)).await,
                    None => return,
                },
                () = self.sender.closed() => return,
            };
            if sent.is_err() {
                return;
            }
        }
    }

    /// The replica is stopping: the watcher is told to go on elsewhere.
    fn stopped(&self) {
        let status = refuse(
            ErrorCode::Unavailable,
            "this coordinator replica is stopping; watch again on another, with --since the last sequence seen",
        );
        let _ = self.sender.try_send(Err(status));
    }

    fn store_failed(&self, error: StoreError) -> Status {
        match error {
            StoreError::Compacted(revision) => refuse(
                ErrorCode::Expired,
                format!(
                    "events since sequence {} are no longer kept (the fleet store compacted its history up to revision {revision}); watch again without --since to begin with the current state",
                    self.watch.since.map_or(0, Sequence::get)
                ),
            ),
            other => Status::from(other),
        }
    }

    /// Numbers `change` (every change takes a place; a journal batch one per event) and sends
    /// what it means for this stream.
    async fn change(&mut self, change: &Change) -> Sent {
        if self.place.0 != change.revision {
            self.place = (change.revision, 0);
        }
        self.caught_up |= change.revision >= self.read_at.revision();
        if change.key.starts_with(&keys::journal_prefix()) {
            return self.journal(change).await;
        }
        let at = Sequence::of(change.revision, self.place.1);
        self.place.1 += 1;
        let fresh = self.watch.since.is_none_or(|since| at > since);
        self.record(change, at, fresh).await
    }

    /// Takes in a plan or task record at `at`; sends its state when `send` and it changed.
    async fn record(&mut self, change: &Change, at: Sequence, send: bool) -> Sent {
        if let Some(plan_id) = change.key.strip_prefix(&keys::plans_prefix()) {
            if !self.watch.scope.covers(plan_id) {
                return Ok(());
            }
            let Some(value) = &change.value else {
                return match self.watch.scope {
                    Scope::Plan(_) => {
                        self.fail(refuse(
                            ErrorCode::NotFound,
                            format!("plan {plan_id} was deleted"),
                        ))
                        .await
                    }
                    Scope::Fleet => Ok(()),
                };
            };
            let plan: Plan = match decode(&change.key, value) {
                Ok(plan) => plan,
                Err(error) => {
                    return self
                        .fail(refuse(ErrorCode::Internal, error.to_string()))
                        .await;
                }
            };
            return self.plan(&plan, at, send).await;
        }
        let Some(rest) = change.key.strip_prefix(&keys::all_tasks_prefix()) else {
            return Ok(());
        };
        let Some((plan_id, _)) = rest.split_once('/') else {
            return Ok(());
        };
        let Some(value) = &change.value else {
            return Ok(());
        };
        if !self.watch.scope.covers(plan_id) {
            return Ok(());
        }
        match decode::<ShardTask>(&change.key, value) {
            Ok(task) => self.task(plan_id, &task, at, send).await,
            Err(error) => {
                self.fail(refuse(ErrorCode::Internal, error.to_string()))
                    .await
            }
        }
    }

    async fn journal(&mut self, change: &Change) -> Sent {
        let Some(value) = &change.value else {
            // A batch's lease lapsed: it takes one place, like any change.
            self.place.1 += 1;
            return Ok(());
        };
        let batch: JournalBatch = match decode(&change.key, value) {
            Ok(batch) => batch,
            Err(error) => {
                return self
                    .fail(refuse(ErrorCode::Internal, error.to_string()))
                    .await;
            }
        };
        for event in batch.events {
            let at = Sequence::of(change.revision, self.place.1);
            self.place.1 += 1;
            if self.watch.since.is_some_and(|since| at <= since) {
                continue;
            }
            self.progress(event, at).await?;
        }
        Ok(())
    }

    fn finished(&self) -> bool {
        let Scope::Plan(plan_id) = &self.watch.scope else {
            return false;
        };
        if !self.caught_up {
            return false;
        }
        let state = self
            .plans
            .get(plan_id)
            .map_or(PlanState::Unspecified, |known| known.current);
        // A halted plan's pending tasks stay pending.
        let halted = state == PlanState::Halted;
        plan_ended(state)
            && self.tasks.values().all(|known| {
                task_ended(known.current) || (halted && known.current == ShardState::Pending)
            })
    }

    async fn send(
        &self,
        plan_id: &str,
        at: Sequence,
        when: Option<prost_types::Timestamp>,
        event: Event,
    ) -> Sent {
        let event = RolloutEvent {
            plan_id: plan_id.to_owned(),
            at: when,
            event: Some(event),
            sequence: at.get(),
        };
        self.sender.send(Ok(event)).await.map_err(drop)
    }

    async fn fail(&self, status: Status) -> Sent {
        let _ = self.sender.send(Err(status)).await;
        Err(())
    }

    async fn plan(&mut self, plan: &Plan, at: Sequence, send: bool) -> Sent {
        let state = plan.state();
        let known = self.plans.entry(plan.plan_id.clone()).or_default();
        known.current = state;
        if !send || known.sent == Some(state) {
            return Ok(());
        }
        known.sent = Some(state);
        let event = Event::PlanState(PlanStateChanged {
            state: state.into(),
            reason: plan.state_reason.clone(),
        });
        self.send(&plan.plan_id, at, now(), event).await
    }

    async fn task(&mut self, plan_id: &str, task: &ShardTask, at: Sequence, send: bool) -> Sent {
        let state = task.state();
        let known = self
            .tasks
            .entry((plan_id.to_owned(), task.shard_id.clone()))
            .or_default();
        known.current = state;
        if !send || known.sent == Some(state) {
            return Ok(());
        }
        known.sent = Some(state);
        let event = Event::ShardState(ShardStateChanged {
            shard_id: task.shard_id.clone(),
            wave: task.wave,
            state: state.into(),
            error: task.error.clone(),
        });
        self.send(plan_id, at, now(), event).await
    }

    async fn progress(&self, event: ProgressEvent, at: Sequence) -> Sent {
        let plan_id = plan_of_assignment(&event.assignment_id).to_owned();
        if !self.watch.scope.covers(&plan_id) {
            return Ok(());
        }
        if !self.watch.include_statements && per_statement(&event) {
            return Ok(());
        }
        let when = event.at;
        self.send(&plan_id, at, when, Event::Progress(event)).await
    }
}

/// Whether `event` is one of the per-statement events a watch without statements leaves out:
/// every statement's start and end. A statement still running after its first update
/// interval is shown regardless: a long statement is what a watcher needs to see.
fn per_statement(event: &ProgressEvent) -> bool {
    match &event.event {
        Some(Progress::StatementFinished(_)) => true,
        Some(Progress::StatementRunning(running)) => running
            .elapsed
            .is_none_or(|elapsed| elapsed.seconds == 0 && elapsed.nanos == 0),
        _ => false,
    }
}

fn now() -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp::from(SystemTime::now()))
}

#[cfg(test)]
mod tests;
