//! What a session hands its work to: assignments, host requests and fresh shard facts.
//! [`HostWork`] does it on this host's databases; tests give the session work that only
//! records how it was told to stop.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use fleetshift_common::proto::v1::{
    Assignment, AssignmentResult, FleetThrottle, HostFacts, HostReply, HostRequest, ProgressEvent,
    ShardFacts,
};
use fleetshift_common::selector::Announced;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::metrics::AgentMetrics;
use crate::schema_checks::SchemaChecks;
use crate::stop::StopSignal;
use crate::tenants::LiveConfig;
use crate::{assignment, facts, requests};

/// The work a session runs; cloned into each task it spawns.
pub trait Work: Clone + Send + Sync + 'static {
    /// Runs `assignment` until it ends or `stop` fires; its progress goes to `progress`.
    fn assignment(
        &self,
        assignment: Assignment,
        lease_ttl: Duration,
        stop: StopSignal,
        progress: mpsc::UnboundedSender<ProgressEvent>,
    ) -> impl Future<Output = AssignmentResult> + Send;

    /// Answers an operator's host request; `stop` fires when the session ends.
    fn host_request(
        &self,
        request: HostRequest,
        stop: CancellationToken,
    ) -> impl Future<Output = HostReply> + Send;

    /// What the agent sees of each of its shards now.
    fn facts(&self) -> impl Future<Output = Vec<ShardFacts>> + Send;

    /// Takes the operators' fleet throttles in force (the whole list, replacing the last);
    /// runs on the shards they select wait before their next revision.
    fn hold(&self, throttles: Vec<FleetThrottle>);
}

/// Work on this host's shards.
#[derive(Debug, Clone)]
pub struct HostWork {
    /// The configuration, its tenant shards found again at every facts read.
    pub config: Arc<LiveConfig>,
    pub metrics: Arc<AgentMetrics>,
    pub schemas: Arc<SchemaChecks>,
    /// The migration sets unpacked lately, shared by every run.
    pub sets: Arc<assignment::UnpackedSets>,
    /// The fleet throttles the last session heard of; each run follows them.
    pub throttles: Arc<watch::Sender<Arc<[FleetThrottle]>>>,
    /// This host, as every Hello describes it.
    pub host: HostFacts,
    /// Each shard's attributes (labels and reported facts) as last announced: what fleet
    /// throttles select by, the same as the coordinator sees.
    pub attributes: Arc<Mutex<HashMap<String, HashMap<String, String>>>>,
}

impl Work for HostWork {
    async fn assignment(
        &self,
        assignment: Assignment,
        lease_ttl: Duration,
        stop: StopSignal,
        progress: mpsc::UnboundedSender<ProgressEvent>,
    ) -> AssignmentResult {
        let attributes = self
            .attributes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&assignment.shard_id)
            .cloned();
        let throttles = assignment::FleetThrottles {
            list: self.throttles.subscribe(),
            attributes,
        };
        let config = self.config.current();
        let host = assignment::Host {
            config: &config,
            metrics: &self.metrics,
            throttles,
            sets: &self.sets,
        };
        assignment::execute(host, assignment, lease_ttl, stop, progress).await
    }

    async fn host_request(&self, request: HostRequest, stop: CancellationToken) -> HostReply {
        requests::answer(&self.config.current(), request, stop).await
    }

    async fn facts(&self) -> Vec<ShardFacts> {
        let config = self.config.refreshed().await;
        let shards = facts::read(&config, &self.schemas).await;
        let announced = shards.iter().map(|shard| {
            let attributes = Announced {
                agent: &config.agent_id,
                host: Some(&self.host),
                shard,
            }
            .attributes();
            (shard.shard_id.clone(), attributes)
        });
        *self
            .attributes
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = announced.collect();
        shards
    }

    fn hold(&self, throttles: Vec<FleetThrottle>) {
        if !throttles.is_empty() {
            tracing::info!(throttles = throttles.len(), "fleet throttles in force");
        }
        self.throttles.send_replace(Arc::from(throttles));
    }
}
