//! Driving a rollout through the operator API as the CLI does: plan, approve, watch, start,
//! follow to the end.

use fleetshift_common::proto::v1::fleet_service_client::FleetServiceClient;
use fleetshift_common::proto::v1::rollout_event::Event;
use fleetshift_common::proto::v1::{
    ApprovePlanRequest, CreatePlanRequest, PlanAction, PlanState, RolloutEvent,
    WatchRolloutRequest, WavePolicy,
};
use tonic::transport::Channel;
use tonic::{Status, Streaming};

/// A canary of `canary` shards, then the rest at once, at most `per_wave` and `per_host`
/// shards running; the first failure halts.
pub fn policy(canary: u32, per_wave: u32, per_host: u32) -> WavePolicy {
    WavePolicy {
        canary_shards: canary,
        percentages: vec![100],
        max_concurrency_per_wave: per_wave,
        max_concurrency_per_host: per_host,
        failure_threshold: 1,
        max_shard_retries: 0,
    }
}

/// An approved plan whose watch is open (so no event is missed), not started yet.
#[derive(Debug)]
pub struct Prepared {
    client: FleetServiceClient<Channel>,
    pub plan_id: String,
    pub events: Streaming<RolloutEvent>,
}

/// Creates the plan, approves it and opens its watch.
pub async fn prepare(
    client: &FleetServiceClient<Channel>,
    request: CreatePlanRequest,
) -> Result<Prepared, Status> {
    let mut client = client.clone();
    let plan = client.create_plan(request).await?.into_inner();
    client
        .approve_plan(ApprovePlanRequest {
            plan_id: plan.plan_id.clone(),
            comment: String::new(),
            capacity: String::new(),
        })
        .await?;
    let events = client
        .watch_rollout(WatchRolloutRequest {
            plan_id: plan.plan_id.clone(),
            include_statements: false,
            since: 0,
        })
        .await?
        .into_inner();
    Ok(Prepared {
        client,
        plan_id: plan.plan_id,
        events,
    })
}

impl Prepared {
    pub async fn start(&mut self) -> Result<(), Status> {
        self.client
            .start_rollout(PlanAction {
                plan_id: self.plan_id.clone(),
                reason: String::new(),
            })
            .await
            .map(drop)
    }

    /// Follows the watch until the plan succeeds, halts or is cancelled; `None` when the
    /// stream ends first.
    pub async fn ended(&mut self) -> Result<Option<PlanState>, Status> {
        while let Some(event) = self.events.message().await? {
            if let Some(Event::PlanState(changed)) = event.event {
                let state = PlanState::try_from(changed.state).unwrap_or(PlanState::Unspecified);
                if matches!(
                    state,
                    PlanState::Succeeded
                        | PlanState::FinishedWithFailures
                        | PlanState::Halted
                        | PlanState::Cancelled
                ) {
                    return Ok(Some(state));
                }
            }
        }
        Ok(None)
    }
}
