//! The agent's resident memory, idle and busy: a real `fleetshift-agent run` (release build)
//! holding its session with an in-process coordinator on real etcd, then applying crates.io's
//! 285 revisions to four PostgreSQL shards at once. VmRSS is sampled from /proc every 20 ms.
//!
//! `cargo build --release --bin fleetshift-agent && cargo bench -p fleetshift-tests --bench agent_memory`
//! Targets: at most 20 MiB idle, at most 60 MiB busy.

use fleetshift_coordinator::peer_limits::{Budget, PeerLimits};
use fleetshift_coordinator::tasks::TaskSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use fleetshift_common::lease::SessionIntervals;
use fleetshift_common::proto::v1::{Assignment, Direction};
use fleetshift_common::tls::identity::Role;
use fleetshift_common::tls::mtls::{self, TlsFiles};
use fleetshift_common::tls::{pki, reload};
use fleetshift_coordinator::agent_session::AgentSessions;
use fleetshift_coordinator::authz::Roles;
use fleetshift_coordinator::election::{Replica, Standing};
use fleetshift_coordinator::fleet_api::FleetApi;
use fleetshift_coordinator::metrics::CoordinatorMetrics;
use fleetshift_coordinator::serve;
use fleetshift_coordinator::store::{EtcdStore, Store};
use fleetshift_testkit::etcd::EtcdServer;
use fleetshift_tests::fixtures;
use fleetshift_tests::fleet::{Process, TRUST_DOMAIN, assign, init_pki, issue, write_agent_config};
use fleetshift_tests::postgres::PostgresCluster;
use prometheus_client::registry::Registry;

const SHARDS: usize = 4;
const MIB: f64 = 1024.0 * 1024.0;

fn main() -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()?.block_on(measure())
}

fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

async fn measure() -> anyhow::Result<()> {
    let agent_binary =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/fleetshift-agent");
    if !agent_binary.exists() {
        bail!("build the agent first: cargo build --release --bin fleetshift-agent");
    }
    let etcd = EtcdServer::start()?;
    let store = Arc::new(EtcdStore::connect(std::slice::from_ref(&etcd.endpoint)).await?);
    let cluster = PostgresCluster::start()?;
    let home = tempfile::tempdir()?;
    let pki_dir = home.path().join("pki");
    init_pki(&pki_dir);
    issue(&pki_dir, Role::Coordinator, "c1", &["localhost"]);
    issue(&pki_dir, Role::Agent, "db-host-1", &[]);
    let tls = reload::watch_config(
        TlsFiles {
            certificate: pki_dir.join("coordinator-c1.pem"),
            private_key: pki_dir.join("coordinator-c1.key"),
            trust_bundle: pki_dir.join(pki::CA_CERTIFICATE),
        },
        mtls::server_config,
        Duration::from_secs(5),
    )
    .await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let sessions = AgentSessions::new(
        Arc::clone(&store),
        SessionIntervals::from_heartbeat(Duration::from_secs(1)),
        "c1",
        TRUST_DOMAIN,
        TaskSet::new(),
    );
    let mailbox = sessions.mailbox();
    let fleet = Arc::new(FleetApi::new(
        Arc::clone(&store),
        Roles::default(),
        TRUST_DOMAIN,
        Replica {
            id: "c1".to_owned(),
            standing: tokio::sync::watch::channel(Standing::Follower { leader: None }).1,
        },
        TaskSet::new(),
    ));
    let (_stop_serving, stop) = tokio::sync::oneshot::channel::<()>();
    let metrics = CoordinatorMetrics::register(&mut Registry::default());
    let rpc = TaskSet::new();
    let ready =
        tokio::sync::watch::channel(fleetshift_common::telemetry::endpoint::Readiness::Ready).1;
    let services = serve::Services {
        sessions,
        fleet,
        health: fleetshift_coordinator::probes::health(ready, &rpc),
    };
    tokio::spawn(serve::serve(
        listener,
        tls,
        services,
        Budget::new(PeerLimits::default()),
        metrics,
        rpc,
        async {
            let _ = stop.await;
        },
    ));

    let mut tables = String::new();
    for shard in 0..SHARDS {
        let url = cluster.create_database(&format!("shard_{shard}")).await?;
        std::fs::write(home.path().join(format!("shard-{shard}.url")), url)?;
        tables.push_str(&format!(
            "[[shards]]\nid = \"shard-{shard}\"\ndatabase_url_file = \"shard-{shard}.url\"\n"
        ));
    }
    let config = write_agent_config(home.path(), port, "db-host-1", &tables);
    let agent = Process::spawn(
        &agent_binary,
        &["--config", config.to_str().context("path")?, "run"],
        &home.path().join("agent.log"),
    );
    let pid = agent.id();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while store.agents().await?.is_empty() {
        if std::time::Instant::now() > deadline {
            bail!("the agent never connected");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Idle: connected, heartbeating, nothing to do.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut idle_peak = 0;
    for _ in 0..50 {
        idle_peak = idle_peak.max(resident_bytes(pid).context("agent gone")?);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Busy: crates.io's history on every shard at once.
    let set = fixtures::shipped(&fixtures::crates_io());
    let lease = store.grant_lease(Duration::from_secs(600)).await?;
    let busy_peak = Arc::new(AtomicU64::new(0));
    let sampling = {
        let busy_peak = Arc::clone(&busy_peak);
        tokio::spawn(async move {
            while let Some(bytes) = resident_bytes(pid) {
                busy_peak.fetch_max(bytes, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let started = std::time::Instant::now();
    let mut dispatches = Vec::new();
    for shard in 0..SHARDS {
        let claim = store
            .claim(&format!("shard-{shard}"), "db-host-1", lease)
            .await?;
        let assignment = Assignment {
            assignment_id: format!("bench-{shard}"),
            plan_id: "bench".to_owned(),
            shard_id: claim.shard.clone(),
            fence_token: claim.token.get(),
            direction: Direction::Up.into(),
            target_version: String::new(),
            migration_set: Some(set.clone()),
            limits: None,
            duties: None,
            ..Assignment::default()
        };
        let mailbox = Arc::clone(&mailbox);
        let store = Arc::clone(&store);
        dispatches.push(tokio::spawn(async move {
            assign(
                store.as_ref(),
                &mailbox,
                "db-host-1",
                assignment,
                Duration::from_secs(600),
            )
            .await
        }));
    }
    for dispatch in dispatches {
        let result = dispatch.await??;
        if !result.succeeded {
            bail!("an assignment failed: {:?}", result.error);
        }
    }
    let elapsed = started.elapsed();
    sampling.abort();
    let idle = idle_peak as f64 / MIB;
    let busy = busy_peak.load(Ordering::Relaxed) as f64 / MIB;
    println!(
        "agent resident memory: idle {idle:.1} MiB (target <= 20), busy {busy:.1} MiB (target <= 60)"
    );
    println!(
        "busy = {SHARDS} shards x 285 crates.io revisions at once, {:.1} s",
        elapsed.as_secs_f64()
    );
    println!(
        "{}",
        serde_json::json!({ "benchmark": "agent_memory", "idle_mib": idle, "busy_mib": busy, "shards": SHARDS, "revisions": 285, "busy_seconds": elapsed.as_secs_f64() })
    );
    Ok(())
}
