//! Fingerprinting a large schema: a database the benchmark generates with TABLES tables of four
//! columns and five indexes each (default 2,000 tables and 10,000 indexes), each table but the
//! first with a foreign key to the one before. Against, in the same run and on the same
//! database, `pg_dump --schema-only` (what an operator would run to compare two schemas by
//! hand). Rounds alternate which goes first.
//!
//! `cargo bench -p fleetshift-tests --bench schema_fingerprint [-- ROUNDS TABLES]` (default 5
//! rounds, 2000 tables). Target: the snapshot and its fingerprint in under 2 s.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fleetshift_common::schema;
use fleetshift_tests::postgres::PostgresCluster;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

const DATABASE: &str = "fingerprint_bench";

fn main() -> anyhow::Result<()> {
    let [rounds, tables] = fleetshift_tests::bench::numbers(["ROUNDS", "TABLES"], [5, 2000])?;
    let runtime = tokio::runtime::Runtime::new()?;
    let cluster = PostgresCluster::start()?;
    let url = runtime.block_on(cluster.create_database(DATABASE))?;
    runtime.block_on(generate(&url, tables))?;
    let mut fingerprints = Vec::new();
    let mut dumps = Vec::new();
    for round in 0..rounds {
        let fingerprint = || runtime.block_on(fingerprint(&url));
        let dump = || schema_dump(&cluster);
        let (fingerprinted, dumped) = if round % 2 == 0 {
            let fingerprinted = fingerprint()?;
            (fingerprinted, dump()?)
        } else {
            let dumped = dump()?;
            (fingerprint()?, dumped)
        };
        println!(
            "round {round}: fingerprint {:.3?} ({} objects), pg_dump --schema-only {dumped:.3?}",
            fingerprinted.0, fingerprinted.1
        );
        fingerprints.push(fingerprinted.0);
        dumps.push(dumped);
    }
    fingerprints.sort();
    dumps.sort();
    let (fingerprint, dump) = (fingerprints[rounds / 2], dumps[rounds / 2]);
    println!(
        "median: fingerprint {fingerprint:.3?}, pg_dump --schema-only {dump:.3?}; fingerprint/pg_dump {:.2}x ({tables} tables, {} indexes)",
        fingerprint.as_secs_f64() / dump.as_secs_f64(),
        tables * 5
    );
    Ok(())
}

/// Tables `t0..`, each `(id bigint PRIMARY KEY, parent bigint REFERENCES the previous, name
/// text, at timestamptz)` with four more indexes; one transaction per 200 tables.
async fn generate(url: &str, tables: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut connection = PgConnection::connect(url).await?;
    for chunk in (0..tables).collect::<Vec<_>>().chunks(200) {
        let mut sql = String::from("BEGIN;");
        for table in chunk {
            let parent = match table.checked_sub(1) {
                Some(previous) => format!("bigint REFERENCES t{previous} (id)"),
                None => "bigint".to_owned(),
            };
            sql.push_str(&format!(
                "CREATE TABLE t{table} (id bigint PRIMARY KEY, parent {parent}, name text NOT NULL DEFAULT '', at timestamptz);
                 CREATE INDEX t{table}_parent ON t{table} (parent);
                 CREATE INDEX t{table}_name ON t{table} (name);
                 CREATE INDEX t{table}_at ON t{table} (at DESC);
                 CREATE UNIQUE INDEX t{table}_name_at ON t{table} (name, at) WHERE at IS NOT NULL;"
            ));
        }
        sql.push_str("COMMIT;");
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&mut connection)
            .await?;
    }
    println!("generated {tables} tables in {:.1?}", started.elapsed());
    Ok(())
}

/// One snapshot and its fingerprint, on a new connection (as an agent's check would be).
async fn fingerprint(url: &str) -> anyhow::Result<(Duration, usize)> {
    let started = Instant::now();
    let mut connection = PgConnection::connect(url).await?;
    let snapshot = schema::postgres::read(&mut connection)
        .await
        .context("reading the snapshot")?;
    let fingerprint = snapshot.fingerprint();
    let took = started.elapsed();
    if fingerprint.as_str().is_empty() {
        bail!("no fingerprint");
    }
    Ok((took, snapshot.len()))
}

fn schema_dump(cluster: &PostgresCluster) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let output = Command::new(cluster.binaries().join("pg_dump"))
        .args(["--schema-only", "--dbname"])
        .arg(cluster.socket_url(DATABASE))
        .output()
        .context("running pg_dump")?;
    if !output.status.success() {
        bail!(
            "pg_dump failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(started.elapsed())
}
