//! The control plane's cost per shard: one `fleetshift serve` replica (release build) on a real
//! etcd, driven by a load generator of simulated agents. Each simulated agent holds a real
//! session over mutual TLS with its own certificate, heartbeats at the handshake's interval
//! and answers every assignment at once (a revision started, a revision finished, a result),
//! so what is measured is the coordinator and etcd, not databases.
//!
//! - memory: the coordinator's resident set before and after the agents connect, per session;
//! - the idle fleet (connected, heartbeating, no rollout) over a 5 s window: CPU-seconds and
//!   etcd requests per second per 1,000 agents, and the baseline the rollouts are set against;
//! - a rollout at concurrency 256: wall time and shards per second, the coordinator's
//!   CPU-seconds (`/proc/<pid>/stat`) per 1,000 shards, etcd requests (its own
//!   `grpc_server_handled_total` / `grpc_server_msg_received_total` counters) by method and
//!   per shard, and the event journal's batches per progress event (two per shard);
//! - with WATCHERS, a second replica (a follower) runs from the start, and two more rollouts
//!   (one more revision each) are followed by WATCHERS `WatchRollout` streams from before
//!   their start to their end: first on the follower, as the CLI places watches when given
//!   several replicas, then on the leader; the leader's CPU per shard against the unwatched
//!   rollout's, and what the follower spent.
//!
//! `cargo build --release --bins && cargo bench -p fleetshift-tests --bench control_plane
//! [-- SHARDS [WATCHERS]]` (default 2,000 shards, 10 per simulated agent, 100 watchers).
//! Targets: ≤ 3 etcd requests per shard per rollout, ≥ 200 shards/s, < 1 CPU-s per 1,000
//! shards, watchers adding < 10%.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fleetshift_common::proto::v1::agent_message::Body as AgentBody;
use fleetshift_common::proto::v1::agent_service_client::AgentServiceClient;
use fleetshift_common::proto::v1::coordinator_message::Body as CoordinatorBody;
use fleetshift_common::proto::v1::fleet_service_client::FleetServiceClient;
use fleetshift_common::proto::v1::progress_event::Event as Progress;
use fleetshift_common::proto::v1::{
    AgentMessage, Assignment, AssignmentResult, CreatePlanRequest, DescribeReplicaRequest, Engine,
    Heartbeat, Hello, ListShardsRequest, PlanState, ProgressEvent, RevisionFinished,
    RevisionOutcome, RevisionStarted, ShardFacts, ShardMetrics, WatchRolloutRequest,
};
use fleetshift_common::tls::identity::Role;
use fleetshift_coordinator::store::EtcdStore;
use fleetshift_testkit::etcd::EtcdServer;
use fleetshift_tests::bench::{clock_ticks, cpu_time};
use fleetshift_tests::fleet::{await_leader, channel_as, init_pki, issue, spawn_replica};
use fleetshift_tests::wait::wait_until;
use fleetshift_tests::{fixtures, rollout};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const SHARDS_PER_AGENT: usize = 10;

fn main() -> anyhow::Result<()> {
    let [shards, watchers] =
        fleetshift_tests::bench::numbers(["SHARDS", "WATCHERS"], [2_000, 100])?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(measure(shards, watchers))
}

/// User + system CPU time of process `pid`.
/// etcd's request counters by `method` (unary calls handled, stream messages received).
fn etcd_requests(endpoint: &str) -> anyhow::Result<BTreeMap<String, f64>> {
    let address = endpoint
        .strip_prefix("http://")
        .context("an http:// endpoint")?;
    let mut stream = std::net::TcpStream::connect(address)?;
    write!(
        stream,
        "GET /metrics HTTP/1.0\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        let counted = (line.starts_with("grpc_server_handled_total{")
            && line.contains("grpc_type=\"unary\""))
            || (line.starts_with("grpc_server_msg_received_total{")
                && !line.contains("grpc_type=\"unary\""));
        if !counted {
            continue;
        }
        let Some(method) = line
            .split("grpc_method=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
        else {
            continue;
        };
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|value| value.parse().ok())
            .unwrap_or(0.0);
        *counts.entry(method.to_owned()).or_insert(0.0) += value;
    }
    Ok(counts)
}

fn difference(
    after: &BTreeMap<String, f64>,
    before: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(method, count)| {
            let earlier = before.get(method).copied().unwrap_or(0.0);
            (method.clone(), count - earlier)
        })
        .filter(|(_, count)| *count > 0.0)
        .collect()
}

/// A simulated agent: a real session, heartbeats, and an instant success for every assignment.
async fn simulated_agent(
    address: String,
    pki: PathBuf,
    name: String,
    shards: Vec<String>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let channel = channel_as(&address, &pki, &format!("agent-{name}")).await;
    let mut client = AgentServiceClient::new(channel);
    let (outbound, receiver) = mpsc::channel(64);
    let facts = shards
        .iter()
        .map(|shard| ShardFacts {
            shard_id: shard.clone(),
            labels: [("env".to_owned(), "bench".to_owned())].into(),
            engine: Engine::Postgres.into(),
            reachable: true,
            ..ShardFacts::default()
        })
        .collect();
    let send = |body| AgentMessage { body: Some(body) };
    outbound
        .send(send(AgentBody::Hello(Hello {
            agent_id: name.clone(),
            shards: facts,
            ..Hello::default()
        })))
        .await?;
    let mut inbound = client
        .session(ReceiverStream::new(receiver))
        .await?
        .into_inner();
    let Some(CoordinatorBody::Handshake(handshake)) =
        inbound.message().await?.and_then(|message| message.body)
    else {
        bail!("{name}: no handshake");
    };
    let heartbeat = handshake
        .heartbeat_interval
        .and_then(|interval| Duration::try_from(interval).ok())
        .context("a heartbeat interval")?;
    let mut ticks = tokio::time::interval(heartbeat);
    let mut sequence = 0;
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            _ = ticks.tick() => {
                sequence += 1;
                outbound.send(send(AgentBody::Heartbeat(Heartbeat { sequence, running_assignments: Vec::new() }))).await?;
            }
            message = inbound.message() => match message?.and_then(|message| message.body) {
                Some(CoordinatorBody::Assignment(assignment)) => {
                    for event in answer(&assignment) {
                        outbound.send(send(event)).await?;
                    }
                }
                Some(_) => {}
                None => bail!("{name}: the coordinator ended the session"),
            },
        }
    }
}

/// What a real agent sends for a one-revision assignment that succeeds.
fn answer(assignment: &Assignment) -> Vec<AgentBody> {
    let progress = |event| {
        AgentBody::Progress(ProgressEvent {
            assignment_id: assignment.assignment_id.clone(),
            shard_id: assignment.shard_id.clone(),
            at: None,
            event: Some(event),
        })
    };
    let version = assignment.target_version.clone();
    vec![
        progress(Progress::RevisionStarted(RevisionStarted {
            version: version.clone(),
            name: "bench".to_owned(),
            transactional: true,
            statements: 1,
        })),
        progress(Progress::RevisionFinished(RevisionFinished {
            version: version.clone(),
            outcome: RevisionOutcome::Applied.into(),
            ..RevisionFinished::default()
        })),
        AgentBody::Result(AssignmentResult {
            assignment_id: assignment.assignment_id.clone(),
            shard_id: assignment.shard_id.clone(),
            fence_token: assignment.fence_token,
            succeeded: true,
            current_version: version,
            error: None,
            metrics: Some(ShardMetrics {
                revisions_run: 1,
                statements: 1,
                lock_retries: 0,
                duration: Duration::from_millis(1).try_into().ok(),
                throttled: None,
            }),
            ..AssignmentResult::default()
        }),
    ]
}

/// `shards` shards on simulated agents, every one announced to the replica at `address`.
async fn connect_simulated(
    address: &str,
    pki: &std::path::Path,
    shards: usize,
    stop: &CancellationToken,
) -> anyhow::Result<tokio::task::JoinSet<anyhow::Result<()>>> {
    let agents = shards.div_ceil(SHARDS_PER_AGENT);
    let mut simulated = tokio::task::JoinSet::new();
    for agent in 0..agents {
        let owned: Vec<String> = (agent * SHARDS_PER_AGENT
            ..((agent + 1) * SHARDS_PER_AGENT).min(shards))
            .map(|shard| format!("sim-shard-{shard:05}"))
            .collect();
        simulated.spawn(simulated_agent(
            address.to_owned(),
            pki.to_path_buf(),
            format!("sim-{agent:05}"),
            owned,
            stop.clone(),
        ));
    }
    let mut client = FleetServiceClient::new(channel_as(address, pki, "operator-ops").await);
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let listed = client
            .list_shards(ListShardsRequest::default())
            .await?
            .into_inner()
            .shards
            .len();
        if listed == shards {
            return Ok(simulated);
        }
        if Instant::now() > deadline {
            bail!("only {listed} of {shards} simulated shards announced");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A resident set size in bytes (`VmRSS` of `/proc/<pid>/status`).
fn resident_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .context("VmRSS in /proc/<pid>/status")?
        .parse()?;
    Ok(kib * 1024)
}

/// What one rollout cost the coordinator and etcd.
struct Cost {
    wall: Duration,
    /// The leader's.
    cpu: Duration,
    /// The follower's, when there is one.
    follower_cpu: Option<Duration>,
    requests: BTreeMap<String, f64>,
}

/// Who follows a rollout: `count` streams on the replica `client` reaches.
struct Watchers<'a> {
    client: &'a FleetServiceClient<Channel>,
    count: usize,
}

/// Rolls the fleet to the last revision of `revisions`, with `watchers` following it over
/// `WatchRollout` from before its start to its end.
async fn roll_out(
    client: &FleetServiceClient<Channel>,
    fleet: &Fleet,
    revisions: &[(&str, &str)],
    watchers: Option<Watchers<'_>>,
) -> anyhow::Result<Cost> {
    let migrations = fixtures::migrations(revisions);
    let mut rollout = rollout::prepare(
        client,
        CreatePlanRequest {
            migration_set: Some(fixtures::shipped(migrations.path())),
            target_version: String::new(),
            selector: [("env".to_owned(), "bench".to_owned())].into(),
            waves: Some(rollout::policy(1, 256, u32::try_from(SHARDS_PER_AGENT)?)),
            limits: None,
            duties: None,
            allow_drift_shards: String::new(),
            schedule: None,
            updates: None,
            gates: Vec::new(),
        },
    )
    .await?;
    let mut following = tokio::task::JoinSet::new();
    let (watching, watchers) =
        watchers.map_or((client, 0), |watchers| (watchers.client, watchers.count));
    for _ in 0..watchers {
        let mut events = watching
            .clone()
            .watch_rollout(WatchRolloutRequest {
                plan_id: rollout.plan_id.clone(),
                include_statements: false,
                since: 0,
            })
            .await?
            .into_inner();
        following.spawn(async move {
            let mut received = 0_usize;
            while let Ok(Some(_)) = events.message().await {
                received += 1;
            }
            received
        });
    }
    let follower_cpu = || {
        fleet
            .follower
            .map(|pid| cpu_time(pid, fleet.ticks))
            .transpose()
    };
    let cpu_before = cpu_time(fleet.pid, fleet.ticks)?;
    let follower_before = follower_cpu()?;
    let requests_before = etcd_requests(&fleet.etcd)?;
    let started = Instant::now();
    rollout.start().await?;
    let ended = rollout.ended().await?;
    let wall = started.elapsed();
    let cpu = cpu_time(fleet.pid, fleet.ticks)? - cpu_before;
    let follower_cpu = follower_cpu()?
        .zip(follower_before)
        .map(|(after, before)| after - before);
    let requests = difference(&etcd_requests(&fleet.etcd)?, &requests_before);
    if ended != Some(PlanState::Succeeded) {
        bail!("the rollout ended {ended:?}");
    }
    // Each watch ends when the plan does; what a watcher received shows it kept up.
    let mut least = usize::MAX;
    while let Some(received) = following.join_next().await {
        least = least.min(received?);
    }
    if watchers > 0 {
        println!("{watchers} watchers: each received at least {least} events");
    }
    Ok(Cost {
        wall,
        cpu,
        follower_cpu,
        requests,
    })
}

/// The coordinator's processes and etcd, as the measurements read them.
struct Fleet {
    /// The leader's.
    pid: u32,
    /// The follower's, when there is one.
    follower: Option<u32>,
    ticks: f64,
    etcd: String,
}

async fn measure(shards: usize, watchers: usize) -> anyhow::Result<()> {
    let agents = shards.div_ceil(SHARDS_PER_AGENT);
    let etcd = EtcdServer::start()?;
    let store = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint)).await?;
    let home = tempfile::tempdir()?;
    let pki = home.path().join("pki");
    init_pki(&pki);
    issue(&pki, Role::Operator, "ops", &[]);
    for agent in 0..agents {
        issue(&pki, Role::Agent, &format!("sim-{agent:05}"), &[]);
    }
    let roles = "viewers = [\"ops\"]\noperators = [\"ops\"]\napprovers = [\"ops\"]";
    let (port, coordinator) = spawn_replica(home.path(), "c1", &etcd.endpoint, roles);
    if !await_leader(&store, Duration::from_secs(20)).await {
        bail!("no leader; see {}", home.path().join("c1.log").display());
    }
    // The follower, for the watchers: started once c1 leads, so it follows.
    let follower = (watchers > 0).then(|| spawn_replica(home.path(), "c2", &etcd.endpoint, roles));
    let fleet = Fleet {
        pid: coordinator.id(),
        follower: follower.as_ref().map(|(_, process)| process.id()),
        ticks: clock_ticks()?,
        etcd: etcd.endpoint.clone(),
    };
    let address = format!("https://localhost:{port}");
    let mut client = FleetServiceClient::new(channel_as(&address, &pki, "operator-ops").await);
    let follower_client = match &follower {
        Some((port, _)) => Some(following(*port, &pki).await?),
        None => None,
    };
    client.list_shards(ListShardsRequest::default()).await?;
    let resident_before = resident_bytes(fleet.pid)?;
    let stop = CancellationToken::new();
    let mut simulated = connect_simulated(&address, &pki, shards, &stop).await?;
    let per_session = resident_bytes(fleet.pid)?.saturating_sub(resident_before) / agents as u64;
    println!("{shards} simulated shards on {agents} agents connected to one replica");
    println!(
        "memory: {:.1} KiB of the coordinator's resident set per connected agent session",
        per_session as f64 / 1024.0
    );

    let idle_window = Duration::from_secs(5);
    let idle_cpu_before = cpu_time(fleet.pid, fleet.ticks)?;
    let idle_requests_before = etcd_requests(&fleet.etcd)?;
    tokio::time::sleep(idle_window).await;
    let idle_cpu = cpu_time(fleet.pid, fleet.ticks)? - idle_cpu_before;
    let idle_requests = difference(&etcd_requests(&fleet.etcd)?, &idle_requests_before);
    let per_agent_second = |value: f64| value * 1_000.0 / agents as f64 / idle_window.as_secs_f64();
    println!(
        "idle fleet (heartbeats only): {:.4} CPU-s and {:.1} etcd requests per second per 1,000 agents",
        per_agent_second(idle_cpu.as_secs_f64()),
        per_agent_second(idle_requests.values().sum()),
    );

    let first = [("1_bench.sql", "CREATE TABLE bench (id int);")];
    let cost = roll_out(&client, &fleet, &first, None).await?;
    report(&cost, &idle_requests, idle_cpu, idle_window, shards);
    let batches = journal_batches(&store).await?;
    let events = 2 * shards;
    println!(
        "event journal: {batches} batches for {events} progress events: {:.3} etcd puts per event",
        batches as f64 / events as f64
    );
    if let Some(follower_client) = &follower_client {
        let per_shard = |cost: &Cost| cost.cpu.as_secs_f64() / shards as f64;
        let mut revisions = first.to_vec();
        for (name, sql, watching, place) in [
            (
                "2_bench.sql",
                "CREATE TABLE bench_two (id int);",
                follower_client,
                "on the follower",
            ),
            (
                "3_bench.sql",
                "CREATE TABLE bench_three (id int);",
                &client,
                "on the leader",
            ),
        ] {
            revisions.push((name, sql));
            let following = Watchers {
                client: watching,
                count: watchers,
            };
            let watched = roll_out(&client, &fleet, &revisions, Some(following)).await?;
            println!("-- {watchers} watchers {place}:");
            report(&watched, &idle_requests, idle_cpu, idle_window, shards);
            println!(
                "{watchers} watchers {place}: the leader's CPU per shard {:.2}x the unwatched rollout's (target < 1.10); the follower spent {:.2} CPU-s",
                per_shard(&watched) / per_shard(&cost),
                watched.follower_cpu.unwrap_or_default().as_secs_f64()
            );
        }
    }
    footprint(&store, shards).await?;
    stop.cancel();
    while simulated.join_next().await.is_some() {}
    drop(coordinator);
    Ok(())
}

/// A client of the replica on `port` once it follows a known leader (it learns the leader at
/// its first campaign).
async fn following(
    port: u16,
    pki: &std::path::Path,
) -> anyhow::Result<FleetServiceClient<Channel>> {
    let address = format!("https://localhost:{port}");
    let client = FleetServiceClient::new(channel_as(&address, pki, "operator-ops").await);
    let follows = wait_until(Duration::from_secs(20), || {
        let mut client = client.clone();
        async move {
            client
                .describe_replica(DescribeReplicaRequest {})
                .await
                .is_ok_and(|standing| {
                    let standing = standing.into_inner();
                    !standing.leading && !standing.leader_id.is_empty()
                })
        }
    })
    .await;
    if !follows {
        bail!("{address} never followed a known leader");
    }
    Ok(client)
}

/// Prints what a rollout cost, against the idle fleet's heartbeats over as long.
fn report(
    cost: &Cost,
    idle_requests: &BTreeMap<String, f64>,
    idle_cpu: Duration,
    idle_window: Duration,
    shards: usize,
) {
    let scale = cost.wall.as_secs_f64() / idle_window.as_secs_f64();
    let idle_cpu_scaled = idle_cpu.as_secs_f64() * scale;
    let per_thousand = |seconds: f64| seconds * 1_000.0 / shards as f64;
    println!(
        "rollout: {:.2} s wall, {:.0} shards/s dispatched and finished",
        cost.wall.as_secs_f64(),
        shards as f64 / cost.wall.as_secs_f64()
    );
    println!(
        "coordinator CPU: {:.2} s in the rollout, {:.2} s idling as long (baseline); {:.3} s per 1,000 shards ({:.3} s net of idle)",
        cost.cpu.as_secs_f64(),
        idle_cpu_scaled,
        per_thousand(cost.cpu.as_secs_f64()),
        per_thousand(cost.cpu.as_secs_f64() - idle_cpu_scaled)
    );
    println!("etcd requests by method (rollout | idle baseline scaled to the rollout's length):");
    let mut total = 0.0;
    let mut idle_total = 0.0;
    let methods: std::collections::BTreeSet<&String> =
        cost.requests.keys().chain(idle_requests.keys()).collect();
    for method in methods {
        let count = cost.requests.get(method).copied().unwrap_or(0.0);
        let idle = idle_requests.get(method).copied().unwrap_or(0.0) * scale;
        total += count;
        idle_total += idle;
        println!("  {method:<20} {count:>9.0} | {idle:>9.0}");
    }
    println!(
        "etcd requests per shard: {:.2} in all, {:.2} net of the idle baseline (target <= 3)",
        total / shards as f64,
        (total - idle_total) / shards as f64
    );
}

/// The store's keys and bytes by kind (the first path segment after the prefix), per shard.
async fn footprint(store: &EtcdStore, shards: usize) -> anyhow::Result<()> {
    use fleetshift_coordinator::store::{Store, keys};
    let prefix = keys::all();
    let listing = store.list(&prefix).await?;
    let mut kinds: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for entry in &listing.entries {
        let kind = entry.key[prefix.len()..]
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let counted = kinds.entry(kind).or_default();
        counted.0 += 1;
        counted.1 += entry.key.len() + entry.value.len();
    }
    println!("store after the rollouts (keys, bytes per shard):");
    for (kind, (count, bytes)) in kinds {
        println!(
            "  {kind:<14} {count:>7} keys {:>9.1} bytes per shard",
            bytes as f64 / shards as f64
        );
    }
    Ok(())
}

async fn journal_batches(store: &EtcdStore) -> anyhow::Result<usize> {
    use fleetshift_coordinator::store::{Store, keys};
    Ok(store.list(&keys::journal_prefix()).await?.entries.len())
}
