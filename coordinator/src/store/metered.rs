//! A [`Store`] that times every round trip of the store it wraps and counts its failures
//! ([`CoordinatorMetrics::store_request`]); a failed keep-alive is also a lease keep-alive
//! failure. A watch is timed until it is established, not while it streams.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    Changes, Claim, Condition, Entry, Epoch, Leadership, LeaseId, Listing, Store, StoreError,
    Transaction, Write,
};
use crate::metrics::CoordinatorMetrics;

#[derive(Debug)]
pub struct MeteredStore<S> {
    inner: Arc<S>,
    metrics: Arc<CoordinatorMetrics>,
}

impl<S: Store> MeteredStore<S> {
    pub fn new(inner: Arc<S>, metrics: Arc<CoordinatorMetrics>) -> Self {
        Self { inner, metrics }
    }

    async fn timed<T>(
        &self,
        operation: &'static str,
        request: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let answer = request.await;
        self.metrics
            .store_request(operation, started.elapsed(), answer.as_ref().err());
        answer
    }
}

impl<S: Store> Store for MeteredStore<S> {
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        self.timed("grant_lease", self.inner.grant_lease(ttl)).await
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        self.timed("keep_alive", self.inner.keep_alive(lease)).await
    }

    async fn revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.timed("revoke", self.inner.revoke(lease)).await
    }

    async fn claim(&self, shard: &str, holder: &str, lease: LeaseId) -> Result<Claim, StoreError> {
        self.timed("claim", self.inner.claim(shard, holder, lease))
            .await
    }

    async fn claim_of(&self, shard: &str) -> Result<Option<Claim>, StoreError> {
        self.timed("claim_of", self.inner.claim_of(shard)).await
    }

    async fn release(&self, claim: &Claim) -> Result<bool, StoreError> {
        self.timed("release", self.inner.release(claim)).await
    }

    async fn campaign(
        &self,
        candidate: &str,
        lease: LeaseId,
    ) -> Result<Option<Leadership>, StoreError> {
        self.timed("campaign", self.inner.campaign(candidate, lease))
            .await
    }

    async fn leader(&self) -> Result<Option<Leadership>, StoreError> {
        self.timed("leader", self.inner.leader()).await
    }

    async fn commit(
        &self,
        epoch: Option<Epoch>,
        conditions: &[Condition],
        writes: &[Write],
    ) -> Result<Option<i64>, StoreError> {
        self.timed("commit", self.inner.commit(epoch, conditions, writes))
            .await
    }

    async fn commit_each(
        &self,
        epoch: Option<Epoch>,
        transactions: &[Transaction],
    ) -> Result<Vec<Option<i64>>, StoreError> {
        self.timed("commit_each", self.inner.commit_each(epoch, transactions))
            .await
    }

    async fn read(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        self.timed("read", self.inner.read(key)).await
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        self.timed("list", self.inner.list(prefix)).await
    }

    async fn watch(&self, prefix: &str, after: i64) -> Result<Changes, StoreError> {
        self.timed("watch", self.inner.watch(prefix, after)).await
    }

    async fn announce_agent(
        &self,
        agent: &str,
        facts: &[u8],
        lease: LeaseId,
    ) -> Result<(), StoreError> {
        self.timed(
            "announce_agent",
            self.inner.announce_agent(agent, facts, lease),
        )
        .await
    }

    async fn agent_lease(&self, agent: &str) -> Result<Option<LeaseId>, StoreError> {
        self.timed("agent_lease", self.inner.agent_lease(agent))
            .await
    }

    async fn agents(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.timed("agents", self.inner.agents()).await
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn round_trips_are_timed_and_a_failed_keep_alive_is_counted() {
        let mut registry = Registry::default();
        let metrics = CoordinatorMetrics::register(&mut registry);
        let store = MeteredStore::new(Arc::new(MemoryStore::new()), metrics);
        let lease = store
            .grant_lease(Duration::from_secs(5))
            .await
            .expect("lease");
        store.revoke(lease).await.expect("revoke");
        assert!(store.keep_alive(lease).await.is_err());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        for expected in [
            "fleetshift_store_request_duration_seconds_count{operation=\"grant_lease\"} 1",
            "fleetshift_store_request_errors_total{operation=\"keep_alive\",kind=\"lease_expired\"} 1",
            "fleetshift_lease_keepalive_failures_total 1",
        ] {
            assert!(text.contains(expected), "{expected} in {text}");
        }
    }
}
