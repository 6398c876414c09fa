//! Every replica hands the host requests of agents whose sessions it holds down their
//! streams: those outstanding when it starts following, new ones as they are written, and an
//! agent's outstanding ones again when its session (re)opens here. The agent ignores a request
//! it is already working on.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use fleetshift_common::proto::v1::HostRequest;
use fleetshift_common::proto::v1::coordinator_message::Body as CoordinatorBody;
use prost::Message;
use tokio_util::sync::CancellationToken;

use crate::agent_relay::{self, Relay, agent_of_key};
use crate::mailbox::Mailbox;
use crate::store::{Store, StoreError, keys};

/// Relays until `shutdown`.
pub async fn run<S: Store>(store: Arc<S>, mailbox: Arc<Mailbox>, shutdown: CancellationToken) {
    let relay = Requests {
        mailbox: Arc::clone(&mailbox),
        outstanding: HashMap::new(),
        delivered: HashSet::new(),
    };
    agent_relay::run(&*store, &mailbox, relay, shutdown).await;
}

struct Requests {
    mailbox: Arc<Mailbox>,
    /// Requests not answered yet, by key.
    outstanding: HashMap<String, HostRequest>,
    /// (session, key) pairs handed over.
    delivered: HashSet<(u64, String)>,
}

impl Relay for Requests {
    type Error = StoreError;
    const WHAT: &'static str = "host requests";

    fn prefix(&self) -> String {
        keys::host_requests_prefix()
    }

    fn clear(&mut self) {
        self.outstanding.clear();
    }

    fn insert(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let request = HostRequest::decode(value).map_err(|error| StoreError::Corrupt {
            key: key.to_owned(),
            detail: error.to_string(),
        })?;
        self.outstanding.insert(key.to_owned(), request);
        Ok(())
    }

    async fn remove(&mut self, key: &str) {
        self.outstanding.remove(key);
        self.delivered.retain(|(_, delivered)| delivered != key);
    }

    fn keys(&self) -> Vec<String> {
        self.outstanding.keys().cloned().collect()
    }

    async fn deliver(&mut self, key: &str) -> Result<(), StoreError> {
        let Some(agent) = agent_of_key(&self.prefix(), key).map(str::to_owned) else {
            return Ok(());
        };
        let Some(session) = self.mailbox.session_of(&agent) else {
            return Ok(());
        };
        let Some(request) = self.outstanding.get(key).cloned() else {
            return Ok(());
        };
        if !self.delivered.insert((session, key.to_owned())) {
            return Ok(());
        }
        let id = request.request_id.clone();
        if let Err(error) = self
            .mailbox
            .send(&agent, CoordinatorBody::HostRequest(request))
            .await
        {
            self.delivered.remove(&(session, key.to_owned()));
            tracing::warn!(%agent, request = %id, %error, "host request not delivered; it is delivered again when the agent reconnects");
        } else {
            tracing::info!(%agent, request = %id, "host request delivered");
        }
        Ok(())
    }
}
