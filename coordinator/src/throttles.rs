//! Operators' throttles on the fleet: a selector held for a while. Each is stored under
//! `throttles/<id>` on a store lease as long as it lasts, so it disappears by itself when it
//! expires; lifting it deletes it. The leader does not dispatch to a held shard, and every
//! replica hands the list in force to the agents whose sessions it holds ([`relay`]), which
//! hold their running shards before the next revision.

use std::time::{Duration, SystemTime};

use fleetshift_common::proto::v1::{FleetThrottle, ThrottleShardsRequest};
use prost::Message;

use crate::rollout::RolloutError;
use crate::store::{Condition, Store, Write, keys};

pub mod relay;

/// The longest a throttle may last.
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Stores the throttle `request` asks for, by `author`.
pub async fn set<S: Store>(
    store: &S,
    request: ThrottleShardsRequest,
    author: &str,
) -> Result<FleetThrottle, RolloutError> {
    let duration = request
        .duration
        .and_then(|duration| Duration::try_from(duration).ok())
        .filter(|duration| !duration.is_zero() && *duration <= MAX_DURATION)
        .ok_or_else(|| {
            RolloutError::BadRequest(
                "a throttle lasts from a second to a day; give --for, e.g. 30m".to_owned(),
            )
        })?;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let throttle = FleetThrottle {
        throttle_id: format!("t{}-{:05x}", now.as_secs(), now.subsec_micros()),
        selector: request.selector,
        until: Some((SystemTime::now() + duration).into()),
        reason: request.reason,
        author: author.to_owned(),
    };
    let lease = store.grant_lease(duration).await?;
    let key = keys::throttle(&throttle.throttle_id);
    let written = store
        .commit(
            None,
            &[Condition::Absent(key.clone())],
            &[Write::Put {
                key,
                value: throttle.encode_to_vec(),
                lease: Some(lease),
            }],
        )
        .await?;
    // Never over another throttle: one set in the same microsecond is told to try again.
    match written {
        Some(_) => Ok(throttle),
        None => Err(RolloutError::Contended(format!(
            "throttle {}",
            throttle.throttle_id
        ))),
    }
}

/// The throttles in force, soonest to expire first.
pub async fn list<S: Store>(store: &S) -> Result<Vec<FleetThrottle>, RolloutError> {
    let listing = store.list(&keys::throttles_prefix()).await?;
    let mut throttles: Vec<FleetThrottle> = listing
        .entries
        .iter()
        .map(|entry| crate::rollout::records::decode(&entry.key, &entry.value))
        .collect::<Result<_, _>>()?;
    throttles.sort_by_key(|throttle| throttle.until.map(|until| (until.seconds, until.nanos)));
    Ok(throttles)
}

/// Deletes the throttle `id`; it, as it was.
pub async fn lift<S: Store>(store: &S, id: &str) -> Result<FleetThrottle, RolloutError> {
    let key = keys::throttle(id);
    let entry = store.read(&key).await?.ok_or_else(|| {
        RolloutError::BadRequest(format!(
            "no throttle {id} in force; `fleetshift throttle list` shows them"
        ))
    })?;
    let throttle = crate::rollout::records::decode(&key, &entry.value)?;
    store.commit(None, &[], &[Write::Delete(key)]).await?;
    Ok(throttle)
}

#[cfg(test)]
mod tests {
    use fleetshift_common::selector::holding;

    use super::*;
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn a_throttle_holds_the_shards_it_selects_until_it_is_lifted() {
        let store = MemoryStore::new();
        let request = |seconds: i64| ThrottleShardsRequest {
            selector: [("region".to_owned(), "eu".to_owned())].into(),
            duration: Some(prost_types::Duration { seconds, nanos: 0 }),
            reason: "incident 42".to_owned(),
        };
        assert!(set(&store, request(0), "alice").await.is_err());
        assert!(set(&store, request(2 * 24 * 3600), "alice").await.is_err());
        let throttle = set(&store, request(1800), "alice").await.expect("set");
        let listed = list(&store).await.expect("listed");
        assert_eq!(listed, std::slice::from_ref(&throttle));
        let eu = [("region".to_owned(), "eu".to_owned())].into();
        let us = [("region".to_owned(), "us".to_owned())].into();
        let now = SystemTime::now();
        assert_eq!(holding(&listed, &eu, now), Some(&throttle));
        assert_eq!(holding(&listed, &us, now), None);
        assert_eq!(
            lift(&store, &throttle.throttle_id).await.expect("lifted"),
            throttle
        );
        assert!(list(&store).await.expect("listed").is_empty());
        assert!(lift(&store, &throttle.throttle_id).await.is_err());
    }
}
