//! Throwaway single-node etcd servers on loopback: one-member [`EtcdCluster`]s.

use crate::etcd_cluster::EtcdCluster;

/// A running etcd; killed (by its PID) and deleted on drop.
#[derive(Debug)]
pub struct EtcdServer {
    cluster: EtcdCluster,
    pub endpoint: String,
}

impl EtcdServer {
    /// Starts `FLEETSHIFT_ETCD_BINARY` (default `etcd`) on free loopback ports (others when
    /// a port was taken meanwhile) and waits for `/health` to answer.
    pub fn start() -> anyhow::Result<Self> {
        let cluster = EtcdCluster::start(1)?;
        let endpoint = cluster.endpoints().remove(0);
        Ok(Self { cluster, endpoint })
    }

    /// The server's process id (to kill it mid-test), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.cluster.pid(0)
    }
}
