//! Schema snapshots the fleet keeps, by fingerprint: agents send a shard's snapshot with its
//! facts when they read it fresh. A snapshot not kept yet is checked against its fingerprint
//! and stored once under `schemas/<fingerprint>/` (shards with the same schema share it); the
//! replica drops it from the facts it stores, which keep only the fingerprint.

use fleetshift_common::proto::v1::{AssignmentResult, ShardFacts};
use fleetshift_common::schema::wire::{self, UnpackError};
use fleetshift_common::schema::{Fingerprint, Snapshot};

use crate::store::{Store, StoreError, chunked, keys};

/// Keeps the snapshots `shards` carry and leaves only their fingerprints in them. A snapshot
/// that does not match its fingerprint is dropped (with the fingerprint) and logged.
pub async fn keep<S: Store>(
    store: &S,
    agent: &str,
    shards: &mut [ShardFacts],
) -> Result<(), StoreError> {
    for shard in shards {
        let packed = std::mem::take(&mut shard.schema_snapshot);
        let kept = keep_one(store, &packed, &shard.schema_fingerprint).await?;
        if let Err(error) = kept {
            tracing::warn!(%agent, shard = %shard.shard_id, %error, "schema snapshot refused; the shard's fingerprint is left empty");
            shard.schema_fingerprint.clear();
        }
    }
    Ok(())
}

/// Keeps the snapshot a run's result carries (the schema the run left) and drops it from the
/// result, which is stored without it. One that does not match the run's fingerprint is
/// logged and dropped: the comparison with the plan's canary then names no differences.
pub async fn keep_left<S: Store>(
    store: &S,
    agent: &str,
    result: &mut AssignmentResult,
) -> Result<(), StoreError> {
    let packed = std::mem::take(&mut result.schema_snapshot);
    let Some(schema) = &result.schema else {
        return Ok(());
    };
    if let Err(error) = keep_one(store, &packed, &schema.after).await? {
        tracing::warn!(%agent, shard = %result.shard_id, %error, "schema snapshot of a run refused");
    }
    Ok(())
}

/// Stores `packed` under `fingerprint` unless it is there already or empty; the reason it
/// was refused when it does not match.
async fn keep_one<S: Store>(
    store: &S,
    packed: &[u8],
    fingerprint: &str,
) -> Result<Result<(), UnpackError>, StoreError> {
    if packed.is_empty() {
        return Ok(Ok(()));
    }
    // A snapshot kept already was checked when it was stored: no need to unpack it again.
    if let Some(fingerprint) = Fingerprint::from_hex(fingerprint)
        && chunked::contains(store, &keys::schema_prefix(fingerprint.as_str())).await?
    {
        return Ok(Ok(()));
    }
    if let Err(error) = wire::unpack(packed, fingerprint) {
        return Ok(Err(error));
    }
    chunked::save(store, &keys::schema_prefix(fingerprint), packed).await?;
    Ok(Ok(()))
}

/// The snapshot with `fingerprint`, when the fleet has it.
pub async fn load<S: Store>(
    store: &S,
    fingerprint: &Fingerprint,
) -> Result<Option<Snapshot>, StoreError> {
    let prefix = keys::schema_prefix(fingerprint.as_str());
    let Some(packed) = chunked::load(store, &prefix).await? else {
        return Ok(None);
    };
    wire::unpack(&packed, fingerprint.as_str())
        .map(Some)
        .map_err(|error| StoreError::Corrupt {
            key: prefix,
            detail: error.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use fleetshift_common::schema::{ObjectKind, attributes};

    use super::*;
    use crate::store::MemoryStore;

    fn facts(shard: &str, snapshot: &Snapshot, claimed: &str) -> ShardFacts {
        ShardFacts {
            shard_id: shard.to_owned(),
            schema_fingerprint: claimed.to_owned(),
            schema_snapshot: wire::pack(snapshot),
            ..ShardFacts::default()
        }
    }

    #[tokio::test]
    async fn a_snapshot_is_kept_by_its_fingerprint_and_one_that_lies_is_dropped() {
        let store = MemoryStore::new();
        let mut snapshot = Snapshot::default();
        snapshot.insert(
            ObjectKind::Table,
            "public.users",
            attributes([("kind", "table".to_owned())]),
        );
        let fingerprint = snapshot.fingerprint();
        let mut shards = [
            facts("honest", &snapshot, fingerprint.as_str()),
            facts("liar", &snapshot, &"0".repeat(64)),
        ];
        keep(&store, "a", &mut shards).await.expect("kept");
        assert!(shards.iter().all(|shard| shard.schema_snapshot.is_empty()));
        assert_eq!(shards[0].schema_fingerprint, fingerprint.as_str());
        assert_eq!(shards[1].schema_fingerprint, "");
        assert_eq!(
            load(&store, &fingerprint).await.expect("loaded"),
            Some(snapshot)
        );
        let zeros = Fingerprint::from_hex(&"0".repeat(64)).expect("hex");
        assert_eq!(load(&store, &zeros).await.expect("loaded"), None);
    }
}
