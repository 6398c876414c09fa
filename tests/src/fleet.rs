//! Pieces of a fleet on loopback: a development PKI and child processes that die with the test.

use fleetshift_coordinator::tasks::TaskSet;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use fleetshift_common::tls::identity::{Role, SpiffeId};
use fleetshift_common::tls::pki::{self, LeafRequest, Validity};
use fleetshift_coordinator::election::{Replica, Standing};
use fleetshift_coordinator::metrics::CoordinatorMetrics;
use prometheus_client::registry::Registry;

pub const TRUST_DOMAIN: &str = "fleet.example";

/// A CA for [`TRUST_DOMAIN`] in `directory`.
pub fn init_pki(directory: &Path) {
    pki::init(directory, TRUST_DOMAIN, Validity::days_from_now(1), false).expect("development CA");
}

/// A leaf certificate `<role>-<name>.pem` / `.key` in `directory`.
pub fn issue(directory: &Path, role: Role, name: &str, dns_names: &[&str]) {
    issue_for(directory, role, name, dns_names, &[]);
}

/// [`issue`], the certificate also naming `ip_addresses`.
pub fn issue_for(
    directory: &Path,
    role: Role,
    name: &str,
    dns_names: &[&str],
    ip_addresses: &[std::net::IpAddr],
) {
    let request = LeafRequest {
        identity: SpiffeId::new(TRUST_DOMAIN, role, name).expect("identity"),
        dns_names: dns_names.iter().map(|name| (*name).to_owned()).collect(),
        ip_addresses: ip_addresses.to_vec(),
        validity: Validity::days_from_now(1),
    };
    pki::issue(directory, &request, false).expect("leaf certificate");
}

/// A child process, SIGKILLed when dropped whatever happened in the test.
#[derive(Debug)]
pub struct Process(Child);

impl Process {
    /// Starts `program`; its stderr goes to `log`.
    pub fn spawn(program: &Path, arguments: &[&str], log: &Path) -> Self {
        Self::spawn_with(program, arguments, log, &[])
    }

    /// Like [`Process::spawn`], with `environment` added to the inherited one.
    pub fn spawn_with(
        program: &Path,
        arguments: &[&str],
        log: &Path,
        environment: &[(String, String)],
    ) -> Self {
        Self::start(program, arguments, Stdio::null(), log, environment)
    }

    /// Like [`Process::spawn_with`], its stdout written to `output`.
    pub fn spawn_printing(
        program: &Path,
        arguments: &[&str],
        output: &Path,
        log: &Path,
        environment: &[(String, String)],
    ) -> Self {
        let output = std::fs::File::create(output).expect("output file");
        Self::start(program, arguments, output.into(), log, environment)
    }

    fn start(
        program: &Path,
        arguments: &[&str],
        stdout: Stdio,
        log: &Path,
        environment: &[(String, String)],
    ) -> Self {
        let log = std::fs::File::create(log).expect("log file");
        let child = Command::new(program)
            .args(arguments)
            .envs(environment.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log)
            .spawn()
            .expect("spawn");
        Self(child)
    }

    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// Sends a signal by name (TERM, KILL, STOP, CONT, …).
    pub fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &self.0.id().to_string()])
            .status()
            .expect("kill");
        assert!(sent.success(), "kill -{name} failed");
    }

    pub fn wait_for_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What a replica logs once its gRPC listener is bound (with the address).
pub const COORDINATOR_LISTENING: &str = "coordinator listening";

/// What a replica logs once its web console is bound (with the address).
pub const CONSOLE_LISTENING: &str = "web console listening";

/// What a process logs once its telemetry endpoint is bound (with the address).
pub const TELEMETRY_LISTENING: &str = "telemetry endpoint listening";

/// The loopback port a child process told to listen on `127.0.0.1:0` logged, in `log`, on
/// the line with `message` (text or JSON logs alike); waits up to 30 s for that line.
pub fn logged_port(log: &Path, message: &str) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let port = text
            .lines()
            .filter(|line| line.contains(message))
            .find_map(|line| {
                let (_, after) = line.split_once("127.0.0.1:")?;
                let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok()
            });
        if let Some(port) = port {
            return port;
        }
        assert!(
            Instant::now() < deadline,
            "no \"{message}\" line with an address in {} within 30 s:\n{text}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `client`'s replica lists exactly `count` shards within `limit` (agents read every
/// shard's facts before announcing them, which takes a while on a loaded machine).
pub async fn shards_announced(
    client: &fleetshift_common::proto::v1::fleet_service_client::FleetServiceClient<
        tonic::transport::Channel,
    >,
    count: usize,
    limit: Duration,
) -> bool {
    crate::wait::wait_until(limit, || {
        let mut client = client.clone();
        async move {
            client
                .list_shards(fleetshift_common::proto::v1::ListShardsRequest::default())
                .await
                .is_ok_and(|response| response.into_inner().shards.len() == count)
        }
    })
    .await
}

/// Writes `coordinator.toml` in `home` for `fleetshift serve` as replica `c1` (`port` 0: the
/// kernel picks one, see [`logged_port`]); see [`write_replica_config`].
pub fn write_coordinator_config(
    home: &Path,
    port: u16,
    etcd_endpoint: &str,
    roles: &str,
) -> std::path::PathBuf {
    let path = home.join("coordinator.toml");
    std::fs::write(&path, replica_config_text("c1", port, etcd_endpoint, roles))
        .expect("coordinator config");
    path
}

/// Writes `<id>.toml` in `home` for `fleetshift serve` as replica `id`: heartbeat 1 s, TLS
/// files from `home/pki`, etcd at `etcd_endpoint`; `roles` is the `[roles]` section's body.
pub fn write_replica_config(
    home: &Path,
    id: &str,
    port: u16,
    etcd_endpoint: &str,
    roles: &str,
) -> std::path::PathBuf {
    let path = home.join(format!("{id}.toml"));
    std::fs::write(&path, replica_config_text(id, port, etcd_endpoint, roles))
        .expect("replica config");
    path
}

fn replica_config_text(id: &str, port: u16, etcd_endpoint: &str, roles: &str) -> String {
    fleetshift_testkit::configs::replica(
        id,
        &format!("127.0.0.1:{port}"),
        TRUST_DOMAIN,
        &[etcd_endpoint.to_owned()],
        roles,
    )
}

/// Writes `agent.toml` in `home` for `fleetshift-agent run` as `agent`, talking to the
/// coordinator on `port`; `shards` is the `[[shards]]` tables' text.
pub fn write_agent_config(home: &Path, port: u16, agent: &str, shards: &str) -> std::path::PathBuf {
    let path = home.join("agent.toml");
    std::fs::write(&path, agent_config_text(agent, &[port], shards)).expect("agent config");
    path
}

/// An agent's configuration as `agent`, with the replicas on `ports` (tried in turn) and the
/// `[[shards]]` tables' text; TLS files from `pki/` beside it.
pub fn agent_config_text(agent: &str, ports: &[u16], shards: &str) -> String {
    let addresses: Vec<String> = ports
        .iter()
        .map(|port| format!("https://localhost:{port}"))
        .collect();
    fleetshift_testkit::configs::agent(agent, &addresses, shards)
}

/// `[[shards]]` tables for `agent`'s databases at `urls`, named `<agent>-db<index>` with the
/// label `env = "test"`; each URL goes into a file in `home` (as a mounted secret would).
pub fn shard_tables(home: &Path, agent: &str, urls: &[String]) -> String {
    let mut tables = String::new();
    for (index, url) in urls.iter().enumerate() {
        let secret = home.join(format!("{agent}-{index}.url"));
        std::fs::write(&secret, url).expect("url file");
        tables.push_str(&format!(
            "[[shards]]\nid = \"{agent}-db{index}\"\nlabels = {{ env = \"test\" }}\ndatabase_url_file = \"{}\"\n",
            secret.display()
        ));
    }
    tables
}

/// A client channel to the coordinator on `address` as `holder` (`<role>-<name>` in `pki`),
/// checking the coordinator's certificate against `localhost`.
pub async fn channel_as(address: &str, pki: &Path, holder: &str) -> tonic::transport::Channel {
    let files = fleetshift_common::tls::mtls::TlsFiles {
        certificate: pki.join(format!("{holder}.pem")),
        private_key: pki.join(format!("{holder}.key")),
        trust_bundle: pki.join(pki::CA_CERTIFICATE),
    };
    fleetshift_common::tls::channel::connect(address, "localhost", &files)
        .await
        .expect("connect to the coordinator")
}

/// Hands `assignment` straight to `agent`'s session on this replica (no plan, no leader) and
/// waits up to `wait` for the result the session records in the store, which it then removes.
/// The send's refusal (not connected, not the agent's shard) is returned as is.
pub async fn assign<S: fleetshift_coordinator::store::Store>(
    store: &S,
    mailbox: &fleetshift_coordinator::mailbox::Mailbox,
    agent: &str,
    assignment: fleetshift_common::proto::v1::Assignment,
    wait: Duration,
) -> Result<
    fleetshift_common::proto::v1::AssignmentResult,
    fleetshift_coordinator::mailbox::DispatchError,
> {
    use fleetshift_common::proto::v1::coordinator_message::Body;
    use fleetshift_coordinator::store::{Write, keys};
    use prost::Message;

    let key = keys::result(&assignment.assignment_id);
    mailbox.send(agent, Body::Assignment(assignment)).await?;
    let deadline = Instant::now() + wait;
    loop {
        if let Some(entry) = store.read(&key).await.expect("read the result") {
            store
                .commit(None, &[], &[Write::Delete(key)])
                .await
                .expect("remove the result");
            return Ok(fleetshift_common::proto::v1::AssignmentResult::decode(
                entry.value.as_slice(),
            )
            .expect("a result"));
        }
        assert!(Instant::now() < deadline, "no result within {wait:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits up to `limit` for a replica to lead; false when none did.
pub async fn await_leader<S: fleetshift_coordinator::store::Store>(
    store: &S,
    limit: Duration,
) -> bool {
    crate::wait::wait_until(limit, || async {
        store.leader().await.ok().flatten().is_some()
    })
    .await
}

/// The logs `names` in `home`, each under a `--- <name>` line, for a failing test to show.
pub fn logs(home: &Path, names: &[&str]) -> String {
    names
        .iter()
        .map(|name| {
            let log = std::fs::read_to_string(home.join(name)).unwrap_or_default();
            format!("--- {name}\n{log}\n")
        })
        .collect()
}

/// Runs the `fleetshift` CLI against the coordinator at `address` (`https://localhost:<port>`)
/// as `holder` (`operator-<name>`), with the TLS files from `pki`; its output once it exits.
pub async fn fleetshift_as(
    address: &str,
    pki: &Path,
    holder: &str,
    arguments: &[&str],
) -> std::process::Output {
    fleetshift_as_with(address, pki, holder, arguments, &[]).await
}

/// Like [`fleetshift_as`], with `environment` added to the inherited one.
pub async fn fleetshift_as_with(
    address: &str,
    pki: &Path,
    holder: &str,
    arguments: &[&str],
    environment: &[(String, String)],
) -> std::process::Output {
    let mut command = std::process::Command::new(crate::binary::fleetshift());
    command
        .args(arguments)
        .envs(environment.iter().map(|(name, value)| (name, value)))
        .env("FLEETSHIFT_COORDINATOR", address)
        .env("FLEETSHIFT_TLS_CERT", pki.join(format!("{holder}.pem")))
        .env("FLEETSHIFT_TLS_KEY", pki.join(format!("{holder}.key")))
        .env("FLEETSHIFT_TLS_CA", pki.join(pki::CA_CERTIFICATE));
    tokio::task::spawn_blocking(move || command.output().expect("run fleetshift"))
        .await
        .expect("fleetshift finished")
}

/// Starts `fleetshift serve` as replica `id` with etcd at `etcd_endpoint`, its certificate
/// issued into `home/pki` (which holds the CA) and its log in `home/<id>.log`, listening on a
/// port the kernel picks (port 0); returns that port, as the replica logged it, and the process.
pub fn spawn_replica(home: &Path, id: &str, etcd_endpoint: &str, roles: &str) -> (u16, Process) {
    spawn_replica_with(home, id, etcd_endpoint, roles, &[])
}

/// Like [`spawn_replica`], with `environment` added to the inherited one.
pub fn spawn_replica_with(
    home: &Path,
    id: &str,
    etcd_endpoint: &str,
    roles: &str,
    environment: &[(String, String)],
) -> (u16, Process) {
    issue(&home.join("pki"), Role::Coordinator, id, &["localhost"]);
    let config = write_replica_config(home, id, 0, etcd_endpoint, roles);
    let log = home.join(format!("{id}.log"));
    let process = Process::spawn_with(
        &crate::binary::fleetshift(),
        &["serve", "--config", config.to_str().expect("UTF-8 path")],
        &log,
        environment,
    );
    (logged_port(&log, COORDINATOR_LISTENING), process)
}

/// Like [`spawn_replica`], also serving the web console on a loopback port the kernel picks
/// (its certificate names 127.0.0.1 too, which browsers check): the gRPC port, the console's
/// port and the process.
pub fn spawn_console_replica(
    home: &Path,
    id: &str,
    etcd_endpoint: &str,
    roles: &str,
) -> (u16, u16, Process) {
    spawn_console_replica_with(home, id, etcd_endpoint, roles, &[])
}

/// Like [`spawn_console_replica`], with `environment` added to the inherited one.
pub fn spawn_console_replica_with(
    home: &Path,
    id: &str,
    etcd_endpoint: &str,
    roles: &str,
    environment: &[(String, String)],
) -> (u16, u16, Process) {
    let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
    issue_for(
        &home.join("pki"),
        Role::Coordinator,
        id,
        &["localhost"],
        &[loopback],
    );
    let text = format!(
        "web_listen = \"127.0.0.1:0\"\n{}",
        replica_config_text(id, 0, etcd_endpoint, roles)
    );
    let (log, process) = serve_configured(home, id, &text, &[], environment);
    let port = logged_port(&log, COORDINATOR_LISTENING);
    (port, logged_port(&log, CONSOLE_LISTENING), process)
}

/// `fleetshift serve [options]` as replica `id` on `text` (written to `home/<id>.toml`), with
/// `environment` added to the inherited one: its log's path (`home/<id>.log`) and the process.
fn serve_configured(
    home: &Path,
    id: &str,
    text: &str,
    options: &[&str],
    environment: &[(String, String)],
) -> (std::path::PathBuf, Process) {
    let config = home.join(format!("{id}.toml"));
    std::fs::write(&config, text).expect("replica config");
    let log = home.join(format!("{id}.log"));
    let mut arguments = vec!["serve"];
    arguments.extend_from_slice(options);
    arguments.extend(["--config", config.to_str().expect("UTF-8 path")]);
    let process = Process::spawn_with(&crate::binary::fleetshift(), &arguments, &log, environment);
    (log, process)
}

/// Like [`spawn_replica`], also serving the telemetry endpoint (on the second port returned)
/// and logging JSON, with `sections` added to its configuration (e.g. `[[webhooks]]`) and
/// `environment` to the inherited one.
pub fn spawn_observed_replica(
    home: &Path,
    id: &str,
    etcd_endpoint: &str,
    roles: &str,
    sections: &str,
    environment: &[(String, String)],
) -> (u16, u16, Process) {
    issue(&home.join("pki"), Role::Coordinator, id, &["localhost"]);
    let text = format!(
        "telemetry_listen = \"127.0.0.1:0\"\n{}\n{sections}",
        replica_config_text(id, 0, etcd_endpoint, roles)
    );
    let (log, process) = serve_configured(home, id, &text, &["--log-format", "json"], environment);
    let port = logged_port(&log, COORDINATOR_LISTENING);
    (port, logged_port(&log, TELEMETRY_LISTENING), process)
}

/// The one way tests start a fleet: a real etcd with a store connected to it and a directory for
/// the test's files with a fresh development CA in `pki/`, then the parts the test asks for —
/// replica processes ([`FleetGround::replica`], [`FleetGround::observed_replica`]) or one replica
/// in this process ([`FleetGround::in_process`]); agents are started as processes from configs
/// written with [`agent_config_text`].
pub struct FleetGround {
    pub etcd: fleetshift_testkit::etcd::EtcdServer,
    pub store: fleetshift_coordinator::store::EtcdStore,
    pub home: tempfile::TempDir,
    pub pki: std::path::PathBuf,
}

impl std::fmt::Debug for FleetGround {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("FleetGround")
            .field("etcd", &self.etcd)
            .field("pki", &self.pki)
            .finish_non_exhaustive()
    }
}

impl FleetGround {
    pub async fn start() -> Self {
        let etcd = fleetshift_testkit::etcd::EtcdServer::start().expect("etcd");
        let store =
            fleetshift_coordinator::store::EtcdStore::connect(std::slice::from_ref(&etcd.endpoint))
                .await
                .expect("store");
        let home = tempfile::tempdir().expect("fleet directory");
        let pki = home.path().join("pki");
        init_pki(&pki);
        Self {
            etcd,
            store,
            home,
            pki,
        }
    }

    /// A certificate for `name` in the ground's PKI.
    pub fn issue(&self, role: Role, name: &str) {
        issue(&self.pki, role, name, &[]);
    }

    /// `fleetshift serve` as replica `id` (see [`spawn_replica`]): its port and process.
    pub fn replica(&self, id: &str, roles: &str) -> (u16, Process) {
        spawn_replica(self.home.path(), id, &self.etcd.endpoint, roles)
    }

    /// Like [`FleetGround::replica`], also serving telemetry and logging JSON, with `sections`
    /// added to its configuration and `environment` to its own: its port, its telemetry port
    /// and its process.
    pub fn observed_replica(
        &self,
        id: &str,
        roles: &str,
        sections: &str,
        environment: &[(String, String)],
    ) -> (u16, u16, Process) {
        spawn_observed_replica(
            self.home.path(),
            id,
            &self.etcd.endpoint,
            roles,
            sections,
            environment,
        )
    }

    /// One coordinator replica `c1` in this process serving agent sessions and the fleet API
    /// (no leader work), with certificates for `agents` and `operators`.
    pub async fn in_process(
        self,
        roles: fleetshift_coordinator::authz::Roles,
        agents: &[&str],
        operators: &[&str],
    ) -> InProcessCoordinator {
        let limits = fleetshift_coordinator::peer_limits::PeerLimits::default();
        InProcessCoordinator::on(self, roles, agents, operators, limits).await
    }

    /// [`FleetGround::in_process`] holding each identity to `limits`.
    pub async fn in_process_limited(
        self,
        roles: fleetshift_coordinator::authz::Roles,
        agents: &[&str],
        operators: &[&str],
        limits: fleetshift_coordinator::peer_limits::PeerLimits,
    ) -> InProcessCoordinator {
        InProcessCoordinator::on(self, roles, agents, operators, limits).await
    }
}

/// A real etcd, a PKI, and one coordinator replica in this process serving agent sessions and
/// the fleet API over mutual TLS on loopback, relaying host requests to agents (no leader
/// work: plans can be made and moved through their states, nothing is dispatched).
pub struct InProcessCoordinator {
    pub store: std::sync::Arc<fleetshift_coordinator::store::EtcdStore>,
    /// The sessions this replica holds (for handing assignments straight to an agent).
    pub mailbox: std::sync::Arc<fleetshift_coordinator::mailbox::Mailbox>,
    /// A directory for the test's files, with the PKI in `pki/`.
    pub home: tempfile::TempDir,
    pub address: std::net::SocketAddr,
    _shutdown: tokio::sync::oneshot::Sender<()>,
    /// Stops the host-request relay and the event journal's writer when dropped.
    _relay: tokio_util::sync::DropGuard,
    _etcd: fleetshift_testkit::etcd::EtcdServer,
}

impl std::fmt::Debug for InProcessCoordinator {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("InProcessCoordinator")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl InProcessCoordinator {
    /// A fresh [`FleetGround`] with the replica on it; see [`FleetGround::in_process`].
    pub async fn start(
        roles: fleetshift_coordinator::authz::Roles,
        agents: &[&str],
        operators: &[&str],
    ) -> Self {
        FleetGround::start()
            .await
            .in_process(roles, agents, operators)
            .await
    }

    /// Certificates for coordinator `c1`, `agents` and `operators`; `roles` for the API,
    /// `limits` for each identity.
    async fn on(
        ground: FleetGround,
        roles: fleetshift_coordinator::authz::Roles,
        agents: &[&str],
        operators: &[&str],
        limits: fleetshift_coordinator::peer_limits::PeerLimits,
    ) -> Self {
        use fleetshift_common::lease::SessionIntervals;
        use fleetshift_common::tls::{mtls, reload};
        use fleetshift_coordinator::agent_session::AgentSessions;
        use fleetshift_coordinator::fleet_api::FleetApi;

        let FleetGround {
            etcd,
            store,
            home,
            pki: pki_dir,
        } = ground;
        let store = std::sync::Arc::new(store);
        issue(&pki_dir, Role::Coordinator, "c1", &["localhost"]);
        for agent in agents {
            issue(&pki_dir, Role::Agent, agent, &[]);
        }
        for operator in operators {
            issue(&pki_dir, Role::Operator, operator, &[]);
        }
        let files = fleetshift_common::tls::mtls::TlsFiles {
            certificate: pki_dir.join("coordinator-c1.pem"),
            private_key: pki_dir.join("coordinator-c1.key"),
            trust_bundle: pki_dir.join(pki::CA_CERTIFICATE),
        };
        let tls = reload::watch_config(files, mtls::server_config, Duration::from_secs(1))
            .await
            .expect("tls");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let (journal, journaled) = fleetshift_coordinator::events::journal::Feed::channel();
        let sessions = AgentSessions::new(
            std::sync::Arc::clone(&store),
            SessionIntervals::from_heartbeat(Duration::from_secs(1)),
            "c1",
            TRUST_DOMAIN,
            TaskSet::new(),
        )
        .journaling(journal);
        let mailbox = sessions.mailbox();
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let relay = tokio_util::sync::CancellationToken::new();
        tokio::spawn(fleetshift_coordinator::events::journal::write(
            std::sync::Arc::clone(&store),
            "c1".to_owned(),
            journaled,
            relay.clone(),
        ));
        tokio::spawn(fleetshift_coordinator::backups::relay::run(
            std::sync::Arc::clone(&store),
            std::sync::Arc::clone(&mailbox),
            relay.clone(),
        ));
        let rpc = TaskSet::new();
        let ready =
            tokio::sync::watch::channel(fleetshift_common::telemetry::endpoint::Readiness::Ready).1;
        let services = fleetshift_coordinator::serve::Services {
            sessions,
            fleet: std::sync::Arc::new(FleetApi::new(
                std::sync::Arc::clone(&store),
                roles,
                TRUST_DOMAIN,
                Replica {
                    id: "c1".to_owned(),
                    standing: tokio::sync::watch::channel(Standing::Follower { leader: None }).1,
                },
                TaskSet::new(),
            )),
            health: fleetshift_coordinator::probes::health(ready, &rpc),
        };
        tokio::spawn(fleetshift_coordinator::serve::serve(
            listener,
            tls,
            services,
            fleetshift_coordinator::peer_limits::Budget::new(limits),
            CoordinatorMetrics::register(&mut Registry::default()),
            rpc,
            async {
                let _ = stop.await;
            },
        ));
        Self {
            store,
            mailbox,
            home,
            address,
            _shutdown: shutdown,
            _relay: relay.drop_guard(),
            _etcd: etcd,
        }
    }

    /// Every progress event in the event journal, in the order it was stored.
    pub async fn journaled(&self) -> Vec<fleetshift_common::proto::v1::ProgressEvent> {
        use fleetshift_coordinator::store::{Store, keys};
        use prost::Message;

        let mut batches = self
            .store
            .list(&keys::journal_prefix())
            .await
            .expect("journal")
            .entries;
        batches.sort_by_key(|entry| entry.mod_revision);
        batches
            .iter()
            .flat_map(|entry| {
                fleetshift_common::proto::v1::JournalBatch::decode(entry.value.as_slice())
                    .expect("a journal batch")
                    .events
            })
            .collect()
    }

    /// The PKI directory (`ca.pem`, `<role>-<name>.pem` / `.key`).
    pub fn pki(&self) -> std::path::PathBuf {
        self.home.path().join("pki")
    }

    /// A client channel as `holder` (`<role>-<name>`).
    pub async fn channel(&self, holder: &str) -> tonic::transport::Channel {
        channel_as(&format!("https://{}", self.address), &self.pki(), holder).await
    }
}
