//! While a replica leads: how many shards have a schema that differs from their version's
//! majority across the fleet (`fleetshift_schema_drift_shards`), kept current from the agents'
//! announcements. Contested versions count no shard (see `common::schema::drift`); followers
//! publish 0, so a sum over replicas is exact.

use std::collections::HashMap;
use std::sync::Arc;

use fleetshift_common::proto::v1::Hello;
use fleetshift_common::schema::drift::{self, ShardSchema};
use prometheus_client::metrics::gauge::Gauge;
use prost::Message;
use tokio_util::sync::CancellationToken;

use crate::store::{Store, StoreError, keys};

/// Keeps `gauge` current until `stop` (the end of the leadership), then sets it to 0.
pub async fn follow<S: Store>(store: Arc<S>, gauge: Gauge, stop: CancellationToken) {
    tokio::select! {
        () = stop.cancelled() => {}
        outcome = keep(store.as_ref(), &gauge) => {
            if let Err(error) = outcome {
                tracing::warn!(%error, "the schema drift gauge stopped following the agents; it reads 0 until the next leadership");
            }
        }
    }
    gauge.set(0);
}

async fn keep<S: Store>(store: &S, gauge: &Gauge) -> Result<(), StoreError> {
    let prefix = keys::agents_prefix();
    let listing = store.list(&prefix).await?;
    let mut announced: HashMap<String, Vec<ShardSchema>> = listing
        .entries
        .iter()
        .map(|entry| (entry.key.clone(), schemas_of(&entry.key, &entry.value)))
        .collect();
    gauge.set(drifted(&announced));
    let mut changes = store.watch(&prefix, listing.revision).await?;
    while let Some(change) = changes.next().await {
        let change = change?;
        match &change.value {
            Some(value) => {
                let shards = schemas_of(&change.key, value);
                announced.insert(change.key, shards);
            }
            None => {
                announced.remove(&change.key);
            }
        }
        gauge.set(drifted(&announced));
    }
    Ok(())
}

/// The read shards of one agent's announcement (none when it does not decode).
fn schemas_of(key: &str, value: &[u8]) -> Vec<ShardSchema> {
    let hello = match Hello::decode(value) {
        Ok(hello) => hello,
        Err(error) => {
            tracing::warn!(%key, %error, "an agent announcement that does not decode; its shards are not counted");
            return Vec::new();
        }
    };
    hello
        .shards
        .iter()
        .filter_map(|shard| {
            ShardSchema::reported(
                &shard.shard_id,
                &shard.current_version,
                &shard.schema_fingerprint,
            )
        })
        .collect()
}

/// Outliers at versions that are not contested.
fn drifted(announced: &HashMap<String, Vec<ShardSchema>>) -> i64 {
    let shards: Vec<ShardSchema> = announced.values().flatten().cloned().collect();
    let outliers: usize = drift::by_version(&shards)
        .iter()
        .filter(|version| !version.contested)
        .map(|version| version.outliers.len())
        .sum();
    i64::try_from(outliers).unwrap_or(i64::MAX)
}
