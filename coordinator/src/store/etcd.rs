//! The store in etcd (etcd-client). Every claim, release, campaign and leader write is ONE
//! transaction; tokens and epochs are etcd revisions.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, KeyValue, PutOptions, Txn, TxnOp,
    TxnOpResponse, TxnResponse, WatchOptions,
};
use tokio::sync::mpsc;

mod keepers;

use keepers::Keepers;

use super::{
    Change, Changes, Claim, Condition, Entry, Epoch, FenceToken, Leadership, LeaseId, Listing,
    Store, StoreError, Transaction, Write, keys,
};

#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    keepers: Arc<Keepers>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("EtcdStore")
    }
}

impl EtcdStore {
    pub async fn connect(endpoints: &[String]) -> Result<Self, StoreError> {
        let client = Client::connect(endpoints, None)
            .await
            .map_err(unavailable)?;
        Ok(Self {
            client,
            keepers: Arc::default(),
        })
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        self.client.clone().txn(txn).await.map_err(unavailable)
    }

    /// Sends a commit of `writes`; a lapsed lease of one of them is [`StoreError::LeaseExpired`].
    async fn send<'w>(
        &self,
        txn: Txn,
        writes: impl IntoIterator<Item = &'w Write>,
    ) -> Result<TxnResponse, StoreError> {
        let lease = writes.into_iter().find_map(|write| match write {
            Write::Put { lease, .. } => *lease,
            Write::Delete(_) => None,
        });
        self.client
            .clone()
            .txn(txn)
            .await
            .map_err(|error| match lease {
                Some(lease) => lease_or_unavailable(error, lease),
                None => unavailable(error),
            })
    }

    /// Creates `key` bound to `lease` unless it exists; otherwise returns what is there.
    async fn create_or_read(
        &self,
        key: &str,
        value: &str,
        lease: LeaseId,
    ) -> Result<Result<i64, KeyValue>, StoreError> {
        let txn = Txn::new()
            .when(vec![Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then(vec![TxnOp::put(
                key,
                value,
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else(vec![TxnOp::get(key, None)]);
        let response = self
            .client
            .clone()
            .txn(txn)
            .await
            .map_err(|error| lease_or_unavailable(error, lease))?;
        if response.succeeded() {
            return Ok(Ok(revision(&response)?));
        }
        first_kv(response, key).map(Err)
    }
}

/// Keys per page of a listing, at most (fewer when their values are large).
const LIST_PAGE: i64 = 1000;

/// The first key after every key that starts with `prefix` (its last byte incremented, bytes
/// of 0xff dropped first); empty (to the end of the key space) when there is none.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn unavailable(error: etcd_client::Error) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

fn lease_or_unavailable(error: etcd_client::Error, lease: LeaseId) -> StoreError {
    if error.to_string().contains("lease not found") {
        StoreError::LeaseExpired(lease)
    } else {
        unavailable(error)
    }
}

fn revision(response: &TxnResponse) -> Result<i64, StoreError> {
    response
        .header()
        .map(|header| header.revision())
        .ok_or_else(|| StoreError::Unavailable("etcd answered without a header".to_owned()))
}

/// The key read by a transaction's `or_else` get (it vanished if `None`).
fn first_kv(response: TxnResponse, key: &str) -> Result<KeyValue, StoreError> {
    response
        .op_responses()
        .into_iter()
        .find_map(|operation| match operation {
            TxnOpResponse::Get(get) => get.kvs().first().cloned(),
            _ => None,
        })
        .ok_or_else(|| {
            StoreError::Unavailable(format!("{key} changed during the transaction; retry"))
        })
}

fn compare(condition: &Condition) -> Compare {
    match condition {
        Condition::Absent(key) => Compare::create_revision(key.as_str(), CompareOp::Equal, 0),
        Condition::CreatedAt(key, revision) => {
            Compare::create_revision(key.as_str(), CompareOp::Equal, *revision)
        }
        Condition::ModifiedAt(key, revision) => {
            Compare::mod_revision(key.as_str(), CompareOp::Equal, *revision)
        }
    }
}

/// The condition "the leadership of `epoch` stands".
fn leads(epoch: Epoch) -> Compare {
    Compare::create_revision(keys::leader(), CompareOp::Equal, epoch.0)
}

/// A refused commit's verdict on the epoch, from its `or_else` read of the leader key:
/// [`StoreError::NotLeader`] when `epoch` no longer leads (a condition failed otherwise).
fn still_leading(response: &TxnResponse, epoch: Option<Epoch>) -> Result<(), StoreError> {
    let Some(epoch) = epoch else {
        return Ok(());
    };
    let leader = response
        .op_responses()
        .into_iter()
        .find_map(|operation| match operation {
            TxnOpResponse::Get(get) => get.kvs().first().map(KeyValue::create_revision),
            _ => None,
        });
    if leader == Some(epoch.0) {
        Ok(())
    } else {
        Err(StoreError::NotLeader(epoch.0))
    }
}

fn operation(write: &Write) -> TxnOp {
    match write {
        Write::Put { key, value, lease } => TxnOp::put(
            key.as_str(),
            value.clone(),
            lease.map(|lease| PutOptions::new().with_lease(lease)),
        ),
        Write::Delete(key) => TxnOp::delete(key.as_str(), None),
    }
}

fn entry(kv: &KeyValue) -> Result<Entry, StoreError> {
    let key = kv.key_str().map_err(|error| StoreError::Corrupt {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        detail: error.to_string(),
    })?;
    Ok(Entry {
        key: key.to_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        lease: kv.lease(),
    })
}

fn text(kv: &KeyValue) -> Result<String, StoreError> {
    kv.value_str()
        .map(str::to_owned)
        .map_err(|error| StoreError::Corrupt {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            detail: error.to_string(),
        })
}

impl Store for EtcdStore {
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let seconds = i64::try_from(ttl.as_secs().max(1) + u64::from(ttl.subsec_nanos() > 0))
            .unwrap_or(i64::MAX);
        let granted = self
            .client
            .clone()
            .lease_grant(seconds, None)
            .await
            .map_err(unavailable)?;
        Ok(granted.id())
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        self.keepers.keep_alive(&self.client, lease).await
    }

    async fn revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.keepers.forget(lease);
        match self.client.clone().lease_revoke(lease).await {
            Ok(_) => Ok(()),
            Err(error) => match lease_or_unavailable(error, lease) {
                StoreError::LeaseExpired(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn claim(&self, shard: &str, holder: &str, lease: LeaseId) -> Result<Claim, StoreError> {
        match self
            .create_or_read(&crate::claims::key(shard), holder, lease)
            .await?
        {
            Ok(token) => Ok(Claim {
                shard: shard.to_owned(),
                holder: holder.to_owned(),
                token: FenceToken::from_raw(token),
                lease,
            }),
            Err(existing) => Err(StoreError::Claimed {
                shard: shard.to_owned(),
                holder: text(&existing)?,
                token: FenceToken::from_raw(existing.create_revision()),
            }),
        }
    }

    async fn claim_of(&self, shard: &str) -> Result<Option<Claim>, StoreError> {
        let response = self
            .client
            .clone()
            .get(crate::claims::key(shard), None)
            .await
            .map_err(unavailable)?;
        let Some(kv) = response.kvs().first() else {
            return Ok(None);
        };
        Ok(Some(Claim {
            shard: shard.to_owned(),
            holder: text(kv)?,
            token: FenceToken::from_raw(kv.create_revision()),
            lease: kv.lease(),
        }))
    }

    async fn release(&self, claim: &Claim) -> Result<bool, StoreError> {
        let key = crate::claims::key(&claim.shard);
        let txn = Txn::new()
            .when(vec![Compare::create_revision(
                key.as_str(),
                CompareOp::Equal,
                claim.token.get(),
            )])
            .and_then(vec![TxnOp::delete(key.as_str(), None)]);
        Ok(self.txn(txn).await?.succeeded())
    }

    async fn campaign(
        &self,
        candidate: &str,
        lease: LeaseId,
    ) -> Result<Option<Leadership>, StoreError> {
        match self
            .create_or_read(&keys::leader(), candidate, lease)
            .await?
        {
            Ok(epoch) => Ok(Some(Leadership {
                leader: candidate.to_owned(),
                epoch: Epoch(epoch),
            })),
            Err(existing) => {
                let leader = text(&existing)?;
                let already_ours = leader == candidate && existing.lease() == lease;
                Ok(already_ours.then(|| Leadership {
                    leader,
                    epoch: Epoch(existing.create_revision()),
                }))
            }
        }
    }

    async fn leader(&self) -> Result<Option<Leadership>, StoreError> {
        let response = self
            .client
            .clone()
            .get(keys::leader(), None)
            .await
            .map_err(unavailable)?;
        let Some(kv) = response.kvs().first() else {
            return Ok(None);
        };
        Ok(Some(Leadership {
            leader: text(kv)?,
            epoch: Epoch(kv.create_revision()),
        }))
    }

    async fn commit(
        &self,
        epoch: Option<Epoch>,
        conditions: &[Condition],
        writes: &[Write],
    ) -> Result<Option<i64>, StoreError> {
        let mut compares: Vec<Compare> = conditions.iter().map(compare).collect();
        compares.extend(epoch.map(leads));
        let txn = Txn::new()
            .when(compares)
            .and_then(writes.iter().map(operation).collect::<Vec<_>>())
            .or_else(vec![TxnOp::get(keys::leader(), None)]);
        let response = self.send(txn, writes).await?;
        if response.succeeded() {
            return revision(&response).map(Some);
        }
        still_leading(&response, epoch)?;
        Ok(None)
    }

    async fn commit_each(
        &self,
        epoch: Option<Epoch>,
        transactions: &[Transaction],
    ) -> Result<Vec<Option<i64>>, StoreError> {
        let nested = transactions
            .iter()
            .map(|transaction| {
                TxnOp::txn(
                    Txn::new()
                        .when(
                            transaction
                                .conditions
                                .iter()
                                .map(compare)
                                .collect::<Vec<_>>(),
                        )
                        .and_then(transaction.writes.iter().map(operation).collect::<Vec<_>>()),
                )
            })
            .collect::<Vec<_>>();
        let txn = Txn::new()
            .when(epoch.map(leads).into_iter().collect::<Vec<_>>())
            .and_then(nested)
            .or_else(vec![TxnOp::get(keys::leader(), None)]);
        let writes: Vec<&Write> = transactions
            .iter()
            .flat_map(|transaction| &transaction.writes)
            .collect();
        let response = self.send(txn, writes).await?;
        if !response.succeeded() {
            still_leading(&response, epoch)?;
            return Ok(vec![None; transactions.len()]);
        }
        let at = revision(&response)?;
        let applied: Vec<Option<i64>> = response
            .op_responses()
            .into_iter()
            .map(|operation| match operation {
                TxnOpResponse::Txn(nested) => nested.succeeded().then_some(at),
                _ => None,
            })
            .collect();
        if applied.len() != transactions.len() {
            return Err(StoreError::Unavailable(format!(
                "etcd answered {} of {} transactions",
                applied.len(),
                transactions.len()
            )));
        }
        Ok(applied)
    }

    async fn read(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let response = self
            .client
            .clone()
            .get(key, None)
            .await
            .map_err(unavailable)?;
        response.kvs().first().map(entry).transpose()
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        // In pages read at the first page's revision: one answer for a whole prefix outgrows
        // the client's 4 MiB limit (measured: the tasks of two rollouts over 10,000 shards).
        let end = prefix_end(prefix);
        let mut entries = Vec::new();
        let mut from = prefix.as_bytes().to_vec();
        let mut revision = None;
        let mut page = LIST_PAGE;
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(page);
            if let Some(at) = revision {
                options = options.with_revision(at);
            }
            let response = match self.client.clone().get(from.clone(), Some(options)).await {
                Ok(response) => response,
                // Large values: fewer per page, down to one.
                Err(error)
                    if page > 1 && error.to_string().contains("message length too large") =>
                {
                    page /= 2;
                    continue;
                }
                Err(error) => return Err(unavailable(error)),
            };
            let at = response
                .header()
                .map(|header| header.revision())
                .ok_or_else(|| {
                    StoreError::Unavailable("etcd answered without a header".to_owned())
                })?;
            revision.get_or_insert(at);
            for kv in response.kvs() {
                entries.push(entry(kv)?);
            }
            match response.kvs().last() {
                Some(last) if response.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        Ok(Listing {
            entries,
            revision: revision.unwrap_or_default(),
        })
    }

    async fn watch(&self, prefix: &str, after: i64) -> Result<Changes, StoreError> {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(after + 1);
        let mut stream = self
            .client
            .clone()
            .watch(prefix, Some(options))
            .await
            .map_err(unavailable)?;
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let response = tokio::select! {
                    () = sender.closed() => return,
                    response = stream.message() => response,
                };
                let response = match response {
                    Ok(Some(response)) => response,
                    Ok(None) => {
                        let _ = sender.send(Err(StoreError::Unavailable(
                            "etcd ended the watch".to_owned(),
                        )));
                        return;
                    }
                    Err(error) => {
                        let _ = sender.send(Err(unavailable(error)));
                        return;
                    }
                };
                if response.canceled() && response.compact_revision() > 0 {
                    let _ = sender.send(Err(StoreError::Compacted(response.compact_revision())));
                    return;
                }
                if response.canceled() {
                    let _ = sender.send(Err(StoreError::Unavailable(format!(
                        "etcd cancelled the watch (compacted at {}): {}",
                        response.compact_revision(),
                        response.cancel_reason()
                    ))));
                    return;
                }
                for event in response.events() {
                    let Some(kv) = event.kv() else { continue };
                    let put = event.event_type() == EventType::Put;
                    let change = Change {
                        key: String::from_utf8_lossy(kv.key()).into_owned(),
                        value: put.then(|| kv.value().to_vec()),
                        revision: kv.mod_revision(),
                        create_revision: if put { kv.create_revision() } else { 0 },
                        lease: if put { kv.lease() } else { 0 },
                    };
                    if sender.send(Ok(change)).is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Changes(receiver))
    }

    async fn announce_agent(
        &self,
        agent: &str,
        facts: &[u8],
        lease: LeaseId,
    ) -> Result<(), StoreError> {
        self.client
            .clone()
            .put(
                keys::agent(agent),
                facts,
                Some(PutOptions::new().with_lease(lease)),
            )
            .await
            .map(drop)
            .map_err(|error| lease_or_unavailable(error, lease))
    }

    async fn agent_lease(&self, agent: &str) -> Result<Option<LeaseId>, StoreError> {
        let response = self
            .client
            .clone()
            .get(keys::agent(agent), None)
            .await
            .map_err(unavailable)?;
        Ok(response
            .kvs()
            .first()
            .map(KeyValue::lease)
            .filter(|lease| *lease != 0))
    }

    async fn agents(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let prefix = keys::agents_prefix();
        let response = self
            .client
            .clone()
            .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(unavailable)?;
        response
            .kvs()
            .iter()
            .map(|kv| {
                let key = kv.key_str().map_err(|error| StoreError::Corrupt {
                    key: prefix.clone(),
                    detail: error.to_string(),
                })?;
                Ok((key[prefix.len()..].to_owned(), kv.value().to_vec()))
            })
            .collect()
    }
}
