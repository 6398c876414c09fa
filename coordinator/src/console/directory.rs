//! Where the replicas' consoles are: each replica keeps its console's URL in the store on a
//! lease of its own, so the list is of live replicas only and a page whose replica died can
//! follow its rollout on another's console.

use std::sync::Arc;

use fleetshift_common::lease::SessionIntervals;
use tokio_util::sync::CancellationToken;

use crate::store::{LeaseId, Store, StoreError, Write, keys};
use crate::tasks::TaskSet;

/// The consoles of the replicas, read from the store.
pub struct Directory<S> {
    store: Arc<S>,
}

impl<S> std::fmt::Debug for Directory<S> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Directory").finish_non_exhaustive()
    }
}

impl<S> Clone for Directory<S> {
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
        }
    }
}

/// A replica's console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub replica: String,
    pub url: String,
}

impl<S: Store + 'static> Directory<S> {
    pub fn new(store: Arc<S>) -> Self {
        Self { store }
    }

    /// Keeps `url` listed as `replica`'s console until `tasks` stop, then removes it: a key on
    /// a lease renewed each heartbeat, written again on a new lease when that one lapsed.
    pub fn advertise(
        &self,
        replica: &str,
        url: String,
        intervals: SessionIntervals,
        tasks: &TaskSet,
    ) {
        let store = Arc::clone(&self.store);
        let key = keys::console(replica);
        let stopping = tasks.stopping().clone();
        tasks.spawn(async move {
            let mut ticks = tokio::time::interval(intervals.heartbeat);
            while !stopping.is_cancelled() {
                match listed(&*store, &key, &url, intervals).await {
                    Ok(lease) => {
                        tracing::info!(%url, "web console advertised");
                        keep(&*store, lease, &mut ticks, &stopping).await;
                        if stopping.is_cancelled() {
                            // Off the list at once; a lapse would take a lease's time.
                            let _ = store.revoke(lease).await;
                            return;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot advertise the web console; trying again")
                    }
                }
                tokio::select! {
                    () = stopping.cancelled() => return,
                    _ = ticks.tick() => {}
                }
            }
        });
    }

    /// Every live replica's console, by replica.
    pub async fn consoles(&self) -> Result<Vec<Listed>, StoreError> {
        let prefix = keys::consoles_prefix();
        let listing = self.store.list(&prefix).await?;
        Ok(listing
            .entries
            .into_iter()
            .filter_map(|entry| {
                let replica = entry.key.strip_prefix(&prefix)?.to_owned();
                let url = String::from_utf8(entry.value).ok()?;
                Some(Listed { replica, url })
            })
            .collect())
    }

    /// Whether `origin` (`https://host:port`) is a listed console's.
    pub async fn knows_origin(&self, origin: &str) -> bool {
        self.consoles().await.is_ok_and(|consoles| {
            consoles
                .iter()
                .any(|listed| listed.url.trim_end_matches('/') == origin)
        })
    }
}

/// Writes `url` at `key` on a new lease.
async fn listed<S: Store>(
    store: &S,
    key: &str,
    url: &str,
    intervals: SessionIntervals,
) -> Result<LeaseId, StoreError> {
    let lease = store.grant_lease(intervals.lease_ttl).await?;
    let write = Write::Put {
        key: key.to_owned(),
        value: url.as_bytes().to_vec(),
        lease: Some(lease),
    };
    store.commit(None, &[], &[write]).await?;
    Ok(lease)
}

/// Renews `lease` each tick until it cannot be or `stopping`.
async fn keep<S: Store>(
    store: &S,
    lease: LeaseId,
    ticks: &mut tokio::time::Interval,
    stopping: &CancellationToken,
) {
    loop {
        tokio::select! {
            () = stopping.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if let Err(error) = store.keep_alive(lease).await {
            tracing::warn!(%error, "the web console's lease lapsed; advertising it again");
            return;
        }
    }
}
