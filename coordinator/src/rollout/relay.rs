//! Every replica's half of a rollout: it follows the assignments the leader writes and hands
//! those of agents whose sessions it holds down their streams, with the migration set's files
//! attached (read once per set). An assignment stands only as long as its claim: the leader
//! writes it while the claim stands, bound to the same session lease, and deletes it with the
//! release. A withdrawn assignment becomes a Cancel; an agent that (re)connects gets its
//! outstanding assignments again (the agent ignores ones it is already running). The shard's
//! ledger, not the relay, fences out a run whose claim is gone.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use fleetshift_common::proto::v1::coordinator_message::Body as CoordinatorBody;
use fleetshift_common::proto::v1::{self, Cancel, Dispatch};
use tokio_util::sync::CancellationToken;

use super::RolloutError;
use super::records::{decode, load_set};
use crate::agent_relay::{self, Relay, agent_of_key};
use crate::mailbox::Mailbox;
use crate::store::{Store, keys};

/// Relays until `shutdown`.
pub async fn run<S: Store>(store: Arc<S>, mailbox: Arc<Mailbox>, shutdown: CancellationToken) {
    let relay = Assignments {
        store: Arc::clone(&store),
        mailbox: Arc::clone(&mailbox),
        dispatches: HashMap::new(),
        delivered: HashSet::new(),
        sets: HashMap::new(),
    };
    agent_relay::run(&*store, &mailbox, relay, shutdown).await;
}

struct Assignments<S> {
    store: Arc<S>,
    mailbox: Arc<Mailbox>,
    /// Outstanding assignments by key.
    dispatches: HashMap<String, Dispatch>,
    /// (session, assignment) pairs handed over.
    delivered: HashSet<(u64, String)>,
    /// Migration sets by digest.
    sets: HashMap<String, Arc<v1::MigrationSet>>,
}

impl<S: Store> Relay for Assignments<S> {
    type Error = RolloutError;
    const WHAT: &'static str = "assignments";

    fn prefix(&self) -> String {
        keys::assignments_prefix()
    }

    fn clear(&mut self) {
        self.dispatches.clear();
    }

    fn insert(&mut self, key: &str, value: &[u8]) -> Result<(), RolloutError> {
        let dispatch: Dispatch = decode(key, value)?;
        self.dispatches.insert(key.to_owned(), dispatch);
        Ok(())
    }

    async fn remove(&mut self, key: &str) {
        self.withdraw(key).await;
    }

    fn keys(&self) -> Vec<String> {
        self.dispatches.keys().cloned().collect()
    }

    async fn deliver(&mut self, key: &str) -> Result<(), RolloutError> {
        self.hand_over(key).await
    }
}

impl<S: Store> Assignments<S> {
    /// Hands the assignment at `key` to its agent if its session is here and has not had it.
    async fn hand_over(&mut self, key: &str) -> Result<(), RolloutError> {
        let Some(agent) = agent_of_key(&keys::assignments_prefix(), key) else {
            return Ok(());
        };
        let Some(session) = self.mailbox.session_of(agent) else {
            return Ok(());
        };
        let Some(Dispatch {
            assignment: Some(mut assignment),
            ..
        }) = self.dispatches.get(key).cloned()
        else {
            return Ok(());
        };
        let id = assignment.assignment_id.clone();
        if self.delivered.contains(&(session, id.clone())) {
            return Ok(());
        }
        if let Some(shipped) = assignment.migration_set.as_mut() {
            shipped.files = self.set(&shipped.digest).await?.files.clone();
        }
        if let Some(baseline) = assignment.baseline.as_mut() {
            baseline.schema_sql =
                crate::schema_baselines::sql(&*self.store, &baseline.baseline_id).await?;
        }
        let agent = agent.to_owned();
        match self
            .mailbox
            .send(&agent, CoordinatorBody::Assignment(assignment))
            .await
        {
            Ok(()) => {
                tracing::info!(%agent, assignment = %id, "assignment delivered");
                self.delivered.insert((session, id));
            }
            Err(error) => {
                tracing::warn!(%agent, assignment = %id, %error, "assignment not delivered; it is delivered again when the agent reconnects");
            }
        }
        Ok(())
    }

    async fn withdraw(&mut self, key: &str) {
        let Some(dispatch) = self.dispatches.remove(key) else {
            return;
        };
        let Some(assignment) = dispatch.assignment else {
            return;
        };
        let id = assignment.assignment_id;
        self.delivered.retain(|(_, delivered)| *delivered != id);
        let Some(agent) = agent_of_key(&keys::assignments_prefix(), key) else {
            return;
        };
        let cancel = Cancel {
            assignment_id: id,
            reason: "withdrawn by the coordinator (finished, cancelled or reassigned)".to_owned(),
        };
        // Not connected here, or gone: nothing to stop on this replica.
        let _ = self
            .mailbox
            .send(agent, CoordinatorBody::Cancel(cancel))
            .await;
    }

    async fn set(&mut self, digest: &str) -> Result<Arc<v1::MigrationSet>, RolloutError> {
        if let Some(set) = self.sets.get(digest) {
            return Ok(Arc::clone(set));
        }
        let set = Arc::new(load_set(&*self.store, digest).await?);
        self.sets.insert(digest.to_owned(), Arc::clone(&set));
        Ok(set)
    }
}

#[cfg(test)]
mod tests;
