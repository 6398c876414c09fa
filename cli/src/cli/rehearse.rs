//! `fleetshift migrate rehearse`: the pending revisions run on a sampled copy of one database
//! under the tracer ([`fleetshift_common::rehearsal`]); the report names every hazard with the
//! statement, its lock and how long it was held.

use std::path::PathBuf;

use clap::Args;
use fleetshift_common::proto::v1::BaselinePolicy;
use fleetshift_common::rehearsal::Rehearsal;
use fleetshift_common::rehearsal::effects::Effects;
use fleetshift_common::rehearsal::findings::strongest_locks;
use fleetshift_common::rehearsal::scratch::SampleOptions;
use fleetshift_common::secrets::DatabaseUrl;
use serde_json::json;

use super::Output;

/// The owner tag of the scratch databases this command builds.
pub(super) const OWNER: &str = "cli";

/// How much of the database the scratch copy gets.
#[derive(Debug, Args)]
pub(super) struct SampleArgs {
    /// Percent of each table's blocks copied into the scratch database (TABLESAMPLE SYSTEM),
    /// e.g. 10% or 2.5.
    #[arg(long, default_value = "10%", value_parser = parse_percent)]
    sample: f64,
    /// At most this many rows per table.
    #[arg(long, default_value_t = 1_000_000)]
    max_rows_per_table: u64,
    /// The pg_dump that copies the schema.
    #[arg(long, default_value = "pg_dump", env = "FLEETSHIFT_PG_DUMP")]
    pg_dump: PathBuf,
    /// The pg_restore that loads it into the scratch database.
    #[arg(long, default_value = "pg_restore", env = "FLEETSHIFT_PG_RESTORE")]
    pg_restore: PathBuf,
    /// Build the scratch database on this staging server instead of beside the database: a
    /// PostgreSQL URL whose user may create databases (the database reads only the sample).
    #[arg(long, env = "FLEETSHIFT_STAGING_URL", hide_env_values = true)]
    staging_url: Option<String>,
    /// Named read-only queries (each under a `-- name: <name>` line), timed on the sample
    /// before and after the revisions; one that gets slower past the threshold fails the
    /// rehearsal.
    #[arg(long, value_name = "FILE")]
    baselines: Option<PathBuf>,
    /// After/before ratio of a baseline's median that counts as slower.
    #[arg(long, default_value_t = 1.5)]
    degradation_threshold: f64,
}

impl SampleArgs {
    pub(super) fn options(&self) -> SampleOptions {
        SampleOptions {
            percent: self.sample,
            max_rows_per_table: self.max_rows_per_table,
            pg_dump: self.pg_dump.clone(),
            pg_restore: self.pg_restore.clone(),
            owner: OWNER.to_owned(),
            staging: self.staging_url.clone().map(DatabaseUrl::new),
        }
    }

    /// The baseline queries of `--baselines`, with the threshold; the error names the file's
    /// line.
    pub(super) fn baselines(&self) -> Result<Option<BaselinePolicy>, String> {
        let Some(path) = &self.baselines else {
            return Ok(None);
        };
        Ok(Some(BaselinePolicy {
            queries: super::baseline_file::load(path)?,
            degradation_threshold: self.degradation_threshold,
            ..BaselinePolicy::default()
        }))
    }

    /// The server the scratch databases go on: the staging one, or the database's own.
    pub(super) fn server(&self, database: &DatabaseUrl) -> DatabaseUrl {
        self.staging_url
            .clone()
            .map_or_else(|| database.clone(), DatabaseUrl::new)
    }
}

pub(super) fn parse_percent(text: &str) -> Result<f64, String> {
    let number = text.trim().trim_end_matches('%').trim();
    let percent: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a percentage (e.g. 10% or 2.5)"))?;
    if percent > 0.0 && percent <= 100.0 {
        Ok(percent)
    } else {
        Err(format!("{text:?} is outside (0%, 100%]"))
    }
}

/// Prints the rehearsal: the sample, each statement's trace, the findings.
pub(super) fn render(output: Output, rehearsal: &Rehearsal) {
    if output == Output::Json {
        let value = json!({ "passed": rehearsal.passed(), "rehearsal": rehearsal });
        match serde_json::to_string_pretty(&value) {
            Ok(text) => println!("{text}"),
            Err(error) => eprintln!("error: cannot encode the result as JSON: {error}"),
        }
        return;
    }
    render_sample(rehearsal);
    render_runs(rehearsal);
    render_outcome(rehearsal);
}

/// The sample the rehearsal ran on: how it was taken and what each table stands for.
fn render_sample(rehearsal: &Rehearsal) {
    let sample = &rehearsal.sample;
    println!(
        "rehearsal of {}: a {}% sample (at most {} rows per table), built in {} ms",
        rehearsal.shard, sample.percent, sample.max_rows_per_table, sample.build_ms
    );
    println!("  disk: {}", sample.disk);
    for table in &sample.tables {
        let mut how = if table.whole {
            "copied whole".to_owned()
        } else {
            format!("1 row stands for {:.1}", table.factor())
        };
        if table.rows_removed > 0 {
            how.push_str(&format!(
                "; {} removed: they referenced rows outside the sample",
                table.rows_removed
            ));
        }
        println!(
            "  {:<40} {:>10} of ~{} rows ({how})",
            table.table, table.rows_sampled, table.rows_in_shard
        );
    }
}

/// Each statement as it ran on the sample, then the estimates at the shard's size.
fn render_runs(rehearsal: &Rehearsal) {
    for revision in &rehearsal.revisions {
        println!("revision {}", revision.version);
        for run in &revision.runs {
            for statement in &run.statements {
                println!(
                    "  {} ({}{}){}",
                    statement.place,
                    micros(statement.elapsed_us),
                    if run.in_transaction {
                        ""
                    } else {
                        ", outside a transaction"
                    },
                    effects_summary(&statement.effects)
                );
            }
        }
    }
    if !rehearsal.estimates.is_empty() {
        println!("at the shard's size:");
    }
    for estimate in &rehearsal.estimates {
        println!(
            "  {}: {} on the sample x {:.1} ({}) = ~{}",
            estimate.place,
            micros(estimate.sample_us),
            estimate.factor,
            estimate.table,
            micros(estimate.estimated_us)
        );
    }
}

/// The failure, the baselines before and after, and the findings.
fn render_outcome(rehearsal: &Rehearsal) {
    if let Some(failure) = &rehearsal.failure {
        println!("FAILED on the sample: {failure}");
    }
    for baseline in &rehearsal.baselines {
        println!(
            "baseline {}: {:.2} ms before, {:.2} ms after ({:.1}x){}",
            baseline.query,
            baseline.before_ms,
            baseline.after_ms,
            baseline.ratio,
            if baseline.degraded { " DEGRADED" } else { "" }
        );
    }
    if let Some(degradation) = &rehearsal.degradation {
        println!("SLOWER on the sample: {degradation}");
    }
    if rehearsal.findings.is_empty() {
        println!("no findings");
    }
    for finding in &rehearsal.findings {
        let lock = match (
            &finding.lock_mode,
            finding.held_us,
            finding.estimated_hold_us,
        ) {
            (Some(mode), Some(held), Some(estimated)) => format!(
                " [{mode} held {} on the sample, ~{} on the shard]",
                micros(held),
                micros(estimated)
            ),
            _ => String::new(),
        };
        println!(
            "{} {}: {} — {}{lock}\n    {}",
            finding.hint,
            finding.place,
            finding.hint.title(),
            finding.relation,
            finding.detail
        );
    }
}

/// A time in microseconds as people read it: `0.7 ms`, `12.3 s`.
pub(super) fn micros(micros: u64) -> String {
    let millis = micros as f64 / 1000.0;
    if millis < 1000.0 {
        format!("{millis:.1} ms")
    } else {
        format!("{:.1} s", millis / 1000.0)
    }
}

/// `: locks …; rewrote …; scanned …` for one statement, or nothing.
fn effects_summary(effects: &Effects) -> String {
    let mut parts = Vec::new();
    if !effects.locks.is_empty() {
        let locks: Vec<String> = strongest_locks(&effects.locks)
            .into_iter()
            .map(|lock| format!("{} {}", lock.mode, lock.relation))
            .collect();
        parts.push(format!("locks {}", locks.join(", ")));
    }
    if !effects.rewritten.is_empty() {
        parts.push(format!("rewrote {}", effects.rewritten.join(", ")));
    }
    if !effects.scanned.is_empty() {
        parts.push(format!("scanned {}", effects.scanned.join(", ")));
    }
    // A partitioned table's index is one per partition beside the parent's.
    if effects.indexes_built.len() > 1 {
        parts.push(format!(
            "index built on {} partitions",
            effects.indexes_built.len() - 1
        ));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(": {}", parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_a_percentage_in_range() {
        assert_eq!(parse_percent("10%"), Ok(10.0));
        assert_eq!(parse_percent("2.5"), Ok(2.5));
        assert_eq!(parse_percent("100%"), Ok(100.0));
        for wrong in ["0%", "150%", "-3", "ten"] {
            assert!(parse_percent(wrong).is_err(), "{wrong}");
        }
    }
}
