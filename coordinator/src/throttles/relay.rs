//! Every replica's half of the fleet throttles: it follows `throttles/` and sends every agent
//! whose session it holds the complete list in force, when the session opens and whenever a
//! throttle is set, lifted or expires. The agents hold their running shards with it; the
//! leader holds dispatch from its own model.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fleetshift_common::proto::v1::coordinator_message::Body as CoordinatorBody;
use fleetshift_common::proto::v1::{FleetThrottle, FleetThrottles};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::mailbox::Mailbox;
use crate::rollout::RolloutError;
use crate::rollout::records::decode;
use crate::store::{Store, StoreError, keys};

/// Pause before following again after the store failed.
const RETRY: Duration = Duration::from_millis(500);

/// Relays until `shutdown`.
pub async fn run<S: Store>(store: Arc<S>, mailbox: Arc<Mailbox>, shutdown: CancellationToken) {
    loop {
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return,
            outcome = follow(&*store, &mailbox) => outcome,
        };
        if let Err(error) = outcome {
            tracing::warn!(%error, "relaying fleet throttles interrupted; following again");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}

async fn follow<S: Store>(store: &S, mailbox: &Mailbox) -> Result<(), RolloutError> {
    let mut openings = mailbox.subscribe_openings();
    let prefix = keys::throttles_prefix();
    let listing = store.list(&prefix).await?;
    let mut throttles = BTreeMap::new();
    for entry in &listing.entries {
        throttles.insert(entry.key.clone(), decode(&entry.key, &entry.value)?);
    }
    send(mailbox, &throttles, mailbox.agents()).await;
    let mut changes = store.watch(&prefix, listing.revision).await?;
    loop {
        tokio::select! {
            change = changes.next() => {
                let change = change.ok_or_else(|| StoreError::Unavailable("the watch ended".to_owned()))??;
                match change.value {
                    Some(value) => throttles.insert(change.key.clone(), decode(&change.key, &value)?),
                    None => throttles.remove(&change.key),
                };
                send(mailbox, &throttles, mailbox.agents()).await;
            }
            opened = openings.recv() => match opened {
                Ok(agent) => send(mailbox, &throttles, vec![agent]).await,
                Err(broadcast::error::RecvError::Lagged(_)) => send(mailbox, &throttles, mailbox.agents()).await,
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
        }
    }
}

/// Sends `throttles` to each of `agents` still connected here.
async fn send(mailbox: &Mailbox, throttles: &BTreeMap<String, FleetThrottle>, agents: Vec<String>) {
    let list = FleetThrottles {
        throttles: throttles.values().cloned().collect(),
    };
    for agent in agents {
        // Gone meanwhile: it gets the list again when it opens a session anywhere.
        let _ = mailbox
            .send(&agent, CoordinatorBody::FleetThrottles(list.clone()))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use fleetshift_common::proto::v1::{CoordinatorMessage, ThrottleShardsRequest};
    use tokio::sync::mpsc;

    use super::*;
    use crate::store::MemoryStore;

    async fn next_list(
        inbound: &mut mpsc::Receiver<Result<CoordinatorMessage, tonic::Status>>,
    ) -> Vec<String> {
        let message = tokio::time::timeout(Duration::from_secs(10), inbound.recv())
            .await
            .expect("a message in time")
            .expect("open")
            .expect("ok");
        match message.body {
            Some(CoordinatorBody::FleetThrottles(list)) => list
                .throttles
                .into_iter()
                .map(|throttle| throttle.throttle_id)
                .collect(),
            other => panic!("expected fleet throttles, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_session_gets_the_throttles_in_force_and_every_change() {
        let store = Arc::new(MemoryStore::new());
        let mailbox = Mailbox::new();
        let request = ThrottleShardsRequest {
            duration: Some(prost_types::Duration {
                seconds: 600,
                nanos: 0,
            }),
            ..ThrottleShardsRequest::default()
        };
        let first = crate::throttles::set(&*store, request.clone(), "alice")
            .await
            .expect("set");
        let shutdown = CancellationToken::new();
        let relay = tokio::spawn(run(
            Arc::clone(&store),
            Arc::clone(&mailbox),
            shutdown.clone(),
        ));
        let (outbound, mut inbound) = mpsc::channel(16);
        let _registration = mailbox.register("a1", HashSet::new(), outbound);
        assert_eq!(
            next_list(&mut inbound).await,
            std::slice::from_ref(&first.throttle_id)
        );
        let second = crate::throttles::set(&*store, request, "alice")
            .await
            .expect("set");
        let mut both = vec![first.throttle_id.clone(), second.throttle_id.clone()];
        both.sort();
        // The opening may be answered twice (the listing and the opening race); the set's
        // change comes after.
        let mut seen = next_list(&mut inbound).await;
        if seen.len() == 1 {
            seen = next_list(&mut inbound).await;
        }
        assert_eq!(seen, both);
        crate::throttles::lift(&*store, &first.throttle_id)
            .await
            .expect("lifted");
        assert_eq!(next_list(&mut inbound).await, [second.throttle_id]);
        shutdown.cancel();
        relay.await.expect("relay ends");
    }
}
