//! What a rehearsal costs the shard: a 10% sampled rehearsal of one revision (a CHECK
//! constraint validated by a scan) against a plain `pg_dump -Fc` of the same database, in the
//! same run, on a database the benchmark generates (default 1.1 GiB). For each: the wall time,
//! and the shard database's block reads (`pg_stat_database` hits plus reads, times the block
//! size), the load either puts on the shard. The scratch database's own reads are not the
//! shard's and are not counted. Rounds alternate which goes first.
//!
//! `cargo bench -p fleetshift-tests --bench rehearsal_load [-- ROUNDS MIB PERCENT]` (default 2
//! rounds, 1100 MiB, 10%). Target: the rehearsal reads a small share of what the dump reads.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fleetshift_common::engine::Timeouts;
use fleetshift_common::executor::{ExecutorSettings, Request};
use fleetshift_common::rehearsal::scratch::SampleOptions;
use fleetshift_common::rehearsal::{self, RehearsalSettings};
use fleetshift_common::secrets::DatabaseUrl;
use fleetshift_common::source::MigrationSet;
use fleetshift_tests::postgres::PostgresCluster;
use sqlx::PgPool;

const DATABASE: &str = "rehearsal_bench";

fn main() -> anyhow::Result<()> {
    let [rounds, mib, percent] =
        fleetshift_tests::bench::numbers(["ROUNDS", "MIB", "PERCENT"], [2, 1100, 10])?;
    let runtime = tokio::runtime::Runtime::new()?;
    let cluster = PostgresCluster::start()?;
    let url = DatabaseUrl::new(runtime.block_on(cluster.create_database(DATABASE))?);
    let admin = runtime.block_on(cluster.admin_pool("postgres"))?;
    let database_bytes = runtime.block_on(fleetshift_tests::bench::events_database(
        &cluster, DATABASE, mib as u64,
    ))?;
    let migrations = tempfile::tempdir()?;
    std::fs::write(
        migrations.path().join("1_kind_present.sql"),
        "ALTER TABLE events ADD CONSTRAINT kind_present CHECK (kind IS NOT NULL);",
    )?;
    let set = MigrationSet::load(migrations.path(), None)?;
    let settings = RehearsalSettings {
        sample: SampleOptions {
            percent: percent as f64,
            pg_dump: cluster.binaries().join("pg_dump"),
            pg_restore: cluster.binaries().join("pg_restore"),
            owner: "bench".to_owned(),
            ..SampleOptions::default()
        },
        timeouts: Timeouts::default(),
        executor: ExecutorSettings::default(),
        plan_id: None,
        baselines: None,
    };
    println!(
        "database: {} MiB; {rounds} round(s); {percent}% sample",
        database_bytes / (1024 * 1024)
    );
    let work = tempfile::tempdir()?;
    let mut dumps = Vec::new();
    let mut rehearsals = Vec::new();
    for round in 0..rounds {
        let dump = || {
            let file = work.path().join("plain.dump");
            let measured = runtime.block_on(measure(&admin, async {
                let status = Command::new(cluster.binaries().join("pg_dump"))
                    .args(["--format=custom", "--file"])
                    .arg(&file)
                    .arg("--dbname")
                    .arg(cluster.socket_url(DATABASE))
                    .status()
                    .context("running pg_dump")?;
                if !status.success() {
                    bail!("pg_dump failed: {status}");
                }
                Ok(())
            }));
            std::fs::remove_file(&file)?;
            measured
        };
        let rehearse = || {
            runtime.block_on(measure(&admin, async {
                let rehearsal = rehearsal::rehearse(&url, &set, &Request::default(), &settings)
                    .await
                    .context("rehearsing")?;
                if rehearsal.findings.is_empty() {
                    bail!("the rehearsal found no hazard in a validating CHECK");
                }
                Ok(())
            }))
        };
        let (dumped, rehearsed) = if round % 2 == 0 {
            let dumped = dump()?;
            (dumped, rehearse()?)
        } else {
            let rehearsed = rehearse()?;
            (dump()?, rehearsed)
        };
        println!(
            "round {round}: pg_dump {:.2?}, {} MiB read; rehearsal {:.2?}, {} MiB read",
            dumped.0,
            dumped.1 / (1024 * 1024),
            rehearsed.0,
            rehearsed.1 / (1024 * 1024)
        );
        dumps.push(dumped);
        rehearsals.push(rehearsed);
    }
    let (dump_time, dump_read) = median(&mut dumps);
    let (rehearsal_time, rehearsal_read) = median(&mut rehearsals);
    println!(
        "median: pg_dump {dump_time:.2?} reading {} MiB; rehearsal {rehearsal_time:.2?} reading {} MiB; rehearsal/pg_dump: time {:.2}x, shard reads {:.2}x",
        dump_read / (1024 * 1024),
        rehearsal_read / (1024 * 1024),
        rehearsal_time.as_secs_f64() / dump_time.as_secs_f64(),
        rehearsal_read as f64 / dump_read.max(1) as f64
    );
    Ok(())
}

/// Runs `work`; its wall time and the bytes of the shard database's blocks read meanwhile.
async fn measure(
    admin: &PgPool,
    work: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<(Duration, u64)> {
    let before = settled_reads(admin).await?;
    let started = Instant::now();
    work.await?;
    let took = started.elapsed();
    let after = settled_reads(admin).await?;
    Ok((took, after.saturating_sub(before)))
}

/// The shard database's block reads (hits and reads) in bytes, once two readings a second
/// apart agree: backends report their counters when they go idle or exit.
async fn settled_reads(admin: &PgPool) -> anyhow::Result<u64> {
    let mut last = None;
    loop {
        sqlx::query("SELECT pg_stat_clear_snapshot()")
            .execute(admin)
            .await?;
        let blocks: i64 = sqlx::query_scalar(
            "SELECT (blks_hit + blks_read) * current_setting('block_size')::int8
             FROM pg_stat_database WHERE datname = $1",
        )
        .bind(DATABASE)
        .fetch_one(admin)
        .await?;
        let bytes = u64::try_from(blocks)?;
        if last == Some(bytes) {
            return Ok(bytes);
        }
        last = Some(bytes);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn median(measured: &mut [(Duration, u64)]) -> (Duration, u64) {
    measured.sort();
    measured[measured.len() / 2]
}
