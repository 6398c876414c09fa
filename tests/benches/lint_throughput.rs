//! Lint throughput on crates.io's whole history (285 revisions): loading the set (reading and
//! splitting every file, the baseline every command pays) against linting it (squawk's parse
//! and rules plus fleetshift's own), in the same run.
//!
//! `cargo bench -p fleetshift-tests --bench lint_throughput [-- ROUNDS]` (default 20 rounds,
//! medians). Target: the whole history linted in under 1 s; statements per second reported.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fleetshift_common::source::MigrationSet;
use fleetshift_coordinator::lint;
use fleetshift_tests::fixtures;

fn main() -> anyhow::Result<()> {
    let [rounds] = fleetshift_tests::bench::numbers(["ROUNDS"], [20])?;
    let mut loads = Vec::with_capacity(rounds);
    let mut lints = Vec::with_capacity(rounds);
    let mut report = None;
    for _ in 0..rounds {
        let started = Instant::now();
        let set = MigrationSet::load(&fixtures::crates_io(), None)?;
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
        "crates.io: {} revisions, {} statements, {} findings",
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
            "revisions": report.revisions,
            "statements": report.statements,
            "findings": report.findings.len(),
            "load_median_ms": load.as_secs_f64() * 1e3,
            "lint_median_ms": linting.as_secs_f64() * 1e3,
            "statements_per_second": statements_per_second,
            "target_seconds": 1.0,
        })
    );
    if load + linting > Duration::from_secs(1) {
        bail!("loading and linting crates.io took over 1 s");
    }
    Ok(())
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}
