//! A fleet of real processes for the benchmarks: one `fleetshift serve` replica on a real
//! etcd, operator `ops` holding every role, and `fleetshift-agent` processes serving
//! databases, each process started with the coordinator's environment.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use fleetshift_common::proto::v1::ListShardsRequest;
use fleetshift_common::proto::v1::fleet_service_client::FleetServiceClient;
use fleetshift_common::tls::identity::Role;
use fleetshift_coordinator::store::EtcdStore;
use fleetshift_testkit::etcd::EtcdServer;
use tonic::transport::Channel;

use crate::binary;
use crate::fleet::{
    Process, agent_config_text, await_leader, channel_as, init_pki, issue, spawn_replica_with,
};
use crate::wait::wait_until;

/// A running replica and an operator's client of it.
#[derive(Debug)]
pub struct Coordinator {
    pub address: String,
    pub client: FleetServiceClient<Channel>,
    /// Added to the replica's and its agents' environment.
    pub environment: Vec<(String, String)>,
    _process: Process,
}

/// Starts a replica in `home` on `etcd`, with certificates for `agents` agents
/// (`host-0`, `host-1`, …), once it leads.
pub async fn start_coordinator(
    home: &Path,
    etcd: &EtcdServer,
    agents: usize,
    environment: Vec<(String, String)>,
) -> anyhow::Result<Coordinator> {
    std::fs::create_dir_all(home)?;
    let pki = home.join("pki");
    init_pki(&pki);
    issue(&pki, Role::Operator, "ops", &[]);
    for agent in 0..agents {
        issue(&pki, Role::Agent, &format!("host-{agent}"), &[]);
    }
    let roles = "viewers = [\"ops\"]\noperators = [\"ops\"]\napprovers = [\"ops\"]";
    let (port, process) = spawn_replica_with(home, "c1", &etcd.endpoint, roles, &environment);
    let store = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint)).await?;
    if !await_leader(&store, Duration::from_secs(20)).await {
        bail!("no leader; see {}", home.join("c1.log").display());
    }
    let address = format!("https://localhost:{port}");
    let client = FleetServiceClient::new(channel_as(&address, &pki, "operator-ops").await);
    Ok(Coordinator {
        address,
        client,
        environment,
        _process: process,
    })
}

/// `agents` agent processes serving the databases at `urls` (split evenly, in order), their
/// shards named `<round>-host-<n>-db<i>` and labelled `round = <round>`.
pub fn start_agents(
    home: &Path,
    coordinator: &Coordinator,
    round: &str,
    urls: &[String],
    agents: usize,
) -> anyhow::Result<Vec<Process>> {
    let port: u16 = coordinator
        .address
        .rsplit(':')
        .next()
        .context("a port")?
        .parse()
        .context("a port")?;
    let mut processes = Vec::new();
    for (agent, chunk) in urls.chunks(urls.len().div_ceil(agents)).enumerate() {
        let name = format!("host-{agent}");
        let mut shards = String::new();
        for (index, url) in chunk.iter().enumerate() {
            let secret = home.join(format!("{round}-{name}-{index}.url"));
            std::fs::write(&secret, url)?;
            shards.push_str(&format!(
                "[[shards]]\nid = \"{round}-{name}-db{index}\"\nlabels = {{ round = \"{round}\" }}\ndatabase_url_file = \"{}\"\n",
                secret.display()
            ));
        }
        let config = home.join(format!("agent-{name}.toml"));
        std::fs::write(&config, agent_config_text(&name, &[port], &shards))?;
        processes.push(Process::spawn_with(
            &binary::agent(),
            &["--config", config.to_str().context("path")?, "run"],
            &home.join(format!("{round}-agent-{name}.log")),
            &coordinator.environment,
        ));
    }
    Ok(processes)
}

/// Waits until `count` shards labelled `round` are announced.
pub async fn announced(coordinator: &Coordinator, round: &str, count: usize) -> anyhow::Result<()> {
    let listed = || async {
        coordinator
            .client
            .clone()
            .list_shards(ListShardsRequest {
                selector: [("round".to_owned(), round.to_owned())].into(),
            })
            .await
            .is_ok_and(|listed| listed.into_inner().shards.len() == count)
    };
    if !wait_until(Duration::from_secs(60), listed).await {
        bail!("the {count} shards of {round} were not all announced within a minute");
    }
    Ok(())
}
