//! The embedded default: etcd's semantics in one process. One revision counter for the
//! whole store (so tokens and epochs are unique and increasing), keys bound to leases, leases
//! that lapse on the monotonic clock (checked at every operation).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::{Claim, Epoch, FenceToken, Leadership, LeaseId, Store, StoreError, keys};

#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    revision: i64,
    last_lease: LeaseId,
    leases: HashMap<LeaseId, Lease>,
    entries: BTreeMap<String, Entry>,
}

#[derive(Debug)]
struct Lease {
    ttl: Duration,
    deadline: Instant,
}

#[derive(Debug, Clone)]
struct Entry {
    value: Vec<u8>,
    create_revision: i64,
    lease: Option<LeaseId>,
}

impl State {
    /// Drops lapsed leases and every key bound to them.
    fn expire(&mut self) {
        let now = Instant::now();
        let lapsed: Vec<LeaseId> = self
            .leases
            .iter()
            .filter(|(_, lease)| lease.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in lapsed {
            self.drop_lease(id);
        }
    }

    fn drop_lease(&mut self, id: LeaseId) {
        self.leases.remove(&id);
        self.entries.retain(|_, entry| entry.lease != Some(id));
    }

    fn create(
        &mut self,
        key: String,
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> Result<i64, StoreError> {
        if let Some(id) = lease
            && !self.leases.contains_key(&id)
        {
            return Err(StoreError::LeaseExpired(id));
        }
        self.revision += 1;
        let entry = Entry {
            value: value.to_vec(),
            create_revision: self.revision,
            lease,
        };
        self.entries.insert(key, entry);
        Ok(self.revision)
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
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
        let key = keys::claim(shard);
        self.with_state(|state| {
            if let Some(existing) = state.entries.get(&key) {
                return Err(StoreError::Claimed {
                    shard: shard.to_owned(),
                    holder: text(&key, &existing.value)?,
                    token: existing.create_revision,
                });
            }
            let token = state.create(key, holder.as_bytes(), Some(lease))?;
            Ok(Claim {
                shard: shard.to_owned(),
                holder: holder.to_owned(),
                token: FenceToken(token),
                lease,
            })
        })
    }

    async fn claim_of(&self, shard: &str) -> Result<Option<Claim>, StoreError> {
        let key = keys::claim(shard);
        self.with_state(|state| {
            let Some(entry) = state.entries.get(&key) else {
                return Ok(None);
            };
            Ok(Some(Claim {
                shard: shard.to_owned(),
                holder: text(&key, &entry.value)?,
                token: FenceToken(entry.create_revision),
                lease: entry.lease.unwrap_or_default(),
            }))
        })
    }

    async fn release(&self, claim: &Claim) -> Result<bool, StoreError> {
        let key = keys::claim(&claim.shard);
        self.with_state(|state| {
            let ours = state
                .entries
                .get(&key)
                .is_some_and(|entry| entry.create_revision == claim.token.0);
            if ours {
                state.revision += 1;
                state.entries.remove(&key);
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
            let epoch = state.create(key, candidate.as_bytes(), Some(lease))?;
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

    async fn put_as_leader(&self, epoch: Epoch, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.with_state(|state| {
            let current = state
                .entries
                .get(&keys::leader())
                .map(|entry| entry.create_revision);
            if current != Some(epoch.0) {
                return Err(StoreError::NotLeader(epoch.0));
            }
            state.revision += 1;
            let entry = Entry {
                value: value.to_vec(),
                create_revision: state
                    .entries
                    .get(&keys::state(key))
                    .map_or(state.revision, |existing| existing.create_revision),
                lease: None,
            };
            state.entries.insert(keys::state(key), entry);
            Ok(())
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
                .create(keys::agent(agent), facts, Some(lease))
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
                .entries
                .range(prefix.clone()..)
                .take_while(|(key, _)| key.starts_with(&prefix))
                .map(|(key, entry)| (key[prefix.len()..].to_owned(), entry.value.clone()))
                .collect())
        })
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.with_state(|state| {
            Ok(state
                .entries
                .get(&keys::state(key))
                .map(|entry| entry.value.clone()))
        })
    }
}
