//! Which progress events still belong in the journal: those of runs whose claim stands, and
//! those of no claim (host requests). A replica frozen with a run's progress in hand (a
//! SIGSTOP, a long pause) would otherwise journal it after the run's claim lapsed and its task
//! ran again or ended — after the task's end in every watcher's order, where a watcher that
//! stopped at the plan's end never sees it and a replay shows it out of place. Found by a
//! chaos campaign (seed 20261208, round 141).
//!
//! The claims are read just before the batch is written, and the write is conditioned on them
//! (etcd checks them when it applies it): a write delayed past a claim's end, by a one-way
//! partition (the replica sends, does not hear) for one, is refused and sifted again. A chaos
//! campaign hit that with the read alone (seed 20261208, round 26, docs/reliability.md).
//! Past [`CONDITIONS`] claims in one batch (etcd compares at most 128 keys in a transaction)
//! the read alone decides.

use std::collections::{BTreeSet, HashMap};

use fleetshift_common::proto::v1::ProgressEvent;

use crate::claims;
use crate::rollout;
use crate::store::{Condition, FenceToken, Store};

/// The most claims a batch's write is conditioned on.
const CONDITIONS: usize = 100;

/// A batch's events sifted against the claims.
#[derive(Debug, Default)]
pub struct Standing {
    /// The events of no claim or of a claim that stood when read.
    pub events: Vec<ProgressEvent>,
    /// That each of those claims still stands (none past [`CONDITIONS`]).
    pub conditions: Vec<Condition>,
}

impl Standing {
    /// The events of no claim alone.
    pub fn without_claims(self) -> Vec<ProgressEvent> {
        self.events
            .into_iter()
            .filter(|event| claim_token(event).is_none())
            .collect()
    }
}

/// `events` without those of a run whose claim no longer stands, and the conditions that the
/// rest's claims still do; all of them, unconditioned, when the claims cannot be read (the
/// batch's own write is likely to fail as well, and is retried).
pub async fn of_standing_claims<S: Store>(store: &S, events: Vec<ProgressEvent>) -> Standing {
    if events.iter().all(|event| claim_token(event).is_none()) {
        return Standing {
            events,
            conditions: Vec::new(),
        };
    }
    let Ok(listing) = store.list(&claims::prefix()).await else {
        return Standing {
            events,
            conditions: Vec::new(),
        };
    };
    let prefix = claims::prefix();
    let standing: HashMap<&str, i64> = listing
        .entries
        .iter()
        .filter_map(|entry| Some((entry.key.strip_prefix(&prefix)?, entry.create_revision)))
        .collect();
    let before = events.len();
    let mut held = BTreeSet::new();
    let kept: Vec<ProgressEvent> = events
        .into_iter()
        .filter(|event| match claim_token(event) {
            None => true,
            Some(token) => {
                let stands = standing.get(event.shard_id.as_str()) == Some(&token);
                if stands {
                    held.insert((event.shard_id.clone(), token));
                }
                stands
            }
        })
        .collect();
    if kept.len() < before {
        tracing::warn!(
            dropped = before - kept.len(),
            "progress of runs whose claim lapsed before it reached the journal; not journaled"
        );
    }
    let conditions = if held.len() <= CONDITIONS {
        held.into_iter()
            .map(|(shard, token)| claims::held(&shard, FenceToken::from_raw(token)))
            .collect()
    } else {
        Vec::new()
    };
    Standing {
        events: kept,
        conditions,
    }
}

/// The fencing token of the claim `event`'s run holds, when it is a rollout run's
/// (`<plan>~<shard>~<token>`, the shard being the event's).
fn claim_token(event: &ProgressEvent) -> Option<i64> {
    rollout::claim_of(&event.assignment_id)
        .filter(|claim| claim.shard == event.shard_id)
        .map(|claim| claim.token.get())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::store::{MemoryStore, Write};

    fn event(shard: &str, assignment: &str) -> ProgressEvent {
        ProgressEvent {
            shard_id: shard.to_owned(),
            assignment_id: assignment.to_owned(),
            ..ProgressEvent::default()
        }
    }

    #[tokio::test]
    async fn progress_of_a_lapsed_claim_is_left_out_and_the_rest_kept() {
        let store = Arc::new(MemoryStore::new());
        let lease = store
            .grant_lease(Duration::from_secs(60))
            .await
            .expect("lease");
        let created = store
            .commit(
                None,
                &[],
                &[Write::Put {
                    key: claims::key("s1"),
                    value: b"agent".to_vec(),
                    lease: Some(lease),
                }],
            )
            .await
            .expect("claim");
        let token = created.expect("committed");
        let events = vec![
            event("s1", &format!("p1~s1~{token}")),
            event("s1", &format!("p1~s1~{}", token - 1)),
            event("s2", "p1~s2~3"),
            event("s3", "backup-request-7"),
        ];
        let standing = of_standing_claims(store.as_ref(), events).await;
        assert_eq!(
            standing.conditions,
            vec![claims::held("s1", FenceToken::from_raw(token))]
        );
        let kept: Vec<&str> = standing
            .events
            .iter()
            .map(|e| e.assignment_id.as_str())
            .collect();
        assert_eq!(
            kept,
            vec![format!("p1~s1~{token}").as_str(), "backup-request-7"],
            "the standing claim's run and the host request stay; an older claim's run and a lapsed one's go"
        );
    }
}
