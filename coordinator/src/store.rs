//! Fleet state: leases, per-shard claims and leadership, in etcd or in memory.
//!
//! - A **lease** belongs to one agent session; keys bound to it vanish when it lapses.
//! - A **claim** on a shard is a key created only if absent (`create_revision == 0`), bound to
//!   the holder's lease. Its `create_revision` is the **fencing token** handed to the agent:
//!   unique and increasing across the whole store (lease ids are not ordered: never tokens).
//! - **Leadership** is the same mechanism on one key; its `create_revision` is the leader's
//!   **epoch**, and every write the leader makes is a transaction comparing it, so a deposed
//!   leader's late writes are refused.

mod etcd;
mod keys;
mod memory;

use std::future::Future;
use std::time::Duration;

pub use etcd::EtcdStore;
pub use memory::MemoryStore;

/// An etcd lease id (or the in-memory store's equivalent).
pub type LeaseId = i64;

/// The claim key's create revision: what the shard's ledger fences with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FenceToken(pub i64);

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
        token: i64,
    },
    #[error("not the leader: epoch {0} is over")]
    NotLeader(i64),
    #[error("unexpected data in the store at {key}: {detail}")]
    Corrupt { key: String, detail: String },
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

    /// Writes fleet state, only while `epoch` is the current leadership.
    fn put_as_leader(
        &self,
        epoch: Epoch,
        key: &str,
        value: &[u8],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;

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
