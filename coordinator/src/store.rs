//! Fleet state: leases, per-shard claims and leadership, in etcd or in memory.
//!
//! - A **lease** belongs to one agent session; keys bound to it vanish when it lapses.
//! - A **claim** on a shard is a key created only if absent (`create_revision == 0`), bound to
//!   the holder's lease. Its `create_revision` is the **fencing token** handed to the agent:
//!   unique and increasing across the whole store (lease ids are not ordered: never tokens).
//! - **Leadership** is the same mechanism on one key; its `create_revision` is the leader's
//!   **epoch**, and every write the leader makes is a transaction comparing it, so a deposed
//!   leader's late writes are refused.

pub mod chunked;
mod etcd;
pub mod grouped;
pub mod keys;
mod memory;
mod metered;

use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc;

pub use etcd::EtcdStore;
pub use memory::MemoryStore;
pub use metered::MeteredStore;

/// Most transactions one [`Store::commit_each`] takes: etcd allows 128 operations in a
/// transaction, and the operations of nested ones count against what their parent leaves.
pub const EACH_LIMIT: usize = 32;

/// An etcd lease id (or the in-memory store's equivalent).
pub type LeaseId = i64;

/// A claim key's create revision is the token the shard's ledger fences with.
pub use fleetshift_common::fence::FenceToken;

/// The leader key's create revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch(pub i64);

/// A shard held by an agent session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub shard: String,
    pub holder: String,
    pub token: FenceToken,
    pub lease: LeaseId,
}

/// Who leads, since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    pub leader: String,
    pub epoch: Epoch,
}

/// A key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    /// The lease it is bound to, or 0.
    pub lease: LeaseId,
}

/// What [`Store::list`] saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub entries: Vec<Entry>,
    /// The store's revision when listed: watch from here to miss nothing.
    pub revision: i64,
}

/// A condition of a [`Store::commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The key does not exist.
    Absent(String),
    /// The key exists with this create revision (the same incarnation).
    CreatedAt(String, i64),
    /// The key was last written at this revision (nobody wrote it since it was read).
    ModifiedAt(String, i64),
}

/// One write of a [`Store::commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Sets the key; bound to the lease if given (gone when it lapses).
    Put {
        key: String,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    },
    /// Removes the key if present.
    Delete(String),
}

impl Write {
    pub fn put(key: String, value: Vec<u8>) -> Self {
        Self::Put {
            key,
            value,
            lease: None,
        }
    }

    /// The bytes it sends: its key and value.
    pub fn size(&self) -> usize {
        match self {
            Self::Put { key, value, .. } => key.len() + value.len(),
            Self::Delete(key) => key.len(),
        }
    }
}

/// One part of a [`Store::commit_each`]: its writes apply if its conditions hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transaction {
    pub conditions: Vec<Condition>,
    pub writes: Vec<Write>,
}

impl Transaction {
    /// The keys it writes.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.writes.iter().map(|write| match write {
            Write::Put { key, .. } | Write::Delete(key) => key.as_str(),
        })
    }

    /// The bytes it sends: its writes' keys and values and its conditions' keys.
    pub fn size(&self) -> usize {
        let conditions = self.conditions.iter().map(|condition| match condition {
            Condition::Absent(key)
            | Condition::CreatedAt(key, _)
            | Condition::ModifiedAt(key, _) => key.len(),
        });
        self.writes.iter().map(Write::size).sum::<usize>() + conditions.sum::<usize>()
    }
}

/// One change seen by [`Store::watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: String,
    /// The new value, or `None` when the key was deleted (or its lease lapsed).
    pub value: Option<Vec<u8>>,
    pub revision: i64,
    /// The key's create revision (for a put; 0 for a delete).
    pub create_revision: i64,
    /// The lease the key is bound to (for a put), or 0.
    pub lease: LeaseId,
}

/// Changes as they happen; ends with an error when the store can no longer follow (then list
/// again and watch from the new revision).
#[derive(Debug)]
pub struct Changes(mpsc::UnboundedReceiver<Result<Change, StoreError>>);

impl Changes {
    pub async fn next(&mut self) -> Option<Result<Change, StoreError>> {
        self.0.recv().await
    }

    /// The next change if one has arrived already.
    pub fn ready(&mut self) -> Option<Result<Change, StoreError>> {
        self.0.try_recv().ok()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("the store is unreachable: {0}")]
    Unavailable(String),
    #[error("lease {0:x} has expired or was revoked")]
    LeaseExpired(LeaseId),
    #[error("shard {shard} is already claimed by {holder} (fence token {token})")]
    Claimed {
        shard: String,
        holder: String,
        token: FenceToken,
    },
    #[error("not the leader: epoch {0} is over")]
    NotLeader(i64),
    #[error("unexpected data in the store at {key}: {detail}")]
    Corrupt { key: String, detail: String },
    /// A watch asked for changes the store no longer keeps (it compacted its history).
    #[error("the store no longer keeps changes before revision {0}")]
    Compacted(i64),
}

/// Fleet state, as the coordinator needs it. Every method is one round trip to the store.
pub trait Store: Send + Sync {
    /// A lease that lapses `ttl` after its last keep-alive (etcd rounds up to whole seconds
    /// and enforces its own minimum).
    fn grant_lease(
        &self,
        ttl: Duration,
    ) -> impl Future<Output = Result<LeaseId, StoreError>> + Send;

    /// Renews the lease; returns its fresh time to live.
    fn keep_alive(
        &self,
        lease: LeaseId,
    ) -> impl Future<Output = Result<Duration, StoreError>> + Send;

    /// Ends the lease now; keys bound to it vanish. Revoking an expired lease is not an error.
    fn revoke(&self, lease: LeaseId) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Claims `shard` for `holder` under `lease`, if nobody holds it.
    fn claim(
        &self,
        shard: &str,
        holder: &str,
        lease: LeaseId,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send;

    fn claim_of(
        &self,
        shard: &str,
    ) -> impl Future<Output = Result<Option<Claim>, StoreError>> + Send;

    /// Releases the claim if it is still this one (same token); false if it is gone or newer.
    fn release(&self, claim: &Claim) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Becomes leader under `lease` if nobody leads; `None` when another candidate does.
    fn campaign(
        &self,
        candidate: &str,
        lease: LeaseId,
    ) -> impl Future<Output = Result<Option<Leadership>, StoreError>> + Send;

    fn leader(&self) -> impl Future<Output = Result<Option<Leadership>, StoreError>> + Send;

    /// Applies `writes` atomically if every condition holds and, with `epoch`, while that
    /// leadership stands (else [`StoreError::NotLeader`]). The revision it committed at, or
    /// `None` when a condition failed. A key it creates has this revision as create revision.
    fn commit(
        &self,
        epoch: Option<Epoch>,
        conditions: &[Condition],
        writes: &[Write],
    ) -> impl Future<Output = Result<Option<i64>, StoreError>> + Send;

    /// Applies, in one commit, each of `transactions` whose conditions hold, while `epoch`'s
    /// leadership stands (else [`StoreError::NotLeader`] and nothing applies). Every condition
    /// is judged on the store as it was before the commit. For each transaction, the revision
    /// it applied at (the same for all), or `None` when a condition failed. No two
    /// transactions may write the same key, and at most [`EACH_LIMIT`] go in one commit
    /// ([`grouped::commit`] splits longer lists).
    fn commit_each(
        &self,
        epoch: Option<Epoch>,
        transactions: &[Transaction],
    ) -> impl Future<Output = Result<Vec<Option<i64>>, StoreError>> + Send;

    fn read(&self, key: &str) -> impl Future<Output = Result<Option<Entry>, StoreError>> + Send;

    /// Every key under `prefix`, in key order, and the revision the listing reflects.
    fn list(&self, prefix: &str) -> impl Future<Output = Result<Listing, StoreError>> + Send;

    /// Changes under `prefix` committed after revision `after`, in order, as they happen.
    fn watch(
        &self,
        prefix: &str,
        after: i64,
    ) -> impl Future<Output = Result<Changes, StoreError>> + Send;

    /// Records a connected agent and its facts, bound to its session lease (gone with it).
    fn announce_agent(
        &self,
        agent: &str,
        facts: &[u8],
        lease: LeaseId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The lease `agent`'s announcement is bound to, if it has a live session.
    fn agent_lease(
        &self,
        agent: &str,
    ) -> impl Future<Output = Result<Option<LeaseId>, StoreError>> + Send;

    /// Agents with a live session, by id, with the facts they announced.
    fn agents(&self) -> impl Future<Output = Result<Vec<(String, Vec<u8>)>, StoreError>> + Send;
}
