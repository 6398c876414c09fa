//! Plans, shard tasks and migration sets as the store keeps them (protobuf values), read and
//! written with compare-and-set so concurrent writers (operators on any replica, the leader)
//! never lose each other's updates.

use std::collections::BTreeMap;

use fleetshift_common::proto::v1::{self, Plan, ShardTask};
use prost::Message;

use super::RolloutError;
use super::waves;
use crate::store::{Condition, Entry, Epoch, Store, StoreError, Write, chunked, keys};

/// Attempts of a compare-and-set update before giving up.
const CAS_ATTEMPTS: usize = 8;

pub fn decode<M: Message + Default>(key: &str, value: &[u8]) -> Result<M, RolloutError> {
    M::decode(value).map_err(|error| RolloutError::Corrupt {
        key: key.to_owned(),
        detail: error.to_string(),
    })
}

/// A plan and the revision it was read at.
#[derive(Debug, Clone)]
pub struct PlanRecord {
    pub plan: Plan,
    pub revision: i64,
}

pub async fn load_plan<S: Store>(store: &S, plan_id: &str) -> Result<PlanRecord, RolloutError> {
    let key = keys::plan(plan_id);
    let entry = store
        .read(&key)
        .await?
        .ok_or_else(|| RolloutError::UnknownPlan(plan_id.to_owned()))?;
    Ok(PlanRecord {
        plan: decode(&key, &entry.value)?,
        revision: entry.mod_revision,
    })
}

pub async fn load_plans<S: Store>(store: &S) -> Result<Vec<Plan>, RolloutError> {
    let listing = store.list(&keys::plans_prefix()).await?;
    listing
        .entries
        .iter()
        .map(|entry| decode(&entry.key, &entry.value))
        .collect()
}

/// The plan's tasks by shard, as stored.
pub async fn load_tasks<S: Store>(
    store: &S,
    plan_id: &str,
) -> Result<BTreeMap<String, ShardTask>, RolloutError> {
    let listing = store.list(&keys::tasks_prefix(plan_id)).await?;
    tasks_of(&listing.entries)
}

/// The plan's task for the shard, as stored, if the plan has one.
pub async fn load_task<S: Store>(
    store: &S,
    plan_id: &str,
    shard_id: &str,
) -> Result<Option<ShardTask>, RolloutError> {
    let key = keys::task(plan_id, shard_id);
    store
        .read(&key)
        .await?
        .map(|entry| decode(&key, &entry.value))
        .transpose()
}

pub fn tasks_of(entries: &[Entry]) -> Result<BTreeMap<String, ShardTask>, RolloutError> {
    entries
        .iter()
        .map(|entry| {
            let task: ShardTask = decode(&entry.key, &entry.value)?;
            Ok((task.shard_id.clone(), task))
        })
        .collect()
}

/// The plan with each wave's shards in their stored state.
pub fn with_tasks(mut plan: Plan, tasks: &BTreeMap<String, ShardTask>) -> Plan {
    for wave in &mut plan.waves {
        for shard in &mut wave.shards {
            if let Some(task) = tasks.get(&shard.shard_id) {
                *shard = task.clone();
            }
        }
    }
    plan
}

/// Creates the plan and its pending tasks, once.
pub async fn create_plan<S: Store>(store: &S, plan: &Plan) -> Result<(), RolloutError> {
    create(store, plan, None).await
}

/// Creates the plan and its pending tasks, once, while `epoch`'s leadership stands (the
/// leader's own plans: a deposed leader's late plan is refused).
pub async fn create_plan_as_leader<S: Store>(
    store: &S,
    plan: &Plan,
    epoch: Epoch,
) -> Result<(), RolloutError> {
    create(store, plan, Some(epoch)).await
}

async fn create<S: Store>(
    store: &S,
    plan: &Plan,
    epoch: Option<Epoch>,
) -> Result<(), RolloutError> {
    let key = keys::plan(&plan.plan_id);
    let tasks: Vec<Write> = waves::planned_tasks(plan)
        .map(|task| {
            let key = keys::task(&plan.plan_id, &task.shard_id);
            Write::put(key, task.encode_to_vec())
        })
        .collect();
    // etcd allows 128 operations per transaction by default: the plan goes last, so it is
    // visible only once every task is.
    for batch in tasks.chunks(100) {
        store.commit(epoch, &[], batch).await?;
    }
    let plan_write = Write::put(key.clone(), plan.encode_to_vec());
    let created = store
        .commit(epoch, &[Condition::Absent(key)], &[plan_write])
        .await?;
    match created {
        Some(_) => Ok(()),
        None => Err(RolloutError::BadRequest(format!(
            "plan {} exists already",
            plan.plan_id
        ))),
    }
}

/// Applies `change` to the stored plan and writes it back unless someone wrote in between
/// (then reads again and retries). With `epoch`, only while that leadership stands.
pub async fn update_plan<S: Store>(
    store: &S,
    plan_id: &str,
    epoch: Option<Epoch>,
    mut change: impl FnMut(&mut Plan) -> Result<(), RolloutError>,
) -> Result<Plan, RolloutError> {
    let key = keys::plan(plan_id);
    for _ in 0..CAS_ATTEMPTS {
        let PlanRecord { mut plan, revision } = load_plan(store, plan_id).await?;
        change(&mut plan)?;
        let written = store
            .commit(
                epoch,
                &[Condition::ModifiedAt(key.clone(), revision)],
                &[Write::put(key.clone(), plan.encode_to_vec())],
            )
            .await?;
        if written.is_some() {
            return Ok(plan);
        }
    }
    Err(RolloutError::Contended(plan_id.to_owned()))
}

/// Stores the set in chunks under its digest, unless it is there already.
pub async fn save_set<S: Store>(store: &S, set: &v1::MigrationSet) -> Result<(), RolloutError> {
    chunked::save(store, &keys::set_prefix(&set.digest), &set.encode_to_vec()).await?;
    Ok(())
}

pub async fn load_set<S: Store>(store: &S, digest: &str) -> Result<v1::MigrationSet, RolloutError> {
    let prefix = keys::set_prefix(digest);
    let Some(encoded) = chunked::load(store, &prefix).await? else {
        return Err(RolloutError::Store(StoreError::Corrupt {
            key: prefix,
            detail: "the plan's migration set is missing from the store".to_owned(),
        }));
    };
    decode(&prefix, &encoded)
}
