//! Schema baselines the fleet keeps: taken from a shard by its agent (`CreateBaseline`),
//! verified on a shard's server by its agent (`VerifyBaseline`), and named in plans so new,
//! empty shards are seeded from the newest verified one at or below the target. Each is stored
//! as a small record (`baselines/<id>`: the baseline without its SQL, with its last
//! verification) and its SQL in chunks (`baseline-sql/<id>/`), written once.

use std::time::{Duration, SystemTime};

use fleetshift_common::proto::v1::host_reply::Outcome;
use fleetshift_common::proto::v1::host_request::Action;
use fleetshift_common::proto::v1::{
    self as v1, CreateBaselineRequest, Hello, SchemaBaseline, TakeSchemaBaseline,
    VerifySchemaBaseline,
};
use fleetshift_common::source::MigrationSet;
use prost::Message;
use tonic::Status;

use crate::backups::{self, Errand};
use crate::error::{ErrorCode, refuse};
use crate::rollout::{RolloutError, planning, records};
use crate::store::{Condition, Store, Write, chunked, keys};

/// How long taking or verifying a baseline may take on the agent's host (crates.io's 285
/// revisions replay in seconds; a long history on a slow server takes minutes).
const HOST_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Takes `request.shard_id`'s baseline through its agent and keeps it; the record.
pub async fn create<S: Store>(
    store: &S,
    agents: &[(String, Hello)],
    request: CreateBaselineRequest,
    author: &str,
) -> Result<SchemaBaseline, Status> {
    let shipped = request.migration_set.ok_or_else(|| {
        refuse(
            ErrorCode::BadRequest,
            "the request carries no migration set".to_owned(),
        )
    })?;
    let (_directory, set) = planning::unpacked(&shipped)?;
    let version = planning::target_of(&set, &request.version)?;
    records::save_set(store, &shipped).await?;
    let errand = Errand {
        shard_id: request.shard_id.clone(),
        action: Action::TakeBaseline(TakeSchemaBaseline {
            migration_set: Some(shipped),
            version,
        }),
        requested_by: author.to_owned(),
        timeout: HOST_TIMEOUT,
    };
    let (agent, reply) = backups::ask(store, agents, errand).await?;
    let Some(Outcome::BaselineTaken(taken)) = reply.outcome else {
        return Err(unexpected(&agent));
    };
    let baseline = SchemaBaseline {
        baseline_id: new_id(),
        source_shard: request.shard_id,
        taken_by: author.to_owned(),
        taken_at: Some(SystemTime::now().into()),
        verification: None,
        ..taken
    };
    chunked::save(
        store,
        &keys::baseline_sql_prefix(&baseline.baseline_id),
        baseline.schema_sql.as_bytes(),
    )
    .await
    .map_err(Status::from)?;
    let record = without_sql(&baseline);
    store
        .commit(
            None,
            &[Condition::Absent(keys::baseline(&record.baseline_id))],
            &[Write::put(
                keys::baseline(&record.baseline_id),
                record.encode_to_vec(),
            )],
        )
        .await
        .map_err(Status::from)?;
    Ok(record)
}

/// Verifies baseline `id` on `shard_id`'s server (empty: the shard it came from) and keeps the
/// verification on its record; the record.
pub async fn verify<S: Store>(
    store: &S,
    agents: &[(String, Hello)],
    id: &str,
    shard_id: &str,
    author: &str,
) -> Result<SchemaBaseline, Status> {
    let (record, revision) = load(store, id).await?;
    let schema_sql = sql(store, id).await?;
    let shipped = records::load_set(store, &record.set_digest).await?;
    let shard_id = if shard_id.is_empty() {
        record.source_shard.clone()
    } else {
        shard_id.to_owned()
    };
    let errand = Errand {
        shard_id,
        action: Action::VerifyBaseline(VerifySchemaBaseline {
            migration_set: Some(shipped),
            baseline: Some(SchemaBaseline {
                schema_sql,
                ..record.clone()
            }),
        }),
        requested_by: author.to_owned(),
        timeout: HOST_TIMEOUT,
    };
    let (agent, reply) = backups::ask(store, agents, errand).await?;
    let Some(Outcome::BaselineVerified(verification)) = reply.outcome else {
        return Err(unexpected(&agent));
    };
    let verified = SchemaBaseline {
        verification: Some(v1::BaselineVerification {
            verified_by: author.to_owned(),
            ..verification
        }),
        ..record
    };
    let key = keys::baseline(id);
    let written = store
        .commit(
            None,
            &[Condition::ModifiedAt(key.clone(), revision)],
            &[Write::put(key, verified.encode_to_vec())],
        )
        .await
        .map_err(Status::from)?;
    if written.is_none() {
        return Err(refuse(
            ErrorCode::Contended,
            format!("baseline {id} was verified by someone else meanwhile; look again"),
        ));
    }
    Ok(verified)
}

/// Every baseline's record, newest first.
pub async fn list<S: Store>(store: &S) -> Result<Vec<SchemaBaseline>, RolloutError> {
    let listing = store.list(&keys::baselines_prefix()).await?;
    let mut baselines: Vec<SchemaBaseline> = listing
        .entries
        .iter()
        .map(|entry| records::decode(&entry.key, &entry.value))
        .collect::<Result<_, _>>()?;
    baselines.sort_by(|left, right| right.baseline_id.cmp(&left.baseline_id));
    Ok(baselines)
}

/// The newest verified baseline of `set` at or below `target` (by the set's order), named
/// without its SQL: what a plan of `set` to `target` seeds new shards from.
pub fn for_plan(
    baselines: &[SchemaBaseline],
    set: &MigrationSet,
    target: &str,
) -> Option<SchemaBaseline> {
    let goal = set.position(target)?;
    baselines
        .iter()
        .filter(|baseline| {
            baseline.set_digest == set.digest
                && baseline
                    .verification
                    .as_ref()
                    .is_some_and(|verification| verification.holds)
        })
        .filter_map(|baseline| Some((set.position(&baseline.version)?, baseline)))
        .filter(|(place, _)| *place <= goal)
        .max_by_key(|(place, baseline)| (*place, baseline.baseline_id.clone()))
        .map(|(_, baseline)| without_sql(baseline))
}

/// Baseline `id`'s SQL, for the relay to attach to an assignment.
pub async fn sql<S: Store>(store: &S, id: &str) -> Result<String, RolloutError> {
    let prefix = keys::baseline_sql_prefix(id);
    let bytes = chunked::load(store, &prefix)
        .await?
        .ok_or_else(|| RolloutError::Corrupt {
            key: prefix.clone(),
            detail: "the baseline's SQL is missing from the store".to_owned(),
        })?;
    String::from_utf8(bytes).map_err(|error| RolloutError::Corrupt {
        key: prefix,
        detail: error.to_string(),
    })
}

async fn load<S: Store>(store: &S, id: &str) -> Result<(SchemaBaseline, i64), Status> {
    let key = keys::baseline(id);
    let entry = store
        .read(&key)
        .await
        .map_err(Status::from)?
        .ok_or_else(|| {
            refuse(
                ErrorCode::NotFound,
                format!("no baseline {id}; `fleetshift baseline list` lists them"),
            )
        })?;
    Ok((records::decode(&key, &entry.value)?, entry.mod_revision))
}

fn without_sql(baseline: &SchemaBaseline) -> SchemaBaseline {
    SchemaBaseline {
        schema_sql: String::new(),
        ..baseline.clone()
    }
}

fn unexpected(agent: &str) -> Status {
    refuse(
        ErrorCode::Internal,
        format!("agent {agent} answered with something else; it may be older than its coordinator"),
    )
}

/// A new baseline id: time-ordered.
fn new_id() -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    format!("b{}-{:05x}", now.as_secs(), now.subsec_micros())
}
