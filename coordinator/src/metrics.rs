//! The coordinator's Prometheus metrics, served by the telemetry endpoint
//! (`fleetshift_common::telemetry::endpoint`).
//!
//! - [`CoordinatorMetrics`]: every family, registered once per replica;
//! - [`rollouts`]: the leader's view of plans, shard tasks and waves, published after every
//!   step of the rollout driver (followers publish none, so a sum over replicas is exact);
//! - [`grpc`]: a tower layer timing every gRPC request by method;
//! - the store's request latency, errors and lease keep-alive failures are counted by
//!   [`crate::store::MeteredStore`].
//!
//! Labels are bounded: operations and methods are fixed sets, `plan` only names plans that
//! are running or paused, states are enumerations. Nothing in them is a secret.

pub mod grpc;
pub mod rollouts;

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::mailbox::Mailbox;
use crate::store::StoreError;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OperationLabel {
    pub operation: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OperationErrorLabels {
    pub operation: &'static str,
    pub kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct MethodLabel {
    pub method: String,
}

/// Request latencies: 0.5 ms to about 16 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every metric of one coordinator replica.
#[derive(Debug)]
pub struct CoordinatorMetrics {
    leader: Gauge,
    leader_epoch: Gauge,
    store_duration: Family<OperationLabel, Histogram, fn() -> Histogram>,
    store_errors: Family<OperationErrorLabels, Counter>,
    keepalive_failures: Counter,
    grpc_duration: Family<MethodLabel, Histogram, fn() -> Histogram>,
    pub rollouts: rollouts::RolloutGauges,
    /// Shards whose schema differs from their version's majority (the leader's count).
    pub schema_drift: Gauge,
}

impl CoordinatorMetrics {
    /// The metrics, registered in `registry`.
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let metrics = Self {
            leader: Gauge::default(),
            leader_epoch: Gauge::default(),
            store_duration: Family::new_with_constructor(latency_histogram),
            store_errors: Family::default(),
            keepalive_failures: Counter::default(),
            grpc_duration: Family::new_with_constructor(latency_histogram),
            rollouts: rollouts::RolloutGauges::default(),
            schema_drift: Gauge::default(),
        };
        registry.register(
            "fleetshift_leader",
            "1 while this replica leads the fleet",
            metrics.leader.clone(),
        );
        registry.register(
            "fleetshift_leader_epoch",
            "The epoch (leader key's create revision) of this replica's leadership, 0 when following",
            metrics.leader_epoch.clone(),
        );
        registry.register_with_unit(
            "fleetshift_store_request_duration",
            "Round trips to the fleet store (etcd), by operation",
            Unit::Seconds,
            metrics.store_duration.clone(),
        );
        registry.register(
            "fleetshift_store_request_errors",
            "Failed store requests, by operation and kind (unavailable, lease_expired, claimed, not_leader, corrupt)",
            metrics.store_errors.clone(),
        );
        registry.register(
            "fleetshift_lease_keepalive_failures",
            "Lease keep-alives (agent sessions and this replica's election lease) that failed",
            metrics.keepalive_failures.clone(),
        );
        registry.register_with_unit(
            "fleetshift_grpc_request_duration",
            "gRPC requests until the response headers (for a stream: until it is open), by method",
            Unit::Seconds,
            metrics.grpc_duration.clone(),
        );
        registry.register(
            "fleetshift_schema_drift_shards",
            "Shards whose schema fingerprint differs from the fleet's majority at their version (the leader's count; 0 on followers)",
            metrics.schema_drift.clone(),
        );
        metrics.rollouts.register(registry);
        Arc::new(metrics)
    }

    /// This replica leads under `epoch`, or (`None`) follows.
    pub fn leading(&self, epoch: Option<i64>) {
        self.leader.set(i64::from(epoch.is_some()));
        self.leader_epoch.set(epoch.unwrap_or(0));
    }

    /// One store round trip and how it ended.
    pub(crate) fn store_request(
        &self,
        operation: &'static str,
        took: Duration,
        error: Option<&StoreError>,
    ) {
        self.store_duration
            .get_or_create(&OperationLabel { operation })
            .observe(took.as_secs_f64());
        if let Some(error) = error {
            let kind = match error {
                StoreError::Unavailable(_) => "unavailable",
                StoreError::LeaseExpired(_) => "lease_expired",
                StoreError::Claimed { .. } => "claimed",
                StoreError::NotLeader(_) => "not_leader",
                StoreError::Corrupt { .. } => "corrupt",
                StoreError::Compacted(_) => "compacted",
            };
            self.store_errors
                .get_or_create(&OperationErrorLabels { operation, kind })
                .inc();
            if operation == "keep_alive" {
                self.keepalive_failures.inc();
            }
        }
    }

    pub(crate) fn grpc_request(&self, method: String, took: Duration) {
        self.grpc_duration
            .get_or_create(&MethodLabel { method })
            .observe(took.as_secs_f64());
    }
}

/// `fleetshift_agents_connected`, read from the replica's mailbox at scrape time.
#[derive(Debug)]
pub struct ConnectedAgents(pub Arc<Mailbox>);

impl Collector for ConnectedAgents {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let connected = i64::try_from(self.0.connected()).unwrap_or(i64::MAX);
        let gauge = encoder.encode_descriptor(
            "fleetshift_agents_connected",
            "Agents holding a session with this replica",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(connected).encode(gauge)
    }
}
