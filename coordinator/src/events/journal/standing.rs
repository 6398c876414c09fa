//! Which progress events still belong in the journal: those of runs whose claim stands, and
//! those of no claim (host requests). A replica frozen with a run's progress in hand (a
//! SIGSTOP, a long pause) would otherwise journal it after the run's claim lapsed and its task
//! ran again or ended — after the task's end in every watcher's order, where a watcher that
//! stopped at the plan's end never sees it and a replay shows it out of place. Found by a
//! chaos campaign (seed 20261208, round 141).
//!
//! The claims are read just before the batch is written: a claim ending in between lets that
//! batch through. A write delayed by a one-way partition (the replica sends, does not hear)
//! widens that window to the partition's length, which a chaos campaign hit (seed 20261208,
//! round 26, docs/reliability.md); conditioning the commit on the claims closes it.

use std::collections::HashMap;

use fleetshift_common::proto::v1::ProgressEvent;

use crate::claims;
use crate::store::Store;

/// `events` without those of a run whose claim no longer stands; all of them when the claims
/// cannot be read (the batch's own write is likely to fail as well, and is retried).
pub async fn of_standing_claims<S: Store>(
    store: &S,
    events: Vec<ProgressEvent>,
) -> Vec<ProgressEvent> {
    if events.iter().all(|event| claim_token(event).is_none()) {
        return events;
    }
    let Ok(listing) = store.list(&claims::prefix()).await else {
        return events;
    };
    let prefix = claims::prefix();
    let standing: HashMap<&str, i64> = listing
        .entries
        .iter()
        .filter_map(|entry| Some((entry.key.strip_prefix(&prefix)?, entry.create_revision)))
        .collect();
    let before = events.len();
    let kept: Vec<ProgressEvent> = events
        .into_iter()
        .filter(|event| {
            claim_token(event)
                .is_none_or(|token| standing.get(event.shard_id.as_str()) == Some(&token))
        })
        .collect();
    if kept.len() < before {
        tracing::warn!(
            dropped = before - kept.len(),
            "progress of runs whose claim lapsed before it reached the journal; not journaled"
        );
    }
    kept
}

/// The fencing token of the claim `event`'s run holds, when it is a rollout run's
/// (`<plan>~<shard>~<token>`, the shard being the event's).
fn claim_token(event: &ProgressEvent) -> Option<i64> {
    let mut parts = event.assignment_id.split('~');
    let (_plan, shard, token) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || shard != event.shard_id {
        return None;
    }
    token.parse().ok()
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
        let kept = of_standing_claims(store.as_ref(), events).await;
        let kept: Vec<&str> = kept.iter().map(|e| e.assignment_id.as_str()).collect();
        assert_eq!(
            kept,
            vec![format!("p1~s1~{token}").as_str(), "backup-request-7"],
            "the standing claim's run and the host request stay; an older claim's run and a lapsed one's go"
        );
    }
}
