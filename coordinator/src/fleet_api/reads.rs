//! What the fleet service reads for viewers, callable in the replica too: the web console
//! answers from the same code as `ListShards`, `GetPlan` and `ListPlans`, after its own
//! authorisation; and a shard's ledger, which its agent reads from the shard.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use fleetshift_common::proto::v1::host_reply::Outcome;
use fleetshift_common::proto::v1::host_request::Action;
use fleetshift_common::proto::v1::{
    Plan, ReadLedger, ShardHealth, ShardLedger, ShardSummary, ShardTask,
};
use fleetshift_common::selector::{self, Announced};
use tonic::Status;

use super::FleetApi;
use crate::authz::Roles;
use crate::error::{ErrorCode, refuse};
use crate::events::fanout::Fanout;
use crate::lifecycles;
use crate::rollout::{RolloutError, records, throttled};
use crate::store::{Entry, Store, keys};

impl<S: Store + 'static> FleetApi<S> {
    /// Every announced shard `selector` selects, by id.
    pub async fn shards(
        &self,
        selector: &HashMap<String, String>,
    ) -> Result<Vec<ShardSummary>, Status> {
        let settings = lifecycles::load(&*self.store).await?;
        let mut shards = Vec::new();
        for (agent, hello) in self.announcements().await? {
            for shard in hello.shards.into_iter().filter(|shard| {
                let announced = Announced {
                    agent: &agent,
                    host: hello.host.as_ref(),
                    shard,
                };
                selector::selects(selector, &announced.attributes())
            }) {
                let health = if !shard.reachable {
                    ShardHealth::Unreachable
                } else if !shard.unfinished_versions.is_empty() {
                    ShardHealth::UnfinishedRevision
                } else {
                    ShardHealth::Healthy
                };
                let (lifecycle, lifecycle_source) = lifecycles::in_force(&shard, &settings);
                shards.push(ShardSummary {
                    lifecycle: lifecycle.into(),
                    lifecycle_source,
                    shard_id: shard.shard_id,
                    labels: shard.labels,
                    agent_id: agent.clone(),
                    current_version: shard.current_version,
                    health: health.into(),
                    schema_fingerprint: shard.schema_fingerprint,
                    agent_version: hello.agent_version.clone(),
                    host: hello.host.clone(),
                    server: shard.server,
                    engine: shard.engine,
                });
            }
        }
        shards.sort_by(|left, right| left.shard_id.cmp(&right.shard_id));
        Ok(shards)
    }

    /// The plan with its tasks and the throttles its shards wait on.
    pub async fn plan(&self, plan_id: &str) -> Result<Plan, Status> {
        let mut plan = self.plan_view(plan_id).await?;
        let waits = throttled::load(&*self.store, plan_id).await?;
        throttled::put_on(&mut plan, &waits, std::time::SystemTime::now());
        Ok(plan)
    }

    /// Every plan in one of `states` (all when empty), newest first.
    pub async fn plans(&self, states: &[i32]) -> Result<Vec<Plan>, Status> {
        let mut plans: Vec<Plan> = records::load_plans(&*self.store)
            .await?
            .into_iter()
            .filter(|plan| states.is_empty() || states.contains(&plan.state))
            .collect();
        plans.sort_by(|left, right| right.plan_id.cmp(&left.plan_id));
        Ok(plans)
    }

    /// [`FleetApi::plans`], each with its tasks as they stand (one read of every task).
    pub async fn plans_with_tasks(&self, states: &[i32]) -> Result<Vec<Plan>, Status> {
        let plans = self.plans(states).await?;
        let prefix = keys::all_tasks_prefix();
        let listing = self.store.list(&prefix).await?;
        let mut by_plan: HashMap<String, Vec<Entry>> = HashMap::new();
        for entry in listing.entries {
            let plan = entry
                .key
                .strip_prefix(&prefix)
                .and_then(|rest| rest.split_once('/'))
                .map(|(plan, _shard)| plan.to_owned());
            if let Some(plan) = plan {
                by_plan.entry(plan).or_default().push(entry);
            }
        }
        plans
            .into_iter()
            .map(|plan| {
                let entries = by_plan
                    .get(plan.plan_id.as_str())
                    .map_or(&[][..], Vec::as_slice);
                let tasks = records::tasks_of(entries)?;
                Ok(records::with_tasks(plan, &tasks))
            })
            .collect::<Result<_, RolloutError>>()
            .map_err(Status::from)
    }

    /// The replica's one watch of the store, which rollout watches follow.
    pub fn events(&self) -> &Arc<Fanout<S>> {
        &self.events
    }

    /// Who holds which role, and the trust domain identities must belong to.
    pub fn authority(&self) -> (&Roles, &str) {
        (&self.roles, &self.trust_domain)
    }
}

impl<S: Store + 'static> FleetApi<S> {
    /// The shard's task in each plan that included it, newest plan first; each plan without
    /// its waves and analyses (its summary).
    pub async fn shard_history(&self, shard_id: &str) -> Result<Vec<(Plan, ShardTask)>, Status> {
        let mut history = Vec::new();
        for plan in self.plans(&[]).await? {
            let included = plan
                .waves
                .iter()
                .any(|wave| wave.shards.iter().any(|task| task.shard_id == shard_id));
            if !included {
                continue;
            }
            let Some(task) = records::load_task(&*self.store, &plan.plan_id, shard_id).await?
            else {
                continue;
            };
            let summary = Plan {
                waves: Vec::new(),
                analyses: Vec::new(),
                changes: Vec::new(),
                findings: Vec::new(),
                rehearsals: Vec::new(),
                ..plan
            };
            history.push((summary, task));
        }
        Ok(history)
    }
}

/// How long a shard's agent may take to read its ledger.
const LEDGER_TIMEOUT: Duration = Duration::from_secs(10);

impl<S: Store + 'static> FleetApi<S> {
    /// The shard's ledger as the shard keeps it, read by its agent for `requested_by`.
    pub async fn ledger_of(
        &self,
        shard_id: &str,
        requested_by: String,
    ) -> Result<ShardLedger, Status> {
        let (agent, outcome) = self
            .ask(
                shard_id.to_owned(),
                Action::ReadLedger(ReadLedger {}),
                requested_by,
                LEDGER_TIMEOUT,
            )
            .await?;
        match outcome {
            Outcome::Ledger(ledger) => Ok(ledger),
            _ => Err(refuse(
                ErrorCode::Internal,
                format!("agent {agent} answered a ledger request with something else"),
            )),
        }
    }
}
