//! Leader election through the store: every replica keeps a lease alive and campaigns on the
//! leader key each heartbeat. The leader's standing carries a token that is cancelled the moment
//! it may have lost leadership (its lease could not be renewed, or another replica leads), so
//! everything it runs under that token stops; its late writes are refused by the epoch guard
//! anyway. On shutdown a leader revokes its lease, handing over at once.

use std::sync::Arc;
use std::time::Duration;

use fleetshift_common::lease::SessionIntervals;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::store::{Epoch, Leadership, LeaseId, Store};

/// This replica's standing.
#[derive(Debug, Clone)]
pub enum Standing {
    Follower {
        /// The leader, when one is known.
        leader: Option<Leadership>,
    },
    Leader {
        epoch: Epoch,
        lease: LeaseId,
        /// Cancelled when this leadership may be over: run leader work under it.
        stepped_down: CancellationToken,
    },
}

impl Standing {
    pub fn is_leader(&self) -> bool {
        matches!(self, Self::Leader { .. })
    }
}

/// A replica as the fleet service describes it: its id and its standing, followed live.
#[derive(Debug, Clone)]
pub struct Replica {
    pub id: String,
    pub standing: watch::Receiver<Standing>,
}

impl Replica {
    /// Whether this replica leads, and the leadership when one is known (this replica's when
    /// it leads), read together.
    pub fn now(&self) -> (bool, Option<Leadership>) {
        match &*self.standing.borrow() {
            Standing::Leader { epoch, .. } => (
                true,
                Some(Leadership {
                    leader: self.id.clone(),
                    epoch: *epoch,
                }),
            ),
            Standing::Follower { leader } => (false, leader.clone()),
        }
    }
}

/// Runs the election until `shutdown`; the receiver follows this replica's standing.
pub fn start<S: Store + 'static>(
    store: Arc<S>,
    candidate: &str,
    intervals: SessionIntervals,
    shutdown: CancellationToken,
) -> (watch::Receiver<Standing>, JoinHandle<()>) {
    let (standing, receiver) = watch::channel(Standing::Follower { leader: None });
    let candidate = candidate.to_owned();
    let task = tokio::spawn(async move {
        let mut lease: Option<LeaseId> = None;
        let mut ticks = tokio::time::interval(intervals.heartbeat);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = ticks.tick() => {}
            }
            let current = match lease {
                Some(current) => match store.keep_alive(current).await {
                    Ok(_) => current,
                    Err(error) => {
                        tracing::warn!(%candidate, %error, "election lease lost");
                        step_down(&standing, None);
                        lease = None;
                        continue;
                    }
                },
                None => match store.grant_lease(intervals.lease_ttl).await {
                    Ok(granted) => {
                        lease = Some(granted);
                        granted
                    }
                    Err(error) => {
                        tracing::warn!(%candidate, %error, "cannot obtain an election lease");
                        continue;
                    }
                },
            };
            match store.campaign(&candidate, current).await {
                Ok(Some(leadership)) => {
                    let already = matches!(&*standing.borrow(), Standing::Leader { epoch, .. } if *epoch == leadership.epoch);
                    if !already {
                        // A different epoch than the one held (the leader key was recreated):
                        // whatever ran under the old one must stop first.
                        if let Standing::Leader { stepped_down, .. } = &*standing.borrow() {
                            stepped_down.cancel();
                        }
                        tracing::info!(%candidate, epoch = leadership.epoch.0, "leading");
                        standing.send_replace(Standing::Leader {
                            epoch: leadership.epoch,
                            lease: current,
                            stepped_down: CancellationToken::new(),
                        });
                    }
                }
                Ok(None) => {
                    let leader = store.leader().await.ok().flatten();
                    step_down(&standing, leader);
                }
                Err(error) => {
                    tracing::warn!(%candidate, %error, "campaign failed; stepping down until the store answers");
                    step_down(&standing, None);
                }
            }
        }
        if standing.borrow().is_leader() {
            tracing::info!(%candidate, "shutting down; handing leadership over");
        }
        step_down(&standing, None);
        if let Some(current) = lease
            && let Err(error) = store.revoke(current).await
        {
            tracing::warn!(%candidate, %error, "revoking the election lease failed; it lapses on its TTL");
        }
    });
    (receiver, task)
}

/// Becomes (or stays) a follower; a leader's token is cancelled first. Callers log why.
fn step_down(standing: &watch::Sender<Standing>, leader: Option<Leadership>) {
    if let Standing::Leader {
        stepped_down,
        epoch,
        ..
    } = &*standing.borrow()
    {
        tracing::info!(epoch = epoch.0, "stepping down");
        stepped_down.cancel();
    }
    let unchanged =
        matches!(&*standing.borrow(), Standing::Follower { leader: known } if *known == leader);
    if !unchanged {
        standing.send_replace(Standing::Follower { leader });
    }
}

/// Waits until `receiver` shows leadership, up to `limit`.
pub async fn wait_for_leadership(
    receiver: &mut watch::Receiver<Standing>,
    limit: Duration,
) -> Option<Standing> {
    tokio::time::timeout(limit, receiver.wait_for(Standing::is_leader))
        .await
        .ok()
        .and_then(Result::ok)
        .map(|standing| standing.clone())
}
