//! The loop every replica runs to hand stored work to the agents whose sessions it holds:
//! follow a key prefix (`<prefix><agent>/<id>`), keep what is outstanding, hand each item to
//! its agent when it appears and again when the agent's session (re)opens here, and follow
//! again after the store fails. The rollout relay (assignments) and the host-request relay
//! (operators' requests) are its two [`Relay`]s; what an item is and how it is handed over is
//! theirs.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::mailbox::Mailbox;
use crate::store::{Store, StoreError};

/// Pause before following again after the store failed.
const RETRY: Duration = Duration::from_millis(500);

/// What one relay keeps and how it hands an item over.
pub trait Relay: Send {
    type Error: Display + From<StoreError> + Send;

    /// What it relays, for the log ("assignments", "host requests").
    const WHAT: &'static str;

    /// The prefix it follows.
    fn prefix(&self) -> String;

    /// Forgets every outstanding item (a fresh listing follows).
    fn clear(&mut self);

    /// Keeps the item stored at `key`.
    fn insert(&mut self, key: &str, value: &[u8]) -> Result<(), Self::Error>;

    /// The item at `key` is gone from the store.
    fn remove(&mut self, key: &str) -> impl Future<Output = ()> + Send;

    /// Every outstanding item's key.
    fn keys(&self) -> Vec<String>;

    /// Hands the item at `key` to its agent, if its session is here and has not had it.
    fn deliver(&mut self, key: &str) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// The agent a key under `prefix` is for.
pub fn agent_of_key<'k>(prefix: &str, key: &'k str) -> Option<&'k str> {
    key.strip_prefix(prefix)?
        .split_once('/')
        .map(|(agent, _)| agent)
}

/// Relays until `shutdown`.
pub async fn run<S: Store, R: Relay>(
    store: &S,
    mailbox: &Mailbox,
    mut relay: R,
    shutdown: CancellationToken,
) {
    loop {
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return,
            outcome = follow(store, mailbox, &mut relay) => outcome,
        };
        if let Err(error) = outcome {
            tracing::warn!(%error, what = R::WHAT, "relaying interrupted; following again");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}

async fn follow<S: Store, R: Relay>(
    store: &S,
    mailbox: &Mailbox,
    relay: &mut R,
) -> Result<(), R::Error> {
    let mut openings = mailbox.subscribe_openings();
    let prefix = relay.prefix();
    let listing = store.list(&prefix).await?;
    relay.clear();
    for entry in &listing.entries {
        relay.insert(&entry.key, &entry.value)?;
    }
    deliver_where(relay, |_| true).await?;
    let mut changes = store.watch(&prefix, listing.revision).await?;
    loop {
        tokio::select! {
            change = changes.next() => {
                let change = change.ok_or_else(|| StoreError::Unavailable("the watch ended".to_owned()))??;
                match change.value {
                    Some(value) => {
                        relay.insert(&change.key, &value)?;
                        relay.deliver(&change.key).await?;
                    }
                    None => relay.remove(&change.key).await,
                }
            }
            opened = openings.recv() => match opened {
                Ok(agent) => {
                    deliver_where(relay, |key| agent_of_key(&prefix, key) == Some(agent.as_str())).await?;
                }
                Err(broadcast::error::RecvError::Lagged(_)) => deliver_where(relay, |_| true).await?,
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
        }
    }
}

async fn deliver_where<R: Relay>(
    relay: &mut R,
    wanted: impl Fn(&str) -> bool,
) -> Result<(), R::Error> {
    for key in relay.keys() {
        if wanted(&key) {
            relay.deliver(&key).await?;
        }
    }
    Ok(())
}
