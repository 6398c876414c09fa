//! Keep-alive streams kept open, one per lease being kept: a lease's first keep-alive opens
//! its stream (etcd's answer to the opening request shows the lease exists; a second request
//! reads its time to live), every later one is one request and one answer on it. Measured on
//! the control-plane benchmark, a stream opened per keep-alive cost two requests and a stream
//! set-up per agent heartbeat.
//!
//! A keeper is taken out while it is used and put back only after a complete answer, so a
//! keep-alive dropped half-way (its caller gave up) never leaves a stray answer for the next
//! one. Keepers of leases nobody keeps any more (a session that ended abruptly leaves its
//! lease to lapse) are closed after [`IDLE`].

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper};
use tokio::time::Instant;

use super::lease_or_unavailable;
use crate::store::{LeaseId, StoreError};

/// A keeper unused this long is closed: far beyond any heartbeat interval.
const IDLE: Duration = Duration::from_secs(600);

/// How often idle keepers are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

struct Keeper {
    keeper: LeaseKeeper,
    answers: LeaseKeepAliveStream,
    last_used: Instant,
}

#[derive(Default)]
pub(super) struct Keepers {
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    keepers: HashMap<LeaseId, Keeper>,
    swept: Option<Instant>,
}

impl Keepers {
    /// Keeps `lease` alive once; its remaining time to live.
    pub(super) async fn keep_alive(
        &self,
        client: &Client,
        lease: LeaseId,
    ) -> Result<Duration, StoreError> {
        // An expired lease shows up as an error or as a TTL of zero, depending on timing.
        let failed = |error| lease_or_unavailable(error, lease);
        let taken = self.open().keepers.remove(&lease);
        let mut kept = match taken {
            Some(kept) => kept,
            None => {
                let (keeper, answers) = client
                    .clone()
                    .lease_keep_alive(lease)
                    .await
                    .map_err(failed)?;
                Keeper {
                    keeper,
                    answers,
                    last_used: Instant::now(),
                }
            }
        };
        kept.keeper.keep_alive().await.map_err(failed)?;
        let answer = kept.answers.message().await.map_err(failed)?;
        let remaining = match answer.map(|answer| answer.ttl()) {
            Some(ttl) if ttl > 0 => Duration::from_secs(ttl.unsigned_abs()),
            _ => return Err(StoreError::LeaseExpired(lease)),
        };
        kept.last_used = Instant::now();
        let mut open = self.open();
        open.keepers.insert(lease, kept);
        open.sweep();
        Ok(remaining)
    }

    /// Closes `lease`'s keeper (the lease was revoked).
    pub(super) fn forget(&self, lease: LeaseId) {
        self.open().keepers.remove(&lease);
    }

    fn open(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Open {
    fn sweep(&mut self) {
        let now = Instant::now();
        if self.swept.is_some_and(|at| now - at < SWEEP_EVERY) {
            return;
        }
        self.swept = Some(now);
        self.keepers.retain(|_, kept| now - kept.last_used < IDLE);
    }
}
