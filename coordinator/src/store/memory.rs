//! The embedded default: etcd's semantics in one process. One revision counter for the
//! whole store (so tokens and epochs are unique and increasing), keys bound to leases, leases
//! that lapse on the monotonic clock (checked at every operation), and a bounded log of
//! changes that watchers replay from their start revision.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{
    Change, Changes, Claim, Condition, Entry, Epoch, FenceToken, Leadership, LeaseId, Listing,
    Store, StoreError, Transaction, Write, keys,
};

/// Changes kept for watchers that start in the past.
const CHANGE_LOG: usize = 100_000;

#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    revision: i64,
    last_lease: LeaseId,
    leases: HashMap<LeaseId, Lease>,
    /// No lease lapses before this (renewals only push deadlines later): until then, nothing
    /// to look for. None when there is no lease.
    earliest_deadline: Option<Instant>,
    entries: BTreeMap<String, Stored>,
    log: VecDeque<Change>,
    watchers: Vec<Watcher>,
}

#[derive(Debug)]
struct Lease {
    ttl: Duration,
    deadline: Instant,
}

#[derive(Debug, Clone)]
struct Stored {
    value: Vec<u8>,
    create_revision: i64,
    mod_revision: i64,
    lease: Option<LeaseId>,
}

#[derive(Debug)]
struct Watcher {
    prefix: String,
    sender: mpsc::UnboundedSender<Result<Change, StoreError>>,
}

impl State {
    /// Drops lapsed leases and every key bound to them.
    fn expire(&mut self) {
        let now = Instant::now();
        if self.earliest_deadline.is_none_or(|earliest| now < earliest) {
            return;
        }
        let lapsed: Vec<LeaseId> = self
            .leases
            .iter()
            .filter(|(_, lease)| lease.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in lapsed {
            self.drop_lease(id);
        }
        self.earliest_deadline = self.leases.values().map(|lease| lease.deadline).min();
    }

    fn drop_lease(&mut self, id: LeaseId) {
        if self.leases.remove(&id).is_none() {
            return;
        }
        let bound: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, entry)| entry.lease == Some(id))
            .map(|(key, _)| key.clone())
            .collect();
        if !bound.is_empty() {
            self.revision += 1;
            for key in bound {
                self.delete(&key);
            }
        }
    }

    fn check_lease(&self, lease: Option<LeaseId>) -> Result<(), StoreError> {
        match lease {
            Some(id) if !self.leases.contains_key(&id) => Err(StoreError::LeaseExpired(id)),
            _ => Ok(()),
        }
    }

    /// Sets `key` at the current revision (the caller has advanced it).
    fn put(&mut self, key: &str, value: &[u8], lease: Option<LeaseId>) {
        let revision = self.revision;
        let create_revision = self
            .entries
            .get(key)
            .map_or(revision, |existing| existing.create_revision);
        let stored = Stored {
            value: value.to_vec(),
            create_revision,
            mod_revision: revision,
            lease,
        };
        self.entries.insert(key.to_owned(), stored);
        self.record(
            key,
            Some(value.to_vec()),
            create_revision,
            lease.unwrap_or_default(),
        );
    }

    fn delete(&mut self, key: &str) {
        if self.entries.remove(key).is_some() {
            self.record(key, None, 0, 0);
        }
    }

    /// Creates `key` in a revision of its own.
    fn create(
        &mut self,
        key: &str,
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> Result<i64, StoreError> {
        self.check_lease(lease)?;
        self.revision += 1;
        self.entries.remove(key);
        self.put(key, value, lease);
        Ok(self.revision)
    }

    fn record(&mut self, key: &str, value: Option<Vec<u8>>, create_revision: i64, lease: LeaseId) {
        let change = Change {
            key: key.to_owned(),
            value,
            revision: self.revision,
            create_revision,
            lease,
        };
        self.watchers.retain(|watcher| {
            !change.key.starts_with(&watcher.prefix)
                || watcher.sender.send(Ok(change.clone())).is_ok()
        });
        if self.log.len() == CHANGE_LOG {
            self.log.pop_front();
        }
        self.log.push_back(change);
    }

    /// Applies each part (conditions, writes) whose conditions hold, all at one new revision,
    /// while `epoch` leads; conditions are judged before any part applies. For each part, the
    /// revision it applied at, or `None`.
    fn commit_each<'p>(
        &mut self,
        epoch: Option<Epoch>,
        parts: impl IntoIterator<Item = (&'p [Condition], &'p [Write])>,
    ) -> Result<Vec<Option<i64>>, StoreError> {
        if let Some(epoch) = epoch
            && !self.holds(&Condition::CreatedAt(keys::leader(), epoch.0))
        {
            return Err(StoreError::NotLeader(epoch.0));
        }
        let parts: Vec<(bool, &[Write])> = parts
            .into_iter()
            .map(|(conditions, writes)| (conditions.iter().all(|c| self.holds(c)), writes))
            .collect();
        let applying = || {
            parts
                .iter()
                .filter(|(holds, _)| *holds)
                .flat_map(|(_, writes)| writes.iter())
        };
        for write in applying() {
            if let Write::Put { lease, .. } = write {
                self.check_lease(*lease)?;
            }
        }
        if !parts.iter().any(|(holds, _)| *holds) {
            return Ok(vec![None; parts.len()]);
        }
        self.revision += 1;
        for write in applying() {
            match write {
                Write::Put { key, value, lease } => self.put(key, value, *lease),
                Write::Delete(key) => self.delete(key),
            }
        }
        let revision = self.revision;
        Ok(parts
            .iter()
            .map(|(holds, _)| holds.then_some(revision))
            .collect())
    }

    fn holds(&self, condition: &Condition) -> bool {
        match condition {
            Condition::Absent(key) => !self.entries.contains_key(key),
            Condition::CreatedAt(key, revision) => self
                .entries
                .get(key)
                .is_some_and(|entry| entry.create_revision == *revision),
            Condition::ModifiedAt(key, revision) => self
                .entries
                .get(key)
                .is_some_and(|entry| entry.mod_revision == *revision),
        }
    }

    fn entry(&self, key: &str) -> Option<Entry> {
        self.entries.get(key).map(|stored| Entry {
            key: key.to_owned(),
            value: stored.value.clone(),
            create_revision: stored.create_revision,
            mod_revision: stored.mod_revision,
            lease: stored.lease.unwrap_or_default(),
        })
    }

    fn under(&self, prefix: &str) -> impl Iterator<Item = (&String, &Stored)> {
        self.entries
            .range(prefix.to_owned()..)
            .take_while(move |(key, _)| key.starts_with(prefix))
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Watches whose receiver is still held.
    #[cfg(test)]
    pub(crate) fn open_watches(&self) -> usize {
        self.with_state(|state| {
            Ok(state
                .watchers
                .iter()
                .filter(|watcher| !watcher.sender.is_closed())
                .count())
        })
        .unwrap_or_default()
    }

    /// Runs `operation` on the state after expiring lapsed leases.
    fn with_state<T>(
        &self,
        operation: impl FnOnce(&mut State) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut state = self.state.lock().map_err(|_| {
            StoreError::Unavailable("the in-memory store was poisoned by a panic".to_owned())
        })?;
        state.expire();
        operation(&mut state)
    }
}

fn text(key: &str, value: &[u8]) -> Result<String, StoreError> {
    String::from_utf8(value.to_vec()).map_err(|error| StoreError::Corrupt {
        key: key.to_owned(),
        detail: error.to_string(),
    })
}

impl Store for MemoryStore {
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        self.with_state(|state| {
            state.last_lease += 1;
            let lease = Lease {
                ttl,
                deadline: Instant::now() + ttl,
            };
            let deadline = lease.deadline;
            state.earliest_deadline = Some(
                state
                    .earliest_deadline
                    .map_or(deadline, |earliest| earliest.min(deadline)),
            );
            state.leases.insert(state.last_lease, lease);
            Ok(state.last_lease)
        })
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        self.with_state(|state| {
            let held = state
                .leases
                .get_mut(&lease)
                .ok_or(StoreError::LeaseExpired(lease))?;
            held.deadline = Instant::now() + held.ttl;
            Ok(held.ttl)
        })
    }

    async fn revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.with_state(|state| {
            state.drop_lease(lease);
            Ok(())
        })
    }

    async fn claim(&self, shard: &str, holder: &str, lease: LeaseId) -> Result<Claim, StoreError> {
        let key = crate::claims::key(shard);
        self.with_state(|state| {
            if let Some(existing) = state.entries.get(&key) {
                return Err(StoreError::Claimed {
                    shard: shard.to_owned(),
                    holder: text(&key, &existing.value)?,
                    token: FenceToken::from_raw(existing.create_revision),
                });
            }
            let token = state.create(&key, holder.as_bytes(), Some(lease))?;
            Ok(Claim {
                shard: shard.to_owned(),
                holder: holder.to_owned(),
                token: FenceToken::from_raw(token),
                lease,
            })
        })
    }

    async fn claim_of(&self, shard: &str) -> Result<Option<Claim>, StoreError> {
        let key = crate::claims::key(shard);
        self.with_state(|state| {
            let Some(entry) = state.entries.get(&key) else {
                return Ok(None);
            };
            Ok(Some(Claim {
                shard: shard.to_owned(),
                holder: text(&key, &entry.value)?,
                token: FenceToken::from_raw(entry.create_revision),
                lease: entry.lease.unwrap_or_default(),
            }))
        })
    }

    async fn release(&self, claim: &Claim) -> Result<bool, StoreError> {
        let key = crate::claims::key(&claim.shard);
        self.with_state(|state| {
            let ours = state
                .entries
                .get(&key)
                .is_some_and(|entry| entry.create_revision == claim.token.get());
            if ours {
                state.revision += 1;
                state.delete(&key);
            }
            Ok(ours)
        })
    }

    async fn campaign(
        &self,
        candidate: &str,
        lease: LeaseId,
    ) -> Result<Option<Leadership>, StoreError> {
        let key = keys::leader();
        self.with_state(|state| {
            if let Some(existing) = state.entries.get(&key) {
                let leader = text(&key, &existing.value)?;
                let already_ours = leader == candidate && existing.lease == Some(lease);
                return Ok(already_ours.then_some(Leadership {
                    leader,
                    epoch: Epoch(existing.create_revision),
                }));
            }
            let epoch = state.create(&key, candidate.as_bytes(), Some(lease))?;
            Ok(Some(Leadership {
                leader: candidate.to_owned(),
                epoch: Epoch(epoch),
            }))
        })
    }

    async fn leader(&self) -> Result<Option<Leadership>, StoreError> {
        let key = keys::leader();
        self.with_state(|state| {
            let Some(entry) = state.entries.get(&key) else {
                return Ok(None);
            };
            Ok(Some(Leadership {
                leader: text(&key, &entry.value)?,
                epoch: Epoch(entry.create_revision),
            }))
        })
    }

    async fn commit(
        &self,
        epoch: Option<Epoch>,
        conditions: &[Condition],
        writes: &[Write],
    ) -> Result<Option<i64>, StoreError> {
        self.with_state(|state| {
            let applied = state.commit_each(epoch, [(conditions, writes)])?;
            Ok(applied.into_iter().next().flatten())
        })
    }

    async fn commit_each(
        &self,
        epoch: Option<Epoch>,
        transactions: &[Transaction],
    ) -> Result<Vec<Option<i64>>, StoreError> {
        self.with_state(|state| {
            let parts = transactions
                .iter()
                .map(|transaction| (&transaction.conditions[..], &transaction.writes[..]));
            state.commit_each(epoch, parts)
        })
    }

    async fn read(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        self.with_state(|state| Ok(state.entry(key)))
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        self.with_state(|state| {
            let keys: Vec<String> = state.under(prefix).map(|(key, _)| key.clone()).collect();
            Ok(Listing {
                entries: keys.iter().filter_map(|key| state.entry(key)).collect(),
                revision: state.revision,
            })
        })
    }

    async fn watch(&self, prefix: &str, after: i64) -> Result<Changes, StoreError> {
        self.with_state(|state| {
            let oldest = state
                .log
                .front()
                .map_or(state.revision, |change| change.revision);
            if after + 1 < oldest && state.log.len() == CHANGE_LOG {
                return Err(StoreError::Compacted(oldest));
            }
            let (sender, receiver) = mpsc::unbounded_channel();
            for change in state
                .log
                .iter()
                .filter(|change| change.revision > after && change.key.starts_with(prefix))
            {
                // The receiver is still in hand: this cannot fail.
                let _ = sender.send(Ok(change.clone()));
            }
            state.watchers.push(Watcher {
                prefix: prefix.to_owned(),
                sender,
            });
            Ok(Changes(receiver))
        })
    }

    async fn announce_agent(
        &self,
        agent: &str,
        facts: &[u8],
        lease: LeaseId,
    ) -> Result<(), StoreError> {
        self.with_state(|state| {
            state
                .create(&keys::agent(agent), facts, Some(lease))
                .map(drop)
        })
    }

    async fn agent_lease(&self, agent: &str) -> Result<Option<LeaseId>, StoreError> {
        self.with_state(|state| {
            Ok(state
                .entries
                .get(&keys::agent(agent))
                .and_then(|entry| entry.lease))
        })
    }

    async fn agents(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let prefix = keys::agents_prefix();
        self.with_state(|state| {
            Ok(state
                .under(&prefix)
                .map(|(key, entry)| (key[prefix.len()..].to_owned(), entry.value.clone()))
                .collect())
        })
    }
}
