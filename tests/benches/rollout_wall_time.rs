//! A whole rollout's wall time against `psql`: 64 PostgreSQL databases × crates.io's first 20
//! revisions, C shards at a time.
//!
//! - fleetshift: a real etcd, one `fleetshift serve` replica and four `fleetshift-agent`
//!   processes (release builds) serving 16 databases each, over mutual TLS; the plan (canary
//!   of one shard, then the rest, at most C shards at once) is created, approved and started,
//!   and the time runs from start until the plan has succeeded. Agents connect before the
//!   clock starts.
//! - psql per file: C workers, each taking the next database and running the same 20 up
//!   scripts with one `psql` process per file (`--single-transaction` for the transactional
//!   ones), as a shell loop over the files would; over the Unix socket with trust
//!   authentication (psql's cheapest connect). The baseline.
//! - psql one session: the same, but one `psql` process per database reading all 20 files in
//!   autocommit: no per-revision atomicity, the floor of sending the SQL.
//!
//! - fleetshift traced: a second fleet (its own etcd, replica and agents) exporting every span
//!   over OTLP/gRPC to a collector in this process: what traces cost when they are on.
//!
//! All run in every round on fresh databases of two identical throwaway clusters, alternating
//! which goes first. `cargo build --release --bins && cargo bench -p fleetshift-tests --bench
//! rollout_wall_time [-- ROUNDS [C]]` (default 3 rounds, C = 8). Target: fleetshift's median
//! within 1.3x of psql's.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use fleetshift_common::engine::{PostgresShard, ShardEngine, Timeouts};
use fleetshift_common::proto::v1::{CreatePlanRequest, PlanState};
use fleetshift_common::secrets::DatabaseUrl;
use fleetshift_common::source::MigrationSet;
use fleetshift_testkit::etcd::EtcdServer;
use fleetshift_tests::collector::Collector;
use fleetshift_tests::postgres::PostgresCluster;
use fleetshift_tests::process_fleet::{Coordinator, announced, start_agents, start_coordinator};
use fleetshift_tests::rollout::Timeline;
use fleetshift_tests::{fixtures, psql, rollout};

const SHARDS: usize = 64;
const AGENTS: usize = 4;
const REVISIONS: usize = 20;

fn main() -> anyhow::Result<()> {
    let [rounds, concurrency] = fleetshift_tests::bench::numbers(["ROUNDS", "C"], [3, 8])?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(measure(rounds, concurrency))
}

/// The first `REVISIONS` revision directories of crates.io's history, copied.
fn twenty_revisions() -> anyhow::Result<tempfile::TempDir> {
    let source = fixtures::crates_io();
    let mut entries: Vec<_> = std::fs::read_dir(&source)?
        .filter_map(Result::ok)
        .filter(|entry| entry.path().is_dir())
        .map(|entry| entry.path())
        .collect();
    entries.sort();
    let target = tempfile::tempdir()?;
    for directory in entries.iter().take(REVISIONS) {
        let name = directory.file_name().context("a directory name")?;
        let copy = target.path().join(name);
        std::fs::create_dir(&copy)?;
        for file in std::fs::read_dir(directory)? {
            let file = file?.path();
            std::fs::copy(&file, copy.join(file.file_name().context("a file name")?))?;
        }
    }
    Ok(target)
}

async fn with_fleetshift(
    coordinator: &Coordinator,
    home: &Path,
    round: usize,
    urls: &[String],
    set_directory: &Path,
    target: &str,
    concurrency: usize,
) -> anyhow::Result<Duration> {
    let label = format!("r{round}");
    let agents = start_agents(home, coordinator, &label, urls, AGENTS)?;
    announced(coordinator, &label, SHARDS).await?;
    let client = coordinator.client.clone();
    let cap = u32::try_from(concurrency)?;
    let mut rollout = rollout::prepare(
        &client,
        CreatePlanRequest {
            migration_set: Some(fixtures::shipped(set_directory)),
            target_version: target.to_owned(),
            selector: [("round".to_owned(), label)].into(),
            waves: Some(rollout::policy(1, cap, cap)),
            limits: None,
            duties: None,
            allow_drift_shards: String::new(),
            schedule: None,
            updates: None,
            gates: Vec::new(),
        },
    )
    .await?;
    let started = Instant::now();
    let started_at = SystemTime::now();
    rollout.start().await?;
    let ended = rollout.ended().await?;
    let elapsed = started.elapsed();
    let ended_at = SystemTime::now();
    drop(agents);
    if ended != Some(PlanState::Succeeded) {
        bail!(
            "the rollout ended {ended:?}; see the logs in {}",
            home.display()
        );
    }
    let timeline = Timeline::read(&client, &rollout.plan_id, started_at, ended_at).await?;
    println!("  {timeline}");
    Ok(elapsed)
}

/// How the psql baseline runs one database's scripts.
type PsqlRun = fn(&Path, &str, &[fleetshift_common::source::Revision]) -> anyhow::Result<Duration>;

/// `concurrency` workers running `run` over the databases at `urls`.
fn with_psql(
    cluster: &PostgresCluster,
    urls: &[String],
    set: &MigrationSet,
    concurrency: usize,
    run: PsqlRun,
) -> anyhow::Result<Duration> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..concurrency)
            .map(|_| {
                let next = Arc::clone(&next);
                scope.spawn(move || -> anyhow::Result<()> {
                    while let Some(url) = urls.get(next.fetch_add(1, Ordering::Relaxed)) {
                        run(cluster.binaries(), url, &set.revisions)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for worker in workers {
            worker
                .join()
                .map_err(|_| anyhow::anyhow!("a psql worker panicked"))??;
        }
        Ok::<(), anyhow::Error>(())
    })?;
    Ok(started.elapsed())
}

async fn create_databases(
    cluster: &PostgresCluster,
    prefix: &str,
    socket: bool,
) -> anyhow::Result<Vec<String>> {
    let mut urls = Vec::with_capacity(SHARDS);
    for index in 0..SHARDS {
        let name = format!("{prefix}_{index}");
        let url = cluster.create_database(&name).await?;
        urls.push(if socket {
            cluster.socket_url(&name)
        } else {
            url
        });
    }
    Ok(urls)
}

/// Every fleetshift database ends with the 20 revisions applied.
async fn check_applied(urls: &[String]) -> anyhow::Result<()> {
    for url in urls {
        let shard =
            PostgresShard::connect(&DatabaseUrl::new(url.as_str()), Timeouts::default()).await?;
        let applied = shard.read_ledger().await?.len();
        if applied != REVISIONS {
            bail!("a shard has {applied} revisions in its ledger, not {REVISIONS}");
        }
    }
    Ok(())
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

async fn measure(rounds: usize, concurrency: usize) -> anyhow::Result<()> {
    let set_directory = twenty_revisions()?;
    let set = MigrationSet::load(set_directory.path(), None)?;
    let target = set
        .revisions
        .last()
        .context("revisions")?
        .version
        .to_string();
    let etcd = EtcdServer::start()?;
    let home = tempfile::tempdir()?;
    let coordinator =
        start_coordinator(&home.path().join("plain"), &etcd, AGENTS, Vec::new()).await?;
    let collector = Collector::start().await;
    let traced_etcd = EtcdServer::start()?;
    let traced = start_coordinator(
        &home.path().join("traced"),
        &traced_etcd,
        AGENTS,
        collector.environment(),
    )
    .await?;
    let fleet_cluster = PostgresCluster::start()?;
    let psql_cluster = PostgresCluster::start()?;
    println!(
        "{SHARDS} databases x {} revisions ({} format), {concurrency} at a time, {rounds} rounds",
        set.revisions.len(),
        set.format
    );
    let mut fleetshift_times = Vec::with_capacity(rounds);
    let mut psql_times = Vec::with_capacity(rounds);
    let mut session_times = Vec::with_capacity(rounds);
    let mut traced_times = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let fleet_urls = create_databases(&fleet_cluster, &format!("r{round}"), false).await?;
        let traced_urls = create_databases(&fleet_cluster, &format!("t{round}"), false).await?;
        let psql_urls = create_databases(&psql_cluster, &format!("r{round}"), true).await?;
        let session_urls = create_databases(&psql_cluster, &format!("s{round}"), true).await?;
        let fleetshift_first = round % 2 == 0;
        let mut psql_time = None;
        if !fleetshift_first {
            psql_time = Some(with_psql(
                &psql_cluster,
                &psql_urls,
                &set,
                concurrency,
                psql::apply_per_file,
            )?);
        }
        let rollout = async |fleet: &Coordinator, directory: &str, urls: &[String]| {
            with_fleetshift(
                fleet,
                &home.path().join(directory),
                round,
                urls,
                set_directory.path(),
                &target,
                concurrency,
            )
            .await
        };
        let (fleetshift, traced_time) = if fleetshift_first {
            let untraced = rollout(&coordinator, "plain", &fleet_urls).await?;
            (untraced, rollout(&traced, "traced", &traced_urls).await?)
        } else {
            let traced_time = rollout(&traced, "traced", &traced_urls).await?;
            (
                rollout(&coordinator, "plain", &fleet_urls).await?,
                traced_time,
            )
        };
        let psql = match psql_time {
            Some(elapsed) => elapsed,
            None => with_psql(
                &psql_cluster,
                &psql_urls,
                &set,
                concurrency,
                psql::apply_per_file,
            )?,
        };
        let session = with_psql(
            &psql_cluster,
            &session_urls,
            &set,
            concurrency,
            psql::apply_in_one_session,
        )?;
        check_applied(&fleet_urls).await?;
        check_applied(&traced_urls).await?;
        println!(
            "round {round}: psql per file {:>6.0} ms   psql one session {:>6.0} ms   fleetshift {:>6.0} ms   traced {:>6.0} ms",
            psql.as_secs_f64() * 1e3,
            session.as_secs_f64() * 1e3,
            fleetshift.as_secs_f64() * 1e3,
            traced_time.as_secs_f64() * 1e3,
        );
        traced_times.push(traced_time);
        fleetshift_times.push(fleetshift);
        psql_times.push(psql);
        session_times.push(session);
    }
    let fleetshift = median(&mut fleetshift_times);
    let psql = median(&mut psql_times);
    let session = median(&mut session_times);
    let traced_median = median(&mut traced_times);
    let ratio = fleetshift.as_secs_f64() / psql.as_secs_f64();
    let traced_ratio = traced_median.as_secs_f64() / fleetshift.as_secs_f64();
    // The last spans of the last round are exported within the batch delay.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spans = collector.spans().len();
    let floor_ratio = fleetshift.as_secs_f64() / session.as_secs_f64();
    println!(
        "median: psql per file {:.0} ms, psql one session {:.0} ms, fleetshift {:.0} ms",
        psql.as_secs_f64() * 1e3,
        session.as_secs_f64() * 1e3,
        fleetshift.as_secs_f64() * 1e3
    );
    println!("fleetshift / psql per file    = {ratio:.2} (target <= 1.30)");
    println!(
        "fleetshift / psql one session = {floor_ratio:.2} (no per-revision atomicity in the baseline)"
    );
    println!(
        "traced {:.0} ms / untraced = {traced_ratio:.2} ({spans} spans received)",
        traced_median.as_secs_f64() * 1e3
    );
    println!(
        "{}",
        serde_json::json!({
            "benchmark": "rollout_wall_time",
            "shards": SHARDS,
            "revisions": set.revisions.len(),
            "concurrency": concurrency,
            "rounds": rounds,
            "psql_per_file_median_ms": psql.as_secs_f64() * 1e3,
            "psql_one_session_median_ms": session.as_secs_f64() * 1e3,
            "ratio_vs_psql_one_session": floor_ratio,
            "fleetshift_median_ms": fleetshift.as_secs_f64() * 1e3,
            "ratio": ratio,
            "fleetshift_traced_median_ms": traced_median.as_secs_f64() * 1e3,
            "traced_over_untraced": traced_ratio,
            "spans_received": spans,
            "target_ratio": 1.3,
        })
    );
    Ok(())
}
