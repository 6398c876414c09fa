//! Driving a rollout through the operator API as the CLI does: plan, approve, watch, start,
//! follow to the end.

use fleetshift_common::proto::v1::fleet_service_client::FleetServiceClient;
use fleetshift_common::proto::v1::rollout_event::Event;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use fleetshift_common::proto::v1::{
    ApprovePlanRequest, CreatePlanRequest, GetPlanRequest, PlanAction, PlanState, RolloutEvent,
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

/// Where a finished rollout's wall time went, from its tasks' own times: the agents' work
/// against the time between it (dispatch, reporting, waves).
#[derive(Debug)]
pub struct Timeline {
    /// From the start call to the first task handed to an agent.
    pub first_dispatch: Duration,
    /// The canary wave's run, from its first hand-over to its last end.
    pub canary: Duration,
    /// From the canary's end to the next wave's first hand-over.
    pub wave_gap: Duration,
    /// Mean time an agent spent on a run, from receiving it to its result.
    pub agent_mean: Duration,
    /// Mean time from a task's hand-over to its end as the leader recorded them.
    pub task_mean: Duration,
    /// From the last task's end to the plan's end as the watcher saw it.
    pub tail: Duration,
}

impl Timeline {
    /// Reads the plan's tasks; `started` and `ended` are when the start call was made and when
    /// the watcher saw the plan end.
    pub async fn read(
        client: &FleetServiceClient<Channel>,
        plan_id: &str,
        started: SystemTime,
        ended: SystemTime,
    ) -> anyhow::Result<Self> {
        let plan = client
            .clone()
            .get_plan(GetPlanRequest {
                plan_id: plan_id.to_owned(),
            })
            .await?
            .into_inner();
        let instant = |stamp: Option<prost_types::Timestamp>| -> anyhow::Result<SystemTime> {
            let stamp = stamp.context("a task without its times")?;
            Ok(SystemTime::try_from(stamp)?)
        };
        let since = |from: SystemTime, to: SystemTime| to.duration_since(from).unwrap_or_default();
        let mut spans = Vec::new();
        let mut agent = Duration::ZERO;
        for wave in &plan.waves {
            for task in &wave.shards {
                let begun = instant(task.started_at)?;
                let finished = instant(task.finished_at)?;
                spans.push((wave.index, begun, finished));
                let run = task.metrics.and_then(|metrics| metrics.duration);
                agent += run.map(Duration::try_from).transpose()?.unwrap_or_default();
            }
        }
        let count = u32::try_from(spans.len().max(1))?;
        let first = spans.iter().map(|span| span.1).min().context("no tasks")?;
        let last = spans.iter().map(|span| span.2).max().context("no tasks")?;
        let canary_end = spans
            .iter()
            .filter(|span| span.0 == 0)
            .map(|span| span.2)
            .max()
            .unwrap_or(first);
        let next_wave = spans
            .iter()
            .filter(|span| span.0 > 0)
            .map(|span| span.1)
            .min()
            .unwrap_or(canary_end);
        let busy: Duration = spans.iter().map(|span| since(span.1, span.2)).sum();
        Ok(Self {
            first_dispatch: since(started, first),
            canary: since(first, canary_end),
            wave_gap: since(canary_end, next_wave),
            agent_mean: agent / count,
            task_mean: busy / count,
            tail: since(last, ended),
        })
    }
}

impl std::fmt::Display for Timeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |duration: Duration| duration.as_secs_f64() * 1e3;
        write!(
            f,
            "first dispatch {:.0} ms, canary {:.0} ms, wave gap {:.0} ms, per task {:.0} ms (agent {:.0} ms), tail {:.0} ms",
            ms(self.first_dispatch),
            ms(self.canary),
            ms(self.wave_gap),
            ms(self.task_mean),
            ms(self.agent_mean),
            ms(self.tail),
        )
    }
}
