//! Applying crates.io's 285 revisions to an empty database: fleetshift (the fenced executor,
//! in process, ledger and all, over TCP with SCRAM) against two `psql` baselines on the same
//! throwaway server in the same run, both over the Unix socket with trust authentication
//! (psql's cheapest connect):
//! - `psql per file`: the same up scripts one after another, one process each, `-1` for the
//!   transactional ones — what a shell loop over the files does (the baseline);
//! - `psql one session`: every file in one process, statements in autocommit — no per-revision
//!   atomicity at all, the floor of sending the SQL.
//!
//! `cargo bench -p fleetshift-tests --bench apply_history [-- ROUNDS]` (default 5 rounds; each
//! round runs both, alternating which goes first, on fresh databases). Target: fleetshift's
//! median within 1.3x of psql's.

use fleetshift_common::fence::FenceToken;
use std::time::{Duration, Instant};

use anyhow::bail;
use fleetshift_common::engine::{PostgresShard, Timeouts};
use fleetshift_common::executor::{Executor, ExecutorSettings, Identity, Request};
use fleetshift_common::secrets::DatabaseUrl;
use fleetshift_common::source::MigrationSet;
use fleetshift_tests::postgres::PostgresCluster;
use fleetshift_tests::{fixtures, psql};

fn main() -> anyhow::Result<()> {
    let [rounds] = fleetshift_tests::bench::numbers(["ROUNDS"], [5])?;
    let runtime = tokio::runtime::Runtime::new()?;
    let cluster = PostgresCluster::start()?;
    let set = MigrationSet::load(&fixtures::crates_io(), None)?;
    println!(
        "applying {} revisions ({} outside a transaction) to an empty database, {rounds} rounds",
        set.revisions.len(),
        set.revisions
            .iter()
            .filter(|revision| !revision.transactional)
            .count()
    );
    let mut per_file_times = Vec::with_capacity(rounds);
    let mut one_session_times = Vec::with_capacity(rounds);
    let mut fleetshift_times = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let per_file_database = format!("bench_psql_files_{round}");
        let one_session_database = format!("bench_psql_session_{round}");
        let fleetshift_url =
            runtime.block_on(cluster.create_database(&format!("bench_fleetshift_{round}")))?;
        runtime.block_on(cluster.create_database(&per_file_database))?;
        runtime.block_on(cluster.create_database(&one_session_database))?;
        let per_file_url = cluster.socket_url(&per_file_database);
        let one_session_url = cluster.socket_url(&one_session_database);
        let mut fleetshift = None;
        if round % 2 == 1 {
            fleetshift = Some(runtime.block_on(with_fleetshift(&fleetshift_url))?);
        }
        let per_file = psql::apply_per_file(cluster.binaries(), &per_file_url, &set.revisions)?;
        let one_session =
            psql::apply_in_one_session(cluster.binaries(), &one_session_url, &set.revisions)?;
        let fleetshift = match fleetshift {
            Some(elapsed) => elapsed,
            None => runtime.block_on(with_fleetshift(&fleetshift_url))?,
        };
        println!(
            "round {round}: psql per file {:>7.1} ms   psql one session {:>7.1} ms   fleetshift {:>7.1} ms",
            millis(per_file),
            millis(one_session),
            millis(fleetshift)
        );
        per_file_times.push(per_file);
        one_session_times.push(one_session);
        fleetshift_times.push(fleetshift);
    }
    let per_file = median(&mut per_file_times);
    let one_session = median(&mut one_session_times);
    let fleetshift = median(&mut fleetshift_times);
    let ratio = fleetshift.as_secs_f64() / per_file.as_secs_f64();
    let floor_ratio = fleetshift.as_secs_f64() / one_session.as_secs_f64();
    println!(
        "median: psql per file {:.1} ms, psql one session {:.1} ms, fleetshift {:.1} ms",
        millis(per_file),
        millis(one_session),
        millis(fleetshift)
    );
    println!("fleetshift / psql per file   = {ratio:.2} (target <= 1.30)");
    println!(
        "fleetshift / psql one session = {floor_ratio:.2} (no per-revision atomicity in the baseline)"
    );
    println!(
        "{}",
        serde_json::json!({
            "benchmark": "apply_crates_io_history",
            "revisions": set.revisions.len(),
            "rounds": rounds,
            "psql_per_file_median_ms": millis(per_file),
            "psql_one_session_median_ms": millis(one_session),
            "fleetshift_median_ms": millis(fleetshift),
            "ratio_vs_psql_per_file": ratio,
            "ratio_vs_psql_one_session": floor_ratio,
            "target_ratio": 1.3,
        })
    );
    if ratio > 1.3 {
        bail!("fleetshift is {ratio:.2}x psql, above the 1.30 target");
    }
    Ok(())
}

/// Loading the set, connecting and applying everything under the fenced protocol.
async fn with_fleetshift(url: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let set = MigrationSet::load(&fixtures::crates_io(), None)?;
    let shard = PostgresShard::connect(&DatabaseUrl::new(url), Timeouts::default()).await?;
    let identity = Identity {
        agent_id: "bench".to_owned(),
        plan_id: None,
        fence_token: Some(FenceToken::from_raw(1)),
    };
    let report = Executor::new(&shard, identity, ExecutorSettings::default())
        .up(&set, &Request::default())
        .await?;
    let elapsed = started.elapsed();
    if report.steps.len() != set.revisions.len() {
        bail!(
            "fleetshift applied {} of {} revisions",
            report.steps.len(),
            set.revisions.len()
        );
    }
    Ok(elapsed)
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
