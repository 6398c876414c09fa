//! Backup throughput: the agent's verified backup (`pg_dump -Fc` through a pipe into the
//! backup directory with a SHA-256 on the way, then `pg_restore --list`) against a plain
//! `pg_dump -Fc -f FILE` of the same database, in the same run, on a database the benchmark
//! generates (default 1.1 GiB). Rounds alternate which goes first.
//!
//! `cargo bench -p fleetshift-tests --bench backup_throughput [-- ROUNDS MIB]` (default 2 rounds,
//! 1100 MiB). Target: the agent's median throughput at least 0.9x the plain dump's.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fleetshift_agent::duties::backup::{self, BackupSettings, Subject};
use fleetshift_common::secrets::DatabaseUrl;
use fleetshift_tests::postgres::PostgresCluster;
use tokio_util::sync::CancellationToken;

fn main() -> anyhow::Result<()> {
    let [rounds, mib] = fleetshift_tests::bench::numbers(["ROUNDS", "MIB"], [2, 1100])?;
    let runtime = tokio::runtime::Runtime::new()?;
    let cluster = PostgresCluster::start()?;
    let url = runtime.block_on(cluster.create_database("backup_bench"))?;
    let database_bytes = runtime.block_on(fleetshift_tests::bench::events_database(
        &cluster,
        "backup_bench",
        mib as u64,
    ))?;
    println!(
        "database: {} MiB; {rounds} round(s)",
        database_bytes / (1024 * 1024)
    );
    let work = tempfile::tempdir()?;
    let settings = BackupSettings {
        directory: work.path().join("agent"),
        keep: 1,
        max_age: None,
        pg_dump: cluster.binaries().join("pg_dump"),
        pg_restore: cluster.binaries().join("pg_restore"),
        psql: cluster.binaries().join("psql"),
        lock_wait_timeout: Duration::from_secs(60),
    };
    let url = DatabaseUrl::new(url);
    let mut plain_times = Vec::new();
    let mut agent_times = Vec::new();
    for round in 0..rounds {
        let plain_file = work.path().join("plain.dump");
        let mut agent_time = None;
        if round % 2 == 1 {
            agent_time = Some(runtime.block_on(agent(&settings, &url, database_bytes))?);
        }
        let started = Instant::now();
        let status = Command::new(cluster.binaries().join("pg_dump"))
            .args(["--format=custom", "--file"])
            .arg(&plain_file)
            .arg("--dbname")
            .arg(cluster.socket_url("backup_bench"))
            .status()
            .context("running pg_dump")?;
        if !status.success() {
            bail!("pg_dump failed: {status}");
        }
        let plain = started.elapsed();
        let plain_size = std::fs::metadata(&plain_file)?.len();
        std::fs::remove_file(&plain_file)?;
        let (agent_took, agent_size) = match agent_time {
            Some(measured) => measured,
            None => runtime.block_on(agent(&settings, &url, database_bytes))?,
        };
        println!(
            "round {round}: plain pg_dump {plain:.2?} ({} MiB dump), agent {agent_took:.2?} ({} MiB dump, verified)",
            plain_size / (1024 * 1024),
            agent_size / (1024 * 1024)
        );
        plain_times.push(plain);
        agent_times.push(agent_took);
    }
    let plain = median(&mut plain_times);
    let agent = median(&mut agent_times);
    let per_second =
        |took: Duration| database_bytes as f64 / (1024.0 * 1024.0) / took.as_secs_f64();
    println!(
        "median: plain {plain:.2?} ({:.1} MiB/s of database), agent {agent:.2?} ({:.1} MiB/s); agent throughput {:.2}x plain (target >= 0.9x)",
        per_second(plain),
        per_second(agent),
        plain.as_secs_f64() / agent.as_secs_f64()
    );
    Ok(())
}

/// One verified backup the agent's way; its time and dump size.
async fn agent(
    settings: &BackupSettings,
    url: &DatabaseUrl,
    database_bytes: u64,
) -> anyhow::Result<(Duration, u64)> {
    let started = Instant::now();
    let subject = Subject {
        shard_id: "bench",
        plan_id: "bench",
        url,
        database_bytes,
        restore_test: None,
    };
    let manifest = backup::take(settings, subject, &CancellationToken::new())
        .await
        .map_err(|failure| anyhow::anyhow!("backup failed: {failure:?}"))?;
    Ok((started.elapsed(), manifest.size_bytes))
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}
