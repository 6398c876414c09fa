//! Lint throughput: loading a migration set (reading and splitting every file, the baseline
//! every command pays) against linting it (squawk's parse and rules plus fleetshift's own), in
//! the same run, on two histories:
//!
//! - crates.io's whole history (285 revisions, diesel);
//! - a generated 1,000-revision sqlx directory: crates.io's scripts in turn (transaction mode
//!   and down scripts kept), renamed to 20-digit versions (beyond 64 bits, as real Go
//!   projects write them);
//! - Ory Kratos's pop history (703 versions in 3,483 files, a set per engine), for the
//!   largest real directory in the fixtures (reported, no target).
//!
//! `cargo bench -p fleetshift-tests --bench lint_throughput [-- ROUNDS]` (default 20 rounds,
//! medians). Targets: crates.io loaded and linted in under 1 s; the 1,000 revisions loaded in
//! under 200 ms and linted in under 1 s. Statements per second reported.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fleetshift_common::source::MigrationSet;
use fleetshift_coordinator::lint;
use fleetshift_tests::fixtures;

/// Revisions in the generated directory.
const GENERATED: usize = 1_000;

fn main() -> anyhow::Result<()> {
    let [rounds] = fleetshift_tests::bench::numbers(["ROUNDS"], [20])?;
    let crates_io = measure("crates.io", &fixtures::crates_io(), rounds)?;
    if crates_io.load + crates_io.lint > Duration::from_secs(1) {
        bail!("loading and linting crates.io took over 1 s");
    }
    let generated = tempfile::tempdir()?;
    generate(generated.path())?;
    let thousand = measure("generated", generated.path(), rounds)?;
    if thousand.load > Duration::from_millis(200) {
        bail!("loading {GENERATED} revisions took over 200 ms");
    }
    if thousand.lint > Duration::from_secs(1) {
        bail!("linting {GENERATED} revisions took over 1 s");
    }
    measure("kratos", &fixtures::kratos(), rounds)?;
    Ok(())
}

/// Medians of one history's load and lint.
struct Timings {
    load: Duration,
    lint: Duration,
}

fn measure(label: &str, directory: &Path, rounds: usize) -> anyhow::Result<Timings> {
    let mut loads = Vec::with_capacity(rounds);
    let mut lints = Vec::with_capacity(rounds);
    let mut report = None;
    for _ in 0..rounds {
        let started = Instant::now();
        let set = MigrationSet::load(directory, None)?;
        loads.push(started.elapsed());
        let started = Instant::now();
        let linted = lint::lint_set(&set);
        lints.push(started.elapsed());
        report = Some(linted);
    }
    let report = report.context("at least one round")?;
    let load = median(&mut loads);
    let linting = median(&mut lints);
    let statements_per_second = report.statements as f64 / linting.as_secs_f64();
    println!(
        "{label}: {} revisions, {} statements, {} findings",
        report.revisions,
        report.statements,
        report.findings.len()
    );
    println!(
        "median of {rounds}: load {:.1} ms, lint {:.1} ms ({:.0} statements/s; {:.2}x the load)",
        load.as_secs_f64() * 1e3,
        linting.as_secs_f64() * 1e3,
        statements_per_second,
        linting.as_secs_f64() / load.as_secs_f64()
    );
    println!(
        "{}",
        serde_json::json!({
            "benchmark": "lint_throughput",
            "history": label,
            "revisions": report.revisions,
            "statements": report.statements,
            "findings": report.findings.len(),
            "load_median_ms": load.as_secs_f64() * 1e3,
            "lint_median_ms": linting.as_secs_f64() * 1e3,
            "statements_per_second": statements_per_second,
        })
    );
    Ok(Timings {
        load,
        lint: linting,
    })
}

/// Writes [`GENERATED`] sqlx revisions into `directory` from crates.io's scripts, in turn.
fn generate(directory: &Path) -> anyhow::Result<()> {
    let source = MigrationSet::load(&fixtures::crates_io(), None)?;
    for index in 0..GENERATED {
        let revision = &source.revisions[index % source.revisions.len()];
        let stem = format!("2015010100000{index:07}_{}", revision.name);
        let marker = if revision.transactional {
            ""
        } else {
            "-- no-transaction\n"
        };
        std::fs::write(
            directory.join(format!("{stem}.up.sql")),
            format!("{marker}{}", revision.up.sql),
        )?;
        if let Some(down) = &revision.down {
            std::fs::write(directory.join(format!("{stem}.down.sql")), &down.sql)?;
        }
    }
    Ok(())
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}
