//! `GetTargetStatus`: a target's shards judged from the store as it is now, on any replica,
//! with the same judgement the leader reconciles by.

use fleetshift_common::proto::v1::{Hello, Plan, ShardTask, TargetStatus};

use super::standing::{self, PlanIndex};
use crate::lifecycles;
use crate::rollout::{RolloutError, records};
use crate::store::{Store, keys};

/// Where the shards of target `name` stand, among the announced `agents`.
pub async fn status<S: Store>(
    store: &S,
    name: &str,
    agents: &[(String, Hello)],
) -> Result<TargetStatus, RolloutError> {
    let target = super::load(store, name)
        .await?
        .ok_or_else(|| super::unknown(name))?
        .target;
    let settings = lifecycles::load(store).await?;
    let shards: Vec<standing::Seen<'_>> = agents
        .iter()
        .flat_map(|(agent, hello)| {
            hello.shards.iter().map(move |facts| standing::Seen {
                agent,
                host: hello.host.as_ref(),
                facts,
            })
        })
        .collect();
    let mut index = PlanIndex::default();
    let plans: Vec<Plan> = records::load_plans(store).await?;
    for plan in plans.iter().filter(|plan| PlanIndex::reads(&target, plan)) {
        let tasks = store.list(&keys::tasks_prefix(&plan.plan_id)).await?;
        for entry in &tasks.entries {
            let task: ShardTask = records::decode(&entry.key, &entry.value)?;
            index.add(&target, plan, &task);
        }
    }
    let shards = standing::judge(&target, &shards, &settings, &index);
    Ok(TargetStatus {
        target: Some(target),
        shards,
    })
}
