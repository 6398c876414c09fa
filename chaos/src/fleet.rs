//! The campaign's fleet on loopback, every part a real process the campaign can hit: an etcd
//! cluster (one or three members), three coordinator replicas, PostgreSQL clusters holding
//! several shard databases each, and one agent per cluster serving its databases. An operator
//! identity holding every role drives it through whichever replica answers.

use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use fleetshift_common::proto::v1::fleet_service_client::FleetServiceClient;
use fleetshift_common::proto::v1::{ListShardsRequest, ShardHealth, ShardSummary};
use fleetshift_common::tls::identity::{Role, SpiffeId};
use fleetshift_common::tls::mtls::TlsFiles;
use fleetshift_common::tls::pki::{self, LeafRequest, Validity};
use fleetshift_coordinator::store::{EtcdStore, Store};
use fleetshift_testkit::configs;
use fleetshift_testkit::etcd_cluster::EtcdCluster;
use fleetshift_testkit::ports;
use fleetshift_testkit::postgres::LocalPostgres;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::clocks::ReplicaClock;
use crate::disks::BackupDisk;
use crate::network::HostNetwork;
use crate::network::store::StoreNetwork;
use crate::processes::Supervised;

const TRUST_DOMAIN: &str = "fleet.example";
/// The campaign's one operator holds every role.
const OPERATOR_ROLES: &str = "viewers = [\"ops\"]\noperators = [\"ops\"]\napprovers = [\"ops\"]";
const REPLICAS: usize = 3;
/// The shards' label, which every plan selects.
pub const LABEL: (&str, &str) = ("chaos", "campaign");
/// How long an operator's call keeps trying replicas before it gives up.
const OPERATOR_PATIENCE: Duration = Duration::from_secs(120);

/// How big a fleet to start.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    pub etcd_members: usize,
    /// PostgreSQL clusters, each with its own agent.
    pub clusters: usize,
    /// Shard databases per cluster.
    pub databases: usize,
}

/// Which parts of each host the campaign's faults need.
#[derive(Debug, Clone, Copy, Default)]
pub struct Features {
    /// Each agent in a network namespace of its own ([`HostNetwork`]), so partitions can cut
    /// it off.
    pub partitioned: bool,
    /// Each agent's backups on a disk of their own ([`BackupDisk`]), so it can fill up.
    pub backup_disks: bool,
    /// Each replica on a wall clock of its own ([`ReplicaClock`]), so it can jump.
    pub clock_jumps: bool,
}

/// One shard: its id, the cluster it lives on and a pool of its database's superuser.
#[derive(Debug)]
pub struct Shard {
    pub id: String,
    pub cluster: usize,
    pub admin: PgPool,
}

/// The processes faults hit, behind one lock.
#[derive(Debug)]
pub struct Parts {
    pub etcd: EtcdCluster,
    pub replicas: Vec<Supervised>,
    /// Which replicas are frozen (SIGSTOP), so operators go elsewhere.
    pub frozen: Vec<bool>,
    pub agents: Vec<Supervised>,
    /// Each agent's network, when the campaign partitions them (else empty).
    pub networks: Vec<HostNetwork>,
    /// Each agent's backup disk, when the campaign fills them (else empty).
    pub disks: Vec<BackupDisk>,
    /// Each replica's wall clock, when the campaign steps them (else empty).
    pub clocks: Vec<ReplicaClock>,
    /// The etcd members' network, when the campaign partitions replicas from them.
    pub store_network: Option<StoreNetwork>,
}

#[derive(Debug)]
pub struct ChaosFleet {
    pub home: PathBuf,
    pki: PathBuf,
    pub store: EtcdStore,
    pub parts: tokio::sync::Mutex<Parts>,
    pub clusters: Vec<Arc<LocalPostgres>>,
    pub shards: Vec<Shard>,
    addresses: Vec<String>,
    channels: tokio::sync::Mutex<Vec<Option<Channel>>>,
}

impl ChaosFleet {
    /// Starts every part in `home` with the binaries in `binaries` and waits until a replica
    /// leads and every shard is announced; `features` says what each host needs.
    pub async fn start(
        home: &Path,
        binaries: &Path,
        size: Size,
        features: Features,
    ) -> anyhow::Result<Self> {
        let partitioned = features.partitioned;
        let pki = home.join("pki");
        pki::init(&pki, TRUST_DOMAIN, Validity::days_from_now(2), false)?;
        issue(&pki, Role::Operator, "ops", &[], &[])?;
        let (store_network, networks) = if partitioned {
            tokio::task::block_in_place(|| -> anyhow::Result<_> {
                let store = StoreNetwork::create(REPLICAS)?;
                let hosts = HostNetwork::create(size.clusters, store.subnet)?;
                Ok((Some(store), hosts))
            })?
        } else {
            (None, Vec::new())
        };
        let agent_side: Vec<IpAddr> = networks
            .iter()
            .map(|network| IpAddr::V4(network.coordinators))
            .collect();
        let placement = store_network
            .as_ref()
            .map(StoreNetwork::placement)
            .unwrap_or_default();
        let etcd = tokio::task::block_in_place(|| {
            EtcdCluster::start_placed(size.etcd_members, placement)
        })?;
        let endpoints = etcd.endpoints();
        // Each replica reaches etcd at an address of its own, which a partition can cut.
        let replica_endpoints = |index: usize| match &store_network {
            Some(store) => etcd.endpoints_at(store.replica_address(index)),
            None => endpoints.clone(),
        };
        let mut ports = Vec::new();
        let mut replicas = Vec::new();
        let mut clocks = Vec::new();
        for index in 0..REPLICAS {
            let id = replica_id(index);
            issue(&pki, Role::Coordinator, &id, &["localhost"], &agent_side)?;
            let port = ports::free_port()?;
            let config = home.join(format!("{id}.toml"));
            // Agents in namespaces reach the replicas on their pairs, not on loopback.
            let listen = if partitioned { "0.0.0.0" } else { "127.0.0.1" };
            std::fs::write(
                &config,
                configs::replica(
                    &id,
                    &format!("{listen}:{port}"),
                    TRUST_DOMAIN,
                    &replica_endpoints(index),
                    OPERATOR_ROLES,
                ),
            )?;
            let program = text(&binaries.join("fleetshift"))?;
            let arguments = ["serve".to_owned(), "--config".to_owned(), text(&config)?];
            let (program, arguments) = if features.clock_jumps {
                let clock = ReplicaClock::new(&home.join(format!("clock-{id}")))?;
                let wrapped = clock.wrap(&program, &arguments);
                clocks.push(clock);
                wrapped
            } else {
                (program, arguments.to_vec())
            };
            replicas.push(Supervised::start(
                Path::new(&program),
                &arguments,
                &home.join(format!("{id}.log")),
            )?);
            ports.push(port);
        }
        let addresses: Vec<String> = ports
            .iter()
            .map(|port| format!("https://localhost:{port}"))
            .collect();
        let mut clusters = Vec::new();
        let mut shards = Vec::new();
        let mut agents = Vec::new();
        let mut disks = Vec::new();
        for cluster in 0..size.clusters {
            let postgres = Arc::new(tokio::task::block_in_place(LocalPostgres::start)?);
            let agent = format!("host-{cluster}");
            issue(&pki, Role::Agent, &agent, &[], &[])?;
            let mut tables = String::new();
            for database in 0..size.databases {
                let name = format!("shard_{cluster}_{database}");
                let url = postgres.create_database(&name).await?;
                let id = format!("{agent}-db{database}");
                let secret = home.join(format!("{id}.url"));
                // An agent in a namespace has no loopback to the cluster: its socket.
                let agent_url = if partitioned {
                    postgres.socket_url(&name)
                } else {
                    url.clone()
                };
                std::fs::write(&secret, &agent_url)?;
                tables.push_str(&format!(
                    "[[shards]]\nid = \"{id}\"\nlabels = {{ {} = \"{}\" }}\ndatabase_url_file = \"{}\"\n",
                    LABEL.0,
                    LABEL.1,
                    secret.display()
                ));
                let admin = PgPoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect(&url)
                    .await
                    .with_context(|| format!("connecting to {name}"))?;
                shards.push(Shard { id, cluster, admin });
            }
            let config = home.join(format!("agent-{agent}.toml"));
            let dialed: Vec<String> = match networks.get(cluster) {
                Some(network) => ports
                    .iter()
                    .map(|port| format!("https://{}:{port}", network.coordinators))
                    .collect(),
                None => addresses.clone(),
            };
            if features.backup_disks {
                let disk = BackupDisk::mount(&home.join(format!("backups-{agent}")))?;
                tables.push_str(&backups_config(&disk.directory, postgres.binaries()));
                disks.push(disk);
            }
            std::fs::write(&config, configs::agent(&agent, &dialed, &tables))?;
            let program = text(&binaries.join("fleetshift-agent"))?;
            let arguments = ["--config".to_owned(), text(&config)?, "run".to_owned()];
            let (program, arguments) = match networks.get(cluster) {
                Some(network) => network.wrap(&program, &arguments),
                None => (program, arguments.to_vec()),
            };
            agents.push(Supervised::start(
                Path::new(&program),
                &arguments,
                &home.join(format!("agent-{agent}.log")),
            )?);
            clusters.push(postgres);
        }
        let store = EtcdStore::connect(&endpoints).await?;
        let fleet = Self {
            home: home.to_owned(),
            pki,
            store,
            parts: tokio::sync::Mutex::new(Parts {
                etcd,
                frozen: vec![false; REPLICAS],
                replicas,
                agents,
                networks,
                disks,
                clocks,
                store_network,
            }),
            clusters,
            shards,
            channels: tokio::sync::Mutex::new(vec![None; REPLICAS]),
            addresses,
        };
        fleet.await_healed().await?;
        Ok(fleet)
    }

    /// Waits until every shard is announced by an agent holding a session and reaching its
    /// database, as an operator would before the next step.
    pub async fn await_healed(&self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            // Each shard not yet healed, with why.
            let waiting: Vec<String> = match self
                .operator("list shards", |mut client| async move {
                    client
                        .list_shards(ListShardsRequest {
                            selector: [(LABEL.0.to_owned(), LABEL.1.to_owned())].into(),
                        })
                        .await
                })
                .await
            {
                Ok(listed) => self
                    .shards
                    .iter()
                    .filter_map(|shard| {
                        let summary = listed.shards.iter().find(|s| s.shard_id == shard.id);
                        match summary.map(ShardSummary::health) {
                            None => Some(format!("{} (not announced)", shard.id)),
                            Some(
                                health
                                @ (ShardHealth::AgentDisconnected | ShardHealth::Unreachable),
                            ) => Some(format!("{} ({health:?})", shard.id)),
                            Some(_) => None,
                        }
                    })
                    .collect(),
                Err(error) => vec![format!("every shard (listing them failed: {error})")],
            };
            if waiting.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "shards not announced and reachable within a minute: {}; see the logs in {}",
                    waiting.join(", "),
                    self.home.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Calls the fleet API as the operator on the first replica that answers (not killed,
    /// not frozen, its store reachable), trying again until one does; a refusal that is not
    /// about availability is returned at once.
    pub async fn operator<T, F, Fut>(&self, what: &str, call: F) -> Result<T, OperatorError>
    where
        F: Fn(FleetServiceClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let deadline = tokio::time::Instant::now() + OPERATOR_PATIENCE;
        let mut last = String::from("no replica was up");
        while tokio::time::Instant::now() < deadline {
            for index in self.answering().await {
                let Some(channel) = self.channel(index).await else {
                    continue;
                };
                let called = tokio::time::timeout(
                    Duration::from_secs(15),
                    call(FleetServiceClient::new(channel)),
                )
                .await;
                match called {
                    Ok(Ok(response)) => return Ok(response.into_inner()),
                    Ok(Err(status)) if !transient(&status) => {
                        return Err(OperatorError::Refused {
                            what: what.to_owned(),
                            code: status.code(),
                            message: status.message().to_owned(),
                        });
                    }
                    Ok(Err(status)) => {
                        last = format!("{}: {}", status.code(), status.message());
                        self.channels.lock().await[index] = None;
                    }
                    Err(_) => {
                        last = format!("replica {} did not answer within 15 s", replica_id(index));
                        self.channels.lock().await[index] = None;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(OperatorError::Unanswered {
            what: what.to_owned(),
            last,
        })
    }

    /// The replicas running and not frozen.
    async fn answering(&self) -> Vec<usize> {
        let parts = self.parts.lock().await;
        (0..REPLICAS)
            .filter(|index| parts.replicas[*index].running() && !parts.frozen[*index])
            .collect()
    }

    async fn channel(&self, index: usize) -> Option<Channel> {
        if let Some(channel) = self.channels.lock().await[index].clone() {
            return Some(channel);
        }
        let files = TlsFiles {
            certificate: self.pki.join("operator-ops.pem"),
            private_key: self.pki.join("operator-ops.key"),
            trust_bundle: self.pki.join(pki::CA_CERTIFICATE),
        };
        let channel =
            fleetshift_common::tls::channel::connect(&self.addresses[index], "localhost", &files)
                .await
                .ok()?;
        self.channels.lock().await[index] = Some(channel.clone());
        Some(channel)
    }

    /// The index of the leading replica, as the store names it (`None`: none leads, or the
    /// store does not answer).
    pub async fn leader(&self) -> Option<usize> {
        let leadership = tokio::time::timeout(Duration::from_secs(3), self.store.leader())
            .await
            .ok()?
            .ok()??;
        (0..REPLICAS).find(|index| replica_id(*index) == leadership.leader)
    }
}

/// An operator's call that did not go through.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("{what}: refused ({code:?}): {message}")]
    Refused {
        what: String,
        code: Code,
        message: String,
    },
    #[error("{what}: no replica answered within {OPERATOR_PATIENCE:?} (last: {last})")]
    Unanswered { what: String, last: String },
}

/// Statuses that mean "ask again, maybe elsewhere".
fn transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::Internal
            | Code::Aborted
            | Code::Cancelled
    )
}

pub fn replica_id(index: usize) -> String {
    format!("c{index}")
}

fn issue(
    directory: &Path,
    role: Role,
    name: &str,
    dns_names: &[&str],
    ip_addresses: &[IpAddr],
) -> anyhow::Result<()> {
    let request = LeafRequest {
        identity: SpiffeId::new(TRUST_DOMAIN, role, name)?,
        dns_names: dns_names.iter().map(|name| (*name).to_owned()).collect(),
        ip_addresses: ip_addresses.to_vec(),
        validity: Validity::days_from_now(2),
    };
    pki::issue(directory, &request, false)?;
    Ok(())
}

fn text(path: &Path) -> anyhow::Result<String> {
    path.to_str()
        .map(str::to_owned)
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

/// An agent's `[backups]`: on its disk, one kept per shard, with the cluster's own client
/// programs.
fn backups_config(directory: &Path, programs: &Path) -> String {
    format!(
        "[backups]\ndirectory = \"{}\"\nkeep = 1\npg_dump = \"{}\"\npg_restore = \"{}\"\npsql = \"{}\"\n",
        directory.display(),
        programs.join("pg_dump").display(),
        programs.join("pg_restore").display(),
        programs.join("psql").display(),
    )
}
