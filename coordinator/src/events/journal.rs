//! This replica's part of the event journal: the progress agents report on the sessions it
//! holds, gathered for up to [`BATCH_WINDOW`] (or [`BATCH_EVENTS`]) and stored as one
//! `JournalBatch` under `journal/<replica>/<batch>`, on a lease that keeps it at least
//! [`RETENTION`]. A session asks for what it reported to be stored ([`Feed::flushed`]) before
//! it records a run's result, so a shard's last progress precedes its task's end in the order
//! every watcher sees.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use backon::{ExponentialBuilder, Retryable};
use fleetshift_common::proto::v1::{JournalBatch, ProgressEvent};
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::store::{LeaseId, Store, StoreError, Write, keys};

/// How long the writer gathers events before storing them.
pub const BATCH_WINDOW: Duration = Duration::from_millis(100);

/// The most events in one batch.
pub const BATCH_EVENTS: usize = 256;

/// How long the store keeps a batch, at least.
pub const RETENTION: Duration = Duration::from_secs(3600);

/// How often the writer takes a new lease; a batch's lease lasts [`RETENTION`] plus this.
const ROTATION: Duration = Duration::from_secs(600);

/// Events waiting for the writer before a session's report is dropped (the store is down).
const BACKLOG: usize = 65_536;

/// How long a session waits for its reports to be stored before recording a result anyway.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// What sessions hand the writer.
#[derive(Debug)]
pub enum Journaled {
    Event(Box<ProgressEvent>),
    /// Store everything before this, then answer.
    Flush(oneshot::Sender<()>),
}

/// Where sessions report progress for the journal.
#[derive(Debug, Clone)]
pub struct Feed(mpsc::Sender<Journaled>);

impl Feed {
    /// A feed and what its writer reads.
    pub fn channel() -> (Self, mpsc::Receiver<Journaled>) {
        let (sender, receiver) = mpsc::channel(BACKLOG);
        (Self(sender), receiver)
    }

    /// A feed nobody writes out (tests of sessions and relays).
    pub fn detached() -> Self {
        Self::channel().0
    }

    /// Hands `event` to the writer; dropped, with a warning, when the writer is far behind.
    pub fn record(&self, event: ProgressEvent) {
        match self.0.try_send(Journaled::Event(Box::new(event))) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(
                    "the event journal is {BACKLOG} events behind; a progress event was dropped"
                );
            }
        }
    }

    /// Waits (a while at most) until everything recorded so far is stored.
    pub async fn flushed(&self) {
        let (done, stored) = oneshot::channel();
        if self.0.send(Journaled::Flush(done)).await.is_err() {
            return;
        }
        if tokio::time::timeout(FLUSH_WAIT, stored).await.is_err() {
            tracing::warn!(
                "the event journal did not store a session's progress in time; its result is recorded anyway"
            );
        }
    }
}

/// Writes this replica's batches until `stopping`; what arrived by then is still written.
pub async fn write<S: Store>(
    store: Arc<S>,
    replica: String,
    mut feed: mpsc::Receiver<Journaled>,
    stopping: CancellationToken,
) {
    let mut writer = Writer {
        store,
        replica,
        lease: Mutex::new(None),
        run: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros(),
        batches: 0,
    };
    loop {
        let first = tokio::select! {
            () = stopping.cancelled() => None,
            first = feed.recv() => first,
        };
        let Some(first) = first else { break };
        let mut batch = Batch::default();
        batch.take(first);
        let deadline = Instant::now() + BATCH_WINDOW;
        while !batch.full() {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => break,
                next = feed.recv() => match next {
                    Some(next) => batch.take(next),
                    None => break,
                },
            }
        }
        writer.store(batch).await;
    }
    let mut rest = Batch::default();
    while let Ok(next) = feed.try_recv() {
        rest.take(next);
    }
    writer.store(rest).await;
}

/// Events gathered, and the sessions waiting for them to be stored.
#[derive(Debug, Default)]
struct Batch {
    events: Vec<ProgressEvent>,
    waiting: Vec<oneshot::Sender<()>>,
}

impl Batch {
    fn take(&mut self, item: Journaled) {
        match item {
            Journaled::Event(event) => self.events.push(*event),
            Journaled::Flush(done) => self.waiting.push(done),
        }
    }

    /// Full, or someone waits for it.
    fn full(&self) -> bool {
        self.events.len() >= BATCH_EVENTS || !self.waiting.is_empty()
    }
}

struct Writer<S> {
    store: Arc<S>,
    replica: String,
    /// The lease batches go on, and when it was granted.
    lease: Mutex<Option<(LeaseId, Instant)>>,
    /// This writer's start, so its batch names never repeat another run's.
    run: u128,
    batches: u64,
}

impl<S: Store> Writer<S> {
    async fn store(&mut self, batch: Batch) {
        if !batch.events.is_empty() {
            let count = batch.events.len();
            let value = JournalBatch {
                events: batch.events,
            }
            .encode_to_vec();
            self.batches += 1;
            let key = keys::journal_batch(&self.replica, &format!("{}-{}", self.run, self.batches));
            let attempt = || self.put(&key, &value);
            let stored = attempt
                .retry(
                    ExponentialBuilder::new()
                        .with_min_delay(Duration::from_millis(100))
                        .with_max_delay(Duration::from_secs(1))
                        .with_max_times(3),
                )
                .await;
            if let Err(error) = stored {
                tracing::warn!(%error, events = count, "progress events not stored in the event journal; watchers miss them");
            }
        }
        for done in batch.waiting {
            let _ = done.send(());
        }
    }

    async fn put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let lease = self.lease().await?;
        let written = Write::Put {
            key: key.to_owned(),
            value: value.to_vec(),
            lease: Some(lease),
        };
        let committed = self.store.commit(None, &[], &[written]).await;
        if let Err(StoreError::LeaseExpired(_)) = committed {
            // Revoked or lost with a store restart: the next attempt takes a new one.
            *self.current_lease() = None;
        }
        committed.map(drop)
    }

    /// The lease to write on: the current one while it is younger than [`ROTATION`].
    async fn lease(&self) -> Result<LeaseId, StoreError> {
        if let Some((lease, granted)) = *self.current_lease()
            && granted.elapsed() < ROTATION
        {
            return Ok(lease);
        }
        let lease = self.store.grant_lease(RETENTION + ROTATION).await?;
        *self.current_lease() = Some((lease, Instant::now()));
        Ok(lease)
    }

    fn current_lease(&self) -> std::sync::MutexGuard<'_, Option<(LeaseId, Instant)>> {
        self.lease
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
