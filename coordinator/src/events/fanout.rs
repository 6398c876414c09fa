//! One store watch per replica for every event stream on it.
//!
//! A stream that followed the store itself would cost the replica a watch, and a decoding of
//! every change, per watcher: with a hundred operators watching a rollout, a hundred copies of
//! every task record and journal batch. Instead the first stream starts one shared watch
//! that decodes each change once ([`Update`]) and hands what has arrived together, as one
//! batch, to every stream following it; the watch ends with the first change after its last
//! stream left.
//!
//! A stream joins the shared watch when the watch has sent nothing it needs (nothing after the
//! revision the stream begins after); otherwise, and when it falls behind the shared watch by
//! more than [`BACKLOG`] changes or the watch ends, it follows the store itself from where it
//! stands ([`Source`]).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::broadcast;

use super::update::Update;
use crate::store::{Changes, Store, StoreError, keys};
use crate::tasks::TaskSet;

/// Batches the shared watch keeps for a stream that has not taken them yet.
pub const BACKLOG: usize = 4096;

/// Changes sent as one batch at most.
const BATCH: usize = 256;

/// Changes decoded, in the store's order.
pub type Batch = Arc<[Update]>;

/// The replica's shared watch, started by the first stream that needs it.
#[derive(Debug)]
pub struct Fanout<S> {
    store: Arc<S>,
    tasks: TaskSet,
    shared: Mutex<Option<Shared>>,
}

#[derive(Debug)]
struct Shared {
    sender: broadcast::Sender<Batch>,
    /// The revision of the last change sent: a stream joining now receives every later
    /// revision whole (a revision may span two batches).
    sent_through: i64,
}

/// Where a stream's changes come from.
#[derive(Debug)]
pub enum Source {
    /// The shared watch: every change after the revision the stream joined at.
    Shared(broadcast::Receiver<Batch>),
    /// The stream's own watch of the store.
    Own(Changes),
}

/// A stream that joined the shared watch before knowing where it begins.
#[derive(Debug)]
pub struct Joined {
    receiver: broadcast::Receiver<Batch>,
    sent_through: i64,
}

impl<S: Store + 'static> Fanout<S> {
    /// Shared watches run on `tasks` and end when it stops.
    pub fn new(store: Arc<S>, tasks: TaskSet) -> Arc<Self> {
        Arc::new(Self {
            store,
            tasks,
            shared: Mutex::new(None),
        })
    }

    /// The store this fans out.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// The tasks streams run on.
    pub fn tasks(&self) -> &TaskSet {
        &self.tasks
    }

    /// Joins the shared watch if one runs, before the stream reads the current state: every
    /// change the stream reads after this reaches it.
    pub fn join(&self) -> Option<Joined> {
        let shared = self.shared();
        shared.as_ref().map(|running| Joined {
            receiver: running.sender.subscribe(),
            sent_through: running.sent_through,
        })
    }

    /// Every change after `after`: from the shared watch (`joined` first, then one that runs,
    /// or one started now), or from a watch of the stream's own when the shared one is past
    /// `after` already.
    pub async fn follow(
        self: &Arc<Self>,
        joined: Option<Joined>,
        after: i64,
    ) -> Result<Source, StoreError> {
        if let Some(joined) = joined.filter(|joined| joined.sent_through <= after) {
            return Ok(Source::Shared(joined.receiver));
        }
        if let Some(source) = self.join_at(after) {
            return Ok(source);
        }
        let changes = self.store.watch(&keys::all(), after).await?;
        let mut shared = self.shared();
        if shared.is_some() {
            drop(shared);
            // Another stream started one meanwhile.
            return Ok(self.join_at(after).unwrap_or(Source::Own(changes)));
        }
        let (sender, receiver) = broadcast::channel(BACKLOG);
        *shared = Some(Shared {
            sender,
            sent_through: after,
        });
        drop(shared);
        let fanout = Arc::clone(self);
        self.tasks.spawn(async move { fanout.relay(changes).await });
        Ok(Source::Shared(receiver))
    }

    /// A stream's own watch of the store, from after `after`.
    pub async fn own(&self, after: i64) -> Result<Source, StoreError> {
        Ok(Source::Own(self.store.watch(&keys::all(), after).await?))
    }

    /// The shared watch, if one runs and has sent nothing after `after`.
    fn join_at(&self, after: i64) -> Option<Source> {
        let shared = self.shared();
        let running = shared.as_ref()?;
        (running.sent_through <= after).then(|| Source::Shared(running.sender.subscribe()))
    }

    /// Decodes each change once and sends what has arrived to every stream; ends when the
    /// store's watch does (the streams then follow the store themselves), when no stream is
    /// left, or when the replica stops.
    async fn relay(&self, mut changes: Changes) {
        let stopping = self.tasks.stopping().clone();
        loop {
            let change = tokio::select! {
                () = stopping.cancelled() => break,
                change = changes.next() => change,
            };
            let Some(Ok(change)) = change else {
                break;
            };
            let mut batch = vec![Update::from(&change)];
            let mut failed = false;
            while batch.len() < BATCH {
                match changes.ready() {
                    Some(Ok(change)) => batch.push(Update::from(&change)),
                    Some(Err(_)) => {
                        failed = true;
                        break;
                    }
                    None => break,
                }
            }
            let last = batch
                .last()
                .map_or(change.revision, |update| update.revision);
            let mut shared = self.shared();
            let Some(running) = shared.as_mut() else {
                return;
            };
            if running.sender.send(batch.into()).is_err() {
                // No stream left: one that joins later starts a new watch.
                *shared = None;
                return;
            }
            running.sent_through = last;
            if failed {
                break;
            }
        }
        *self.shared() = None;
    }

    fn shared(&self) -> MutexGuard<'_, Option<Shared>> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What a [`Source`] gives next.
#[derive(Debug)]
pub enum Next {
    Updates(Batch),
    /// The shared watch ended or left this stream behind: follow the store itself from the
    /// last change taken.
    Behind,
    /// The store can no longer be followed.
    Failed(StoreError),
    /// The stream's own watch ended.
    Ended,
}

impl Source {
    pub async fn next(&mut self) -> Next {
        match self {
            Self::Shared(receiver) => receiver.recv().await.map_or(Next::Behind, Next::Updates),
            Self::Own(changes) => match changes.next().await {
                Some(Ok(change)) => Next::Updates(Arc::new([Update::from(&change)])),
                Some(Err(error)) => Next::Failed(error),
                None => Next::Ended,
            },
        }
    }
}
