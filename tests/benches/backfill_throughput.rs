//! Backfill throughput: a backfill job (`-- fleetshift:backfill key=id batch=B`, run by the
//! executor in key-range batches, each its own fenced transaction) against one plain `UPDATE`
//! of the same rows, in the same run, on a table the benchmark generates. While each runs, an
//! application writes single rows of the table at random every few milliseconds; its slowest
//! write is how long the backfill made the application wait on row locks.
//!
//! `cargo bench -p fleetshift-tests --bench backfill_throughput [-- ROWS BATCH]` (default
//! 2,000,000 rows, batches of 5,000). Reported: rows/s of each, the job's throughput as a
//! fraction of the single UPDATE's, the longest batch against the UPDATE's whole run (the
//! longest any row lock was held), and the application's slowest write during each.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fleetshift_common::engine::PostgresShard;
use fleetshift_common::engine::Timeouts;
use fleetshift_common::executor::{ExecutionEvent, Executor, ExecutorSettings, Identity, Request};
use fleetshift_common::secrets::DatabaseUrl;
use fleetshift_common::source::MigrationSet;
use fleetshift_tests::fixtures;
use fleetshift_tests::postgres::PostgresCluster;
use sqlx::PgPool;

fn main() -> anyhow::Result<()> {
    let [rows, batch] = fleetshift_tests::bench::numbers(["ROWS", "BATCH"], [2_000_000, 5000])?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(rows as i64, batch as u64))
}

async fn run(rows: i64, batch: u64) -> anyhow::Result<()> {
    let cluster = PostgresCluster::start()?;
    let url = cluster.create_database("backfill_bench").await?;
    let admin = cluster.admin_pool("backfill_bench").await?;
    sqlx::raw_sql(
        "CREATE TABLE events (id bigint PRIMARY KEY, payload text NOT NULL, payload_upper text)",
    )
    .execute(&admin)
    .await?;
    sqlx::query(
        "INSERT INTO events (id, payload) SELECT g, 'event payload ' || g FROM generate_series(1, $1) AS g",
    )
    .bind(rows)
    .execute(&admin)
    .await?;
    reset(&admin).await?;
    println!("table: {rows} rows; batches of {batch}");

    let (single, single_write) = with_application(&admin, rows, async {
        let started = Instant::now();
        sqlx::query("UPDATE events SET payload_upper = upper(payload)")
            .execute(&admin)
            .await?;
        Ok(started.elapsed())
    })
    .await?;
    check(&admin, rows).await?;
    reset(&admin).await?;

    let directory = fixtures::migrations(&[(
        "1_fill_upper.sql",
        &format!(
            "-- fleetshift:backfill key=id batch={batch}\nUPDATE events SET payload_upper = upper(payload) WHERE :batch;"
        ),
    )]);
    let set = MigrationSet::load(directory.path(), None)?;
    let shard = PostgresShard::connect(&DatabaseUrl::new(url), Timeouts::default()).await?;
    let ((job, longest_batch), job_write) = with_application(&admin, rows, async {
        let (events, mut received) = tokio::sync::mpsc::unbounded_channel();
        let identity = Identity {
            agent_id: "bench".to_owned(),
            plan_id: None,
            fence_token: None,
        };
        let started = Instant::now();
        Executor::new(&shard, identity, ExecutorSettings::default())
            .report_to(events)
            .up(&set, &Request::default())
            .await?;
        let took = started.elapsed();
        let mut longest = Duration::ZERO;
        while let Ok(event) = received.try_recv() {
            if let ExecutionEvent::BackfillProgress { longest_batch, .. } = event {
                longest = longest.max(longest_batch);
            }
        }
        Ok((took, longest))
    })
    .await?;
    check(&admin, rows).await?;

    let per_second = |took: Duration| rows as f64 / took.as_secs_f64();
    println!(
        "single UPDATE: {single:.2?} ({:.0} rows/s), every row locked for up to {single:.2?}; application's slowest write {single_write:.2?}",
        per_second(single)
    );
    println!(
        "backfill job:  {job:.2?} ({:.0} rows/s), longest batch {longest_batch:.2?}; application's slowest write {job_write:.2?}",
        per_second(job)
    );
    println!(
        "job throughput {:.2}x the single UPDATE's; longest lock {:.4}x ({longest_batch:.2?} against {single:.2?}); application's slowest write {:.4}x",
        single.as_secs_f64() / job.as_secs_f64(),
        longest_batch.as_secs_f64() / single.as_secs_f64(),
        job_write.as_secs_f64() / single_write.as_secs_f64()
    );
    Ok(())
}

/// Empties the backfilled column and vacuums, so each contender starts from the same table.
async fn reset(admin: &PgPool) -> anyhow::Result<()> {
    sqlx::raw_sql("UPDATE events SET payload_upper = NULL WHERE payload_upper IS NOT NULL")
        .execute(admin)
        .await?;
    sqlx::raw_sql("VACUUM (ANALYZE) events")
        .execute(admin)
        .await?;
    Ok(())
}

async fn check(admin: &PgPool, rows: i64) -> anyhow::Result<()> {
    let filled: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE payload_upper = upper(payload)")
            .fetch_one(admin)
            .await?;
    anyhow::ensure!(filled == rows, "{filled} of {rows} rows backfilled");
    Ok(())
}

/// Runs `work` while an application writes one random row every 2 ms; `work`'s result and
/// the application's slowest write.
async fn with_application<T>(
    admin: &PgPool,
    rows: i64,
    work: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<(T, Duration)> {
    let done = Arc::new(AtomicBool::new(false));
    let application = tokio::spawn({
        let admin = admin.clone();
        let done = Arc::clone(&done);
        async move {
            let mut slowest = Duration::ZERO;
            let mut id: i64 = 7;
            while !done.load(Ordering::Relaxed) {
                id = (id * 48_271) % 2_147_483_647;
                let started = Instant::now();
                sqlx::query("UPDATE events SET payload = payload WHERE id = $1")
                    .bind(id % rows + 1)
                    .execute(&admin)
                    .await?;
                slowest = slowest.max(started.elapsed());
                // The application's pace (a load model, not a wait): unpaced, this writer
                // takes a whole core of the two the benchmark runs on.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            anyhow::Ok(slowest)
        }
    });
    let result = work.await;
    done.store(true, Ordering::Relaxed);
    let slowest = application.await??;
    Ok((result?, slowest))
}
