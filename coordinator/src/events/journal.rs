//! This replica's part of the event journal: the progress agents report on the sessions it
//! holds, gathered for up to [`BATCH_WINDOW`] (or [`BATCH_EVENTS`]) and stored as one
//! `JournalBatch` under `journal/<replica>/<batch>`, on a lease that keeps it at least
//! [`RETENTION`]. A session's record of a run's result travels in the same transaction as the
//! batch holding the run's last progress ([`Feed::store_after`]), so that progress precedes
//! the task's end in the order every watcher sees; results arriving together share one
//! transaction (measured on the control-plane benchmark: a batch and a result transaction per
//! shard before, one transaction per group of shards finishing together now). Progress of a
//! run whose claim lapsed before its batch was written is left out ([`standing`]).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use backon::{ExponentialBuilder, Retryable};
use fleetshift_common::proto::v1::{JournalBatch, ProgressEvent};
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::store::{Condition, LeaseId, Store, StoreError, Write, keys};

mod standing;

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

/// The most writes besides the batch in one transaction (etcd takes 128 operations).
const BATCH_WRITES: usize = 120;

/// The most bytes of events and writes in one transaction (etcd takes 1.5 MiB requests).
const BATCH_BYTES: usize = 1024 * 1024;

/// How often a batch's events are sifted against the claims before it is written without the
/// events of any claim.
const SIFTINGS: usize = 3;

/// What became of a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Committed {
    Applied,
    /// A claim of the batch's runs ended before it applied: nothing was written.
    ClaimEnded,
}

/// What sessions hand the writer.
#[derive(Debug)]
pub enum Journaled {
    Event(Box<ProgressEvent>),
    /// Store these with everything before them, then answer.
    Store(Vec<Write>, oneshot::Sender<Result<(), StoreError>>),
}

/// What became of writes handed to the writer.
#[derive(Debug)]
pub enum Handed {
    /// The writer's transaction, with everything recorded before them.
    Stored(Result<(), StoreError>),
    /// No writer runs (a detached feed, or the replica is stopping): the caller stores them.
    NoWriter(Vec<Write>),
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

    /// Stores `writes` in one transaction with (or after) everything recorded so far.
    pub async fn store_after(&self, writes: Vec<Write>) -> Handed {
        // A place in the queue first, so the writes come back whole when no writer is left.
        let Ok(place) = self.0.reserve().await else {
            return Handed::NoWriter(writes);
        };
        let (done, stored) = oneshot::channel();
        place.send(Journaled::Store(writes, done));
        Handed::Stored(stored.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the event journal's writer stopped before storing".to_owned(),
            ))
        }))
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
        while !batch.awaited() && !batch.full() {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => break,
                next = feed.recv() => match next {
                    Some(next) => batch.take(next),
                    None => break,
                },
            }
        }
        // What is already queued goes along: sessions finishing together share a transaction.
        while !batch.full() {
            match feed.try_recv() {
                Ok(next) => batch.take(next),
                Err(_) => break,
            }
        }
        writer.store(batch).await;
    }
    let mut rest = Batch::default();
    while let Ok(next) = feed.try_recv() {
        if rest.full() {
            writer.store(std::mem::take(&mut rest)).await;
        }
        rest.take(next);
    }
    writer.store(rest).await;
}

/// Events gathered, and the writes sessions asked to store after them.
#[derive(Debug, Default)]
struct Batch {
    events: Vec<ProgressEvent>,
    writes: Vec<Write>,
    waiting: Vec<oneshot::Sender<Result<(), StoreError>>>,
    bytes: usize,
}

impl Batch {
    fn take(&mut self, item: Journaled) {
        match item {
            Journaled::Event(event) => {
                self.bytes += event.encoded_len();
                self.events.push(*event);
            }
            Journaled::Store(writes, done) => {
                self.bytes += writes.iter().map(Write::size).sum::<usize>();
                self.writes.extend(writes);
                self.waiting.push(done);
            }
        }
    }

    /// Someone waits for it to be stored.
    fn awaited(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// As much as one transaction takes.
    fn full(&self) -> bool {
        self.events.len() >= BATCH_EVENTS
            || self.writes.len() >= BATCH_WRITES
            || self.bytes >= BATCH_BYTES
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
        let mut events = batch.events;
        let mut count = 0;
        let mut stored = Ok(Committed::Applied);
        // One number per batch, whatever the siftings: a refused commit wrote nothing.
        let mut numbered: Option<String> = None;
        // A claim that ends between reading the claims and the write fails the commit's
        // conditions: the events are sifted again, at most this many times, then written
        // without those of any claim.
        for sifting in 1..=SIFTINGS {
            let standing = standing::of_standing_claims(self.store.as_ref(), events).await;
            let conditions;
            (events, conditions) = if sifting < SIFTINGS {
                (standing.events, standing.conditions)
            } else {
                (standing.without_claims(), Vec::new())
            };
            count = events.len();
            let journal = if events.is_empty() {
                None
            } else {
                let key = numbered
                    .get_or_insert_with(|| {
                        self.batches += 1;
                        keys::journal_batch(
                            &self.replica,
                            &format!("{}-{}", self.run, self.batches),
                        )
                    })
                    .clone();
                // Encoded without copying the events, which a refusal sifts again.
                let encoded = JournalBatch { events };
                let value = encoded.encode_to_vec();
                events = encoded.events;
                Some((key, value))
            };
            if journal.is_none() && batch.writes.is_empty() {
                stored = Ok(Committed::Applied);
                break;
            }
            let attempt = || self.commit(journal.as_ref(), &batch.writes, &conditions);
            stored = attempt
                .retry(
                    ExponentialBuilder::new()
                        .with_min_delay(Duration::from_millis(100))
                        .with_max_delay(Duration::from_secs(1))
                        .with_max_times(3),
                )
                .await;
            if !matches!(stored, Ok(Committed::ClaimEnded)) {
                break;
            }
        }
        let stored = stored.map(drop);
        if let Err(error) = &stored {
            tracing::warn!(%error, events = count, "progress events not stored in the event journal; watchers miss them");
        }
        for done in batch.waiting {
            let _ = done.send(stored.clone());
        }
    }

    /// The batch (on the journal's lease) and `writes`, in one transaction, if `conditions`
    /// (the claims of the batch's runs) hold.
    async fn commit(
        &self,
        journal: Option<&(String, Vec<u8>)>,
        writes: &[Write],
        conditions: &[Condition],
    ) -> Result<Committed, StoreError> {
        let mut all = Vec::with_capacity(writes.len() + 1);
        if let Some((key, value)) = journal {
            all.push(Write::Put {
                key: key.clone(),
                value: value.clone(),
                lease: Some(self.lease().await?),
            });
        }
        all.extend_from_slice(writes);
        let committed = self.store.commit(None, conditions, &all).await;
        if let Err(StoreError::LeaseExpired(_)) = committed {
            // Revoked or lost with a store restart: the next attempt takes a new one.
            *self.current_lease() = None;
        }
        committed.map(|revision| match revision {
            Some(_) => Committed::Applied,
            None => Committed::ClaimEnded,
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn event(shard: &str) -> ProgressEvent {
        ProgressEvent {
            shard_id: shard.to_owned(),
            ..ProgressEvent::default()
        }
    }

    #[tokio::test]
    async fn results_queued_together_share_the_transaction_of_the_progress_before_them() {
        let store = Arc::new(MemoryStore::new());
        let (feed, journaled) = Feed::channel();
        feed.record(event("a"));
        feed.record(event("b"));
        let result = |name: &str| vec![Write::put(keys::result(name), name.as_bytes().to_vec())];
        let (first, second) = (feed.clone(), feed.clone());
        let storing = tokio::spawn(async move {
            tokio::join!(
                first.store_after(result("p/a/1")),
                second.store_after(result("p/b/1"))
            )
        });
        // Both results wait in the queue before the writer starts.
        while journaled.len() < 4 {
            tokio::task::yield_now().await;
        }
        let stop = CancellationToken::new();
        let writer = tokio::spawn(write(
            Arc::clone(&store),
            "c1".to_owned(),
            journaled,
            stop.clone(),
        ));
        let (first, second) = storing.await.expect("stored");
        for handed in [first, second] {
            assert!(matches!(handed, Handed::Stored(Ok(()))), "{handed:?}");
        }
        let batches = store.list(&keys::journal_prefix()).await.expect("list");
        assert_eq!(
            batches.entries.len(),
            1,
            "one batch for both runs' progress"
        );
        let batch = &batches.entries[0];
        for name in ["p/a/1", "p/b/1"] {
            let stored = store
                .read(&keys::result(name))
                .await
                .expect("read")
                .expect("the result is stored");
            assert_eq!(
                stored.mod_revision, batch.mod_revision,
                "{name} is stored in the batch's transaction"
            );
        }
        stop.cancel();
        writer.await.expect("writer");
    }

    #[tokio::test]
    async fn a_batch_is_not_written_once_a_claim_of_its_runs_ended() {
        let store = Arc::new(MemoryStore::new());
        let token = store
            .commit(
                None,
                &[],
                &[Write::put(crate::claims::key("s1"), b"a".to_vec())],
            )
            .await
            .expect("claim")
            .expect("claimed");
        let writer = Writer {
            store: Arc::clone(&store),
            replica: "c1".to_owned(),
            lease: Mutex::new(None),
            run: 1,
            batches: 0,
        };
        let journal = (keys::journal_batch("c1", "1-1"), b"events".to_vec());
        let result = vec![Write::put(keys::result("p~s1~1"), b"r".to_vec())];
        let held = [crate::claims::held(
            "s1",
            crate::store::FenceToken::from_raw(token),
        )];
        // The claim ends (its task ended) after the writer read it.
        store
            .commit(None, &[], &[Write::Delete(crate::claims::key("s1"))])
            .await
            .expect("release");
        let committed = writer
            .commit(Some(&journal), &result, &held)
            .await
            .expect("answered");
        assert_eq!(committed, Committed::ClaimEnded);
        assert_eq!(store.read(&journal.0).await.expect("read"), None);
        assert_eq!(
            store.read(&keys::result("p~s1~1")).await.expect("read"),
            None
        );
        let committed = writer.commit(None, &result, &[]).await.expect("answered");
        assert_eq!(committed, Committed::Applied, "sifted, the rest is written");
    }

    #[tokio::test]
    async fn without_a_writer_the_writes_come_back_to_the_caller() {
        let writes = vec![Write::Delete("x".to_owned())];
        match Feed::detached().store_after(writes.clone()).await {
            Handed::NoWriter(back) => assert_eq!(back, writes),
            other => panic!("{other:?}"),
        }
    }
}
