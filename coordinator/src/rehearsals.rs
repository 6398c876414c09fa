//! `RehearsePlan`: a plan's pending revisions rehearsed on a sampled copy of some of its shards.
//! Each shard's agent builds the copy and runs the tracer (a host request, like a backup's,
//! waited for under the call's lease); a few shards run at once, and each agent limits how many
//! run on its host. Every result is kept (`rehearsals/<plan>/<shard>`, the newest per shard),
//! its summary goes into the plan for the approval gate, and the plan's risk is assessed again
//! with what the rehearsals measured ([`crate::rollout::risk::measured`]).

use std::time::Duration;

use fleetshift_common::proto::v1::host_reply::Outcome;
use fleetshift_common::proto::v1::host_request::Action;
use fleetshift_common::proto::v1::{
    Direction, Hello, Plan, PlanState, RehearsePlanRequest, RehearsePlanResponse, RehearseShard,
    RiskLevel, ShardRehearsal,
};
use fleetshift_common::rehearsal::wire;
use fleetshift_common::rollout_names::risk_level_name;
use futures_util::StreamExt as _;
use prost::Message as _;
use tonic::Status;

use crate::backups::{self, Errand};
use crate::error::{ErrorCode, refuse};
use crate::rollout::risk::measured::{HazardSize, measured};
use crate::rollout::{records, waves};
use crate::store::{Store, Write, keys};

/// How long one shard's rehearsal may take when the request names no bound.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// Shards rehearsed at once by one call.
const AT_ONCE: usize = 4;

/// Rehearses the plan on the shards `request` selects; what each found, or why it could not.
pub async fn rehearse<S: Store>(
    store: &S,
    agents: &[(String, Hello)],
    request: RehearsePlanRequest,
    requested_by: &str,
    timeout: Duration,
) -> Result<RehearsePlanResponse, Status> {
    let plan = records::load_plan(store, &request.plan_id).await?.plan;
    if plan.direction() == Direction::Down {
        return Err(refuse(
            ErrorCode::BadRequest,
            format!(
                "plan {} is a rollback plan; rehearsals run a plan's revisions up",
                plan.plan_id
            ),
        ));
    }
    let shards = selected(&plan, &request.shards)?;
    let set = records::load_set(store, &plan.set_digest).await?;
    let order = RehearseShard {
        plan_id: plan.plan_id.clone(),
        migration_set: Some(set),
        target_version: plan.target_version.clone(),
        limits: plan.limits,
        sample_percent: request.sample_percent,
        max_rows_per_table: request.max_rows_per_table,
        baselines: plan
            .duties
            .as_ref()
            .and_then(|duties| duties.baselines.clone()),
    };
    tracing::info!(plan = %plan.plan_id, shards = shards.len(), by = %requested_by, "rehearsal requested");
    let asked: Vec<(String, Result<ShardRehearsal, Status>)> = futures_util::stream::iter(shards)
        .map(|shard| {
            let errand = Errand {
                shard_id: shard.clone(),
                action: Action::Rehearse(order.clone()),
                requested_by: requested_by.to_owned(),
                timeout,
            };
            async move { (shard, ask(store, agents, errand).await) }
        })
        .buffer_unordered(AT_ONCE)
        .collect()
        .await;
    let mut response = RehearsePlanResponse {
        plan_id: plan.plan_id.clone(),
        ..RehearsePlanResponse::default()
    };
    for (shard, outcome) in asked {
        match outcome {
            Ok(rehearsal) => response.rehearsals.push(rehearsal),
            Err(status) => response
                .errors
                .push(format!("{shard}: {}", status.message())),
        }
    }
    response
        .rehearsals
        .sort_by(|left, right| left.shard_id.cmp(&right.shard_id));
    response.errors.sort();
    let defaults = HazardSize::default();
    let size = HazardSize {
        rows: positive_or(request.hazard_table_rows, defaults.rows),
        bytes: positive_or(request.hazard_table_bytes, defaults.bytes),
    };
    keep(store, &plan.plan_id, &response.rehearsals, size).await?;
    Ok(response)
}

fn positive_or(value: i64, default: i64) -> i64 {
    if value > 0 { value } else { default }
}

/// The plan's shards whose ids match `pattern` (every shard when it is empty).
fn selected(plan: &Plan, pattern: &str) -> Result<Vec<String>, Status> {
    let all: Vec<String> = waves::planned_tasks(plan)
        .map(|task| task.shard_id.clone())
        .collect();
    if pattern.is_empty() {
        return Ok(all);
    }
    let glob = glob::Pattern::new(pattern).map_err(|error| {
        refuse(
            ErrorCode::BadRequest,
            format!("--shards {pattern:?} is not a glob: {error}"),
        )
    })?;
    let chosen: Vec<String> = all
        .iter()
        .filter(|shard| glob.matches(shard))
        .cloned()
        .collect();
    if chosen.is_empty() {
        return Err(refuse(
            ErrorCode::BadRequest,
            format!(
                "no shard of plan {} matches {pattern:?}; its shards: {}",
                plan.plan_id,
                all.join(", ")
            ),
        ));
    }
    Ok(chosen)
}

async fn ask<S: Store>(
    store: &S,
    agents: &[(String, Hello)],
    errand: Errand,
) -> Result<ShardRehearsal, Status> {
    let (agent, reply) = backups::ask(store, agents, errand).await?;
    match reply.outcome {
        Some(Outcome::Rehearsed(rehearsal)) => Ok(rehearsal),
        other => Err(refuse(
            ErrorCode::Internal,
            format!("agent {agent} answered a different request: {other:?}"),
        )),
    }
}

/// Keeps each result, puts its summary into the plan, and assesses the plan's risk again with
/// every rehearsal kept.
async fn keep<S: Store>(
    store: &S,
    plan_id: &str,
    rehearsals: &[ShardRehearsal],
    size: HazardSize,
) -> Result<(), Status> {
    if rehearsals.is_empty() {
        return Ok(());
    }
    let writes: Vec<Write> = rehearsals
        .iter()
        .map(|rehearsal| {
            Write::put(
                keys::rehearsal(plan_id, &rehearsal.shard_id),
                rehearsal.encode_to_vec(),
            )
        })
        .collect();
    store
        .commit(None, &[], &writes)
        .await
        .map_err(Status::from)?;
    let kept = kept(store, plan_id).await?;
    records::update_plan(store, plan_id, None, |plan| {
        plan.rehearsals = kept.iter().map(wire::summary).collect();
        let Some(before) = plan.risk.clone() else {
            return Ok(());
        };
        let after = measured(&before, &kept, size);
        if after.level > before.level && plan.state() == PlanState::Approved {
            plan.state = PlanState::AwaitingApproval.into();
            plan.approvals.clear();
            plan.state_reason = format!(
                "a rehearsal raised the risk from {} to {} (score {}); approve it again",
                level_name(before.level),
                level_name(after.level),
                after.score
            );
        }
        plan.risk = Some(after);
        Ok(())
    })
    .await?;
    Ok(())
}

fn level_name(level: i32) -> &'static str {
    risk_level_name(RiskLevel::try_from(level).unwrap_or(RiskLevel::Unspecified))
}

/// Every rehearsal kept for the plan, newest per shard.
pub async fn kept<S: Store>(store: &S, plan_id: &str) -> Result<Vec<ShardRehearsal>, Status> {
    let listing = store
        .list(&keys::rehearsals_prefix(plan_id))
        .await
        .map_err(Status::from)?;
    listing
        .entries
        .iter()
        .map(|entry| {
            ShardRehearsal::decode(entry.value.as_slice()).map_err(|error| {
                refuse(
                    ErrorCode::Internal,
                    format!("the rehearsal kept at {} is unreadable: {error}", entry.key),
                )
            })
        })
        .collect()
}
