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
use super::fanout::{Fanout, Next, Source};
use super::update::{Record, Update};
use crate::error::{ErrorCode, refuse};
use crate::rollout::{RolloutError, plan_ended, plan_of_assignment, task_ended};
use crate::store::{Entry, Store, StoreError, keys};

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

/// Starts a stream on the replica's shared watch ([`Fanout`]); fails at once for an unknown
/// plan.
pub async fn follow<S: Store + 'static>(
    fanout: &Arc<Fanout<S>>,
    watch: Watch,
) -> Result<mpsc::Receiver<Result<RolloutEvent, Status>>, RolloutError> {
    let store = fanout.store();
    // Joined before the first read, every change after that read reaches this stream.
    let joined = watch.since.is_none().then(|| fanout.join()).flatten();
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
    let source = fanout.follow(joined, after).await?;
    let (sender, receiver) = mpsc::channel(BUFFER);
    let caught_up = watch
        .since
        .is_none_or(|since| since.revision() >= plans_read);
    let mut follower = Follower {
        seen: watch.since,
        watch,
        sender,
        read_at,
        after,
        plans: HashMap::new(),
        tasks: HashMap::new(),
        place: (0, 0),
        caught_up,
    };
    let stopping = fanout.tasks().stopping().clone();
    let owner = Arc::clone(fanout);
    fanout.tasks().spawn(async move {
        // A stopping replica ends its streams; watchers reconnect to another replica.
        let stopped = tokio::select! {
            () = stopping.cancelled() => true,
            () = follower.run(plans, current_tasks, source, &owner) => false,
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

impl<T: Copy + PartialEq> Known<T> {
    /// Takes in `state`; whether to send it: when `send` and it is not what was sent last.
    fn take(&mut self, state: T, send: bool) -> bool {
        self.current = state;
        if !send || self.sent == Some(state) {
            return false;
        }
        self.sent = Some(state);
        true
    }
}

struct Follower {
    watch: Watch,
    sender: mpsc::Sender<Result<RolloutEvent, Status>>,
    /// The sequence of the first read: the current state's.
    read_at: Sequence,
    /// The revision the stream follows changes after.
    after: i64,
    /// The last sequence this stream has handled: taken in again, a change up to it updates
    /// what the stream knows but sends nothing (`since` first, then where the stream stood
    /// when it left the shared watch).
    seen: Option<Sequence>,
    plans: HashMap<String, Known<PlanState>>,
    /// By plan, then shard (looked up without allocating: every change of a task reaches
    /// every stream).
    tasks: HashMap<String, HashMap<String, Known<ShardState>>>,
    /// The revision being numbered and the next place in it.
    place: (i64, u32),
    /// Whether the stream has reached its first read (a plan's stream ends only after).
    caught_up: bool,
}

/// Sent, or the watcher is gone (or was told why the stream ends).
type Sent = Result<(), ()>;

impl Follower {
    async fn run<S: Store + 'static>(
        &mut self,
        plans: Vec<Entry>,
        tasks: Vec<Entry>,
        mut source: Source,
        fanout: &Fanout<S>,
    ) {
        let starting = self.watch.since.is_none();
        for entry in plans.iter().chain(&tasks) {
            let update = Update::of(&entry.key, Some(&entry.value), entry.mod_revision);
            if self
                .record(&update.record, self.read_at, starting)
                .await
                .is_err()
            {
                return;
            }
        }
        while !self.finished() {
            let next = tokio::select! {
                next = source.next() => next,
                () = self.sender.closed() => return,
            };
            let sent = match next {
                Next::Updates(batch) => self.changes(&batch).await,
                Next::Behind => match fanout.own(self.resume()).await {
                    Ok(own) => {
                        source = own;
                        Ok(())
                    }
                    Err(error) => self.fail(self.store_failed(error)).await,
                },
                Next::Failed(error) => self.fail(self.store_failed(error)).await,
                Next::Ended => return,
            };
            if sent.is_err() {
                return;
            }
        }
    }

    /// Leaves the shared watch: the revision to follow the store after, from the start of
    /// the one last taken (whose changes the shared watch may not all have sent), numbered
    /// anew and sending nothing already handled.
    fn resume(&mut self) -> i64 {
        let (revision, next) = self.place;
        if revision <= self.after {
            return self.after;
        }
        if let Some(place) = next.checked_sub(1) {
            let handled = Sequence::of(revision, place);
            self.seen = Some(self.seen.map_or(handled, |seen| seen.max(handled)));
        }
        self.place = (0, 0);
        revision - 1
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

    /// Takes in `batch` up to the stream's end.
    async fn changes(&mut self, batch: &[Update]) -> Sent {
        for update in batch {
            if self.finished() {
                break;
            }
            self.change(update).await?;
        }
        Ok(())
    }

    /// Numbers `update` (every change takes a place; a journal batch one per event) and sends
    /// what it means for this stream.
    async fn change(&mut self, update: &Update) -> Sent {
        if update.revision <= self.after {
            // Sent by the shared watch before this stream's first read.
            return Ok(());
        }
        if self.place.0 != update.revision {
            self.place = (update.revision, 0);
        }
        self.caught_up |= update.revision >= self.read_at.revision();
        if let Record::Journal(batch) = &update.record {
            return self.journal(update.revision, batch.as_ref()).await;
        }
        let at = Sequence::of(update.revision, self.place.1);
        self.place.1 += 1;
        let fresh = self.fresh(at);
        self.record(&update.record, at, fresh).await
    }

    fn fresh(&self, at: Sequence) -> bool {
        self.seen.is_none_or(|seen| at > seen)
    }

    /// Takes in a plan or task record at `at`; sends its state when `send` and it changed.
    async fn record(&mut self, record: &Record, at: Sequence, send: bool) -> Sent {
        match record {
            Record::Plan { id, .. } | Record::Task { plan_id: id, .. }
                if !self.watch.scope.covers(id) =>
            {
                Ok(())
            }
            Record::Plan {
                plan: Some(plan), ..
            } => self.plan(plan, at, send).await,
            Record::Plan { id, plan: None } => match self.watch.scope {
                Scope::Plan(_) => {
                    self.fail(refuse(
                        ErrorCode::NotFound,
                        format!("plan {id} was deleted"),
                    ))
                    .await
                }
                Scope::Fleet => Ok(()),
            },
            Record::Task { plan_id, task } => self.task(plan_id, task, at, send).await,
            Record::Malformed { plan_id, error }
                if plan_id
                    .as_ref()
                    .is_none_or(|id| self.watch.scope.covers(id)) =>
            {
                self.fail(refuse(ErrorCode::Internal, error.clone())).await
            }
            Record::Malformed { .. } | Record::Journal(_) | Record::Other => Ok(()),
        }
    }

    async fn journal(&mut self, revision: i64, batch: Option<&JournalBatch>) -> Sent {
        let Some(batch) = batch else {
            // A batch's lease lapsed: it takes one place, like any change.
            self.place.1 += 1;
            return Ok(());
        };
        for event in &batch.events {
            let at = Sequence::of(revision, self.place.1);
            self.place.1 += 1;
            if !self.fresh(at) {
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
            && self.tasks.values().flat_map(HashMap::values).all(|known| {
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
        if !known.take(state, send) {
            return Ok(());
        }
        let event = Event::PlanState(PlanStateChanged {
            state: state.into(),
            reason: plan.state_reason.clone(),
        });
        self.send(&plan.plan_id, at, now(), event).await
    }

    async fn task(&mut self, plan_id: &str, task: &ShardTask, at: Sequence, send: bool) -> Sent {
        let state = task.state();
        if !take_task(&mut self.tasks, (plan_id, &task.shard_id), state, send) {
            return Ok(());
        }
        let event = Event::ShardState(ShardStateChanged {
            shard_id: task.shard_id.clone(),
            wave: task.wave,
            state: state.into(),
            error: task.error.clone(),
        });
        self.send(plan_id, at, now(), event).await
    }

    async fn progress(&self, event: &ProgressEvent, at: Sequence) -> Sent {
        let plan_id = plan_of_assignment(&event.assignment_id);
        if !self.watch.scope.covers(plan_id) {
            return Ok(());
        }
        if !self.watch.include_statements && per_statement(event) {
            return Ok(());
        }
        self.send(plan_id, at, event.at, Event::Progress(event.clone()))
            .await
    }
}

/// Takes in `state` for `plan_id`'s task on `shard`; whether to send it (see [`Known::take`]).
/// Allocates only for a task the stream has not seen before.
fn take_task(
    tasks: &mut HashMap<String, HashMap<String, Known<ShardState>>>,
    (plan_id, shard): (&str, &str),
    state: ShardState,
    send: bool,
) -> bool {
    if let Some(known) = tasks
        .get_mut(plan_id)
        .and_then(|shards| shards.get_mut(shard))
    {
        return known.take(state, send);
    }
    let mut known = Known::default();
    let taken = known.take(state, send);
    tasks
        .entry(plan_id.to_owned())
        .or_default()
        .insert(shard.to_owned(), known);
    taken
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
