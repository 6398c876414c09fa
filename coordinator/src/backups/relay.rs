//! Every replica hands the backup requests of agents whose sessions it holds down their
//! streams: those outstanding when it starts following, new ones as they are written, and an
//! agent's outstanding ones again when its session (re)opens here. The agent ignores a request
//! it is already working on.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use fleetshift_common::proto::v1::BackupRequest;
use fleetshift_common::proto::v1::coordinator_message::Body as CoordinatorBody;
use prost::Message;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::mailbox::Mailbox;
use crate::store::{Store, StoreError, keys};

/// Pause before following again after the store failed.
const RETRY: Duration = Duration::from_millis(500);

/// Relays until `shutdown`.
pub async fn run<S: Store>(store: Arc<S>, mailbox: Arc<Mailbox>, shutdown: CancellationToken) {
    let mut relay = Relay {
        store,
        mailbox,
        outstanding: HashMap::new(),
        delivered: HashSet::new(),
    };
    loop {
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return,
            outcome = relay.follow() => outcome,
        };
        if let Err(error) = outcome {
            tracing::warn!(%error, "relaying backup requests interrupted; following again");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}

struct Relay<S> {
    store: Arc<S>,
    mailbox: Arc<Mailbox>,
    /// Requests not answered yet, by key.
    outstanding: HashMap<String, BackupRequest>,
    /// (session, key) pairs handed over.
    delivered: HashSet<(u64, String)>,
}

fn agent_of_key(key: &str) -> Option<&str> {
    key.strip_prefix(&keys::backup_requests_prefix())?
        .split_once('/')
        .map(|(agent, _)| agent)
}

fn decode(key: &str, value: &[u8]) -> Result<BackupRequest, StoreError> {
    BackupRequest::decode(value).map_err(|error| StoreError::Corrupt {
        key: key.to_owned(),
        detail: error.to_string(),
    })
}

impl<S: Store> Relay<S> {
    async fn follow(&mut self) -> Result<(), StoreError> {
        let mut openings = self.mailbox.subscribe_openings();
        let prefix = keys::backup_requests_prefix();
        let listing = self.store.list(&prefix).await?;
        self.outstanding.clear();
        for entry in &listing.entries {
            self.outstanding
                .insert(entry.key.clone(), decode(&entry.key, &entry.value)?);
        }
        self.deliver_where(|_| true).await;
        let mut changes = self.store.watch(&prefix, listing.revision).await?;
        loop {
            tokio::select! {
                change = changes.next() => {
                    let change = change.ok_or_else(|| StoreError::Unavailable("the watch ended".to_owned()))??;
                    match change.value {
                        Some(value) => {
                            self.outstanding.insert(change.key.clone(), decode(&change.key, &value)?);
                            self.deliver(&change.key).await;
                        }
                        None => {
                            self.outstanding.remove(&change.key);
                            self.delivered.retain(|(_, key)| *key != change.key);
                        }
                    }
                }
                opened = openings.recv() => match opened {
                    Ok(agent) => self.deliver_where(|key| agent_of_key(key) == Some(agent.as_str())).await,
                    Err(broadcast::error::RecvError::Lagged(_)) => self.deliver_where(|_| true).await,
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                },
            }
        }
    }

    async fn deliver_where(&mut self, wanted: impl Fn(&str) -> bool) {
        let keys: Vec<String> = self
            .outstanding
            .keys()
            .filter(|key| wanted(key))
            .cloned()
            .collect();
        for key in keys {
            self.deliver(&key).await;
        }
    }

    /// Hands the request at `key` to its agent if its session is here and has not had it.
    async fn deliver(&mut self, key: &str) {
        let Some(agent) = agent_of_key(key) else {
            return;
        };
        let Some(session) = self.mailbox.session_of(agent) else {
            return;
        };
        let Some(request) = self.outstanding.get(key).cloned() else {
            return;
        };
        if !self.delivered.insert((session, key.to_owned())) {
            return;
        }
        let id = request.request_id.clone();
        if let Err(error) = self
            .mailbox
            .send(agent, CoordinatorBody::BackupRequest(request))
            .await
        {
            self.delivered.remove(&(session, key.to_owned()));
            tracing::warn!(%agent, request = %id, %error, "backup request not delivered; it is delivered again when the agent reconnects");
        } else {
            tracing::info!(%agent, request = %id, "backup request delivered");
        }
    }
}
