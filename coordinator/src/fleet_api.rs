//! `FleetService`: what operators and SRE tooling call. Each RPC first checks the caller's role
//! ([`crate::authz`]). Shards are listed from the agents' announcements; plans and rollouts
//! answer UNIMPLEMENTED until the rollout procedure serves them.

use std::pin::Pin;
use std::sync::Arc;

use fleetshift_common::proto::v1::fleet_service_server::FleetService;
use fleetshift_common::proto::v1::{
    ApprovePlanRequest, CreatePlanRequest, GetPlanRequest, Hello, ListShardsRequest,
    ListShardsResponse, Plan, PlanAction, RolloutEvent, ShardHealth, ShardSummary,
    WatchRolloutRequest,
};
use prost::Message;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::authz::{self, OperatorRole, Roles};
use crate::store::{Store, StoreError};

#[derive(Debug)]
pub struct FleetApi<S> {
    store: Arc<S>,
    roles: Roles,
    trust_domain: String,
}

impl<S: Store + 'static> FleetApi<S> {
    pub fn new(store: Arc<S>, roles: Roles, trust_domain: &str) -> Self {
        Self {
            store,
            roles,
            trust_domain: trust_domain.to_owned(),
        }
    }

    fn authorize<T>(&self, request: &Request<T>, needed: OperatorRole) -> Result<(), Status> {
        let caller = authz::caller(request, &self.trust_domain)?;
        self.roles.authorize(&caller, needed)
    }
}

fn not_yet(what: &str) -> Status {
    Status::unimplemented(format!(
        "{what} comes with the rollout procedure; this coordinator does not serve it yet"
    ))
}

/// Every selector pair must match the shard's labels.
fn selected(
    selector: &std::collections::HashMap<String, String>,
    labels: &std::collections::HashMap<String, String>,
) -> bool {
    selector
        .iter()
        .all(|(key, value)| labels.get(key) == Some(value))
}

#[tonic::async_trait]
impl<S: Store + 'static> FleetService for FleetApi<S> {
    async fn list_shards(
        &self,
        request: Request<ListShardsRequest>,
    ) -> Result<Response<ListShardsResponse>, Status> {
        self.authorize(&request, OperatorRole::Viewer)?;
        let selector = request.into_inner().selector;
        let agents = self.store.agents().await.map_err(|error| match error {
            StoreError::Unavailable(detail) => {
                Status::unavailable(format!("the fleet store is unavailable: {detail}"))
            }
            other => Status::internal(other.to_string()),
        })?;
        let mut shards = Vec::new();
        for (agent, facts) in agents {
            let hello = Hello::decode(facts.as_slice()).map_err(|error| {
                Status::internal(format!(
                    "agent {agent}'s announcement is unreadable: {error}"
                ))
            })?;
            for shard in hello
                .shards
                .into_iter()
                .filter(|shard| selected(&selector, &shard.labels))
            {
                let health = if !shard.reachable {
                    ShardHealth::Unreachable
                } else if !shard.unfinished_versions.is_empty() {
                    ShardHealth::UnfinishedRevision
                } else {
                    ShardHealth::Healthy
                };
                shards.push(ShardSummary {
                    shard_id: shard.shard_id,
                    labels: shard.labels,
                    agent_id: agent.clone(),
                    current_version: shard.current_version,
                    health: health.into(),
                });
            }
        }
        shards.sort_by(|left, right| left.shard_id.cmp(&right.shard_id));
        Ok(Response::new(ListShardsResponse { shards }))
    }

    async fn create_plan(
        &self,
        request: Request<CreatePlanRequest>,
    ) -> Result<Response<Plan>, Status> {
        self.authorize(&request, OperatorRole::Operator)?;
        Err(not_yet("planning"))
    }

    async fn get_plan(&self, request: Request<GetPlanRequest>) -> Result<Response<Plan>, Status> {
        self.authorize(&request, OperatorRole::Viewer)?;
        Err(not_yet("reading plans"))
    }

    async fn approve_plan(
        &self,
        request: Request<ApprovePlanRequest>,
    ) -> Result<Response<Plan>, Status> {
        self.authorize(&request, OperatorRole::Approver)?;
        Err(not_yet("approving plans"))
    }

    async fn start_rollout(&self, request: Request<PlanAction>) -> Result<Response<Plan>, Status> {
        self.authorize(&request, OperatorRole::Operator)?;
        Err(not_yet("starting rollouts"))
    }

    async fn pause_rollout(&self, request: Request<PlanAction>) -> Result<Response<Plan>, Status> {
        self.authorize(&request, OperatorRole::Operator)?;
        Err(not_yet("pausing rollouts"))
    }

    async fn resume_rollout(&self, request: Request<PlanAction>) -> Result<Response<Plan>, Status> {
        self.authorize(&request, OperatorRole::Operator)?;
        Err(not_yet("resuming rollouts"))
    }

    async fn cancel_rollout(&self, request: Request<PlanAction>) -> Result<Response<Plan>, Status> {
        self.authorize(&request, OperatorRole::Operator)?;
        Err(not_yet("cancelling rollouts"))
    }

    type WatchRolloutStream = Pin<Box<dyn Stream<Item = Result<RolloutEvent, Status>> + Send>>;

    async fn watch_rollout(
        &self,
        request: Request<WatchRolloutRequest>,
    ) -> Result<Response<Self::WatchRolloutStream>, Status> {
        self.authorize(&request, OperatorRole::Viewer)?;
        Err(not_yet("watching rollouts"))
    }
}
