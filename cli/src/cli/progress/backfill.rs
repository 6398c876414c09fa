//! A backfill job's progress as `watch`, `events` and `migrate` tell it: keys done of the
//! table's estimated rows, the rate of this run, the time left at that rate, and the longest
//! any batch held its rows' locks.

use std::time::Duration;

use fleetshift_common::proto::v1::BackfillProgress;
use serde_json::json;

use super::{duration_of, humane};

/// The rate of this run of the job, in keys per second.
fn rate(progress: &BackfillProgress) -> Option<f64> {
    let elapsed = duration_of(progress.elapsed)?.as_secs_f64();
    (elapsed > 0.0).then(|| progress.rows_this_run as f64 / elapsed)
}

/// The time left at this run's rate, when the table's size is known.
fn left(progress: &BackfillProgress) -> Option<Duration> {
    let remaining = (progress.estimated_rows - progress.rows).max(0) as f64;
    let rate = rate(progress).filter(|rate| *rate > 0.0)?;
    (progress.estimated_rows > 0).then(|| Duration::from_secs_f64(remaining / rate))
}

/// `5 backfill: 250000 of ~2000000 rows (12%), 50 batches, 41000 rows/s, about 43s left;
/// longest batch 120ms`.
pub(super) fn line(progress: &BackfillProgress) -> String {
    let mut line = format!("{} backfill: {} ", progress.version, progress.rows);
    if progress.estimated_rows > 0 {
        let percent = (progress.rows as f64 / progress.estimated_rows as f64 * 100.0).min(100.0);
        line.push_str(&format!(
            "of ~{} rows ({percent:.0}%)",
            progress.estimated_rows
        ));
    } else {
        line.push_str("rows");
    }
    line.push_str(&format!(", {} batches", progress.batches));
    if let Some(rate) = rate(progress) {
        line.push_str(&format!(", {rate:.0} rows/s"));
    }
    if let Some(left) = left(progress) {
        line.push_str(&format!(", about {} left", humane(left)));
    }
    if let Some(longest) = duration_of(progress.longest_batch) {
        line.push_str(&format!("; longest batch {}", humane(longest)));
    }
    line
}

/// The backfills of one wave summed: `wave 0 backfill: 750000 of ~6000000 rows (12%) on 3
/// shards, 120000 rows/s`; the rate is the running shards' (`running`).
pub(super) fn wave_line(index: u32, shards: &[(&BackfillProgress, bool)]) -> String {
    let rows: i64 = shards.iter().map(|(progress, _)| progress.rows).sum();
    let estimated: i64 = shards
        .iter()
        .map(|(progress, _)| progress.estimated_rows)
        .sum();
    let rate: f64 = shards
        .iter()
        .filter(|(_, running)| *running)
        .filter_map(|(progress, _)| rate(progress))
        .sum();
    let mut line = format!("wave {index} backfill: {rows} ");
    if estimated > 0 {
        let percent = (rows as f64 / estimated as f64 * 100.0).min(100.0);
        line.push_str(&format!("of ~{estimated} rows ({percent:.0}%)"));
    } else {
        line.push_str("rows");
    }
    line.push_str(&format!(" on {} shards", shards.len()));
    if rate > 0.0 {
        line.push_str(&format!(", {rate:.0} rows/s"));
    }
    line
}

/// The job's progress as JSON fields.
pub(super) fn json(progress: &BackfillProgress) -> serde_json::Value {
    json!({
        "version": progress.version,
        "batches": progress.batches,
        "rows": progress.rows,
        "estimated_rows": (progress.estimated_rows > 0).then_some(progress.estimated_rows),
        "rows_per_second": rate(progress).map(f64::round),
        "seconds_left": left(progress).map(|left| left.as_secs()),
        "longest_batch_ms": duration_of(progress.longest_batch).map(|took| took.as_millis()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(estimated_rows: i64) -> BackfillProgress {
        BackfillProgress {
            version: "5".to_owned(),
            batches: 50,
            rows: 250_000,
            estimated_rows,
            rows_this_run: 200_000,
            elapsed: prost_types::Duration::try_from(Duration::from_secs(4)).ok(),
            longest_batch: prost_types::Duration::try_from(Duration::from_millis(120)).ok(),
        }
    }

    #[test]
    fn a_line_tells_rows_rate_time_left_and_the_longest_batch() {
        assert_eq!(
            line(&progress(2_000_000)),
            "5 backfill: 250000 of ~2000000 rows (12%), 50 batches, 50000 rows/s, about 35.0s left; longest batch 120ms"
        );
        assert_eq!(
            line(&progress(0)),
            "5 backfill: 250000 rows, 50 batches, 50000 rows/s; longest batch 120ms"
        );
        let running = progress(2_000_000);
        let finished = BackfillProgress {
            rows: 2_000_000,
            ..progress(2_000_000)
        };
        assert_eq!(
            wave_line(1, &[(&running, true), (&finished, false)]),
            "wave 1 backfill: 2250000 of ~4000000 rows (56%) on 2 shards, 50000 rows/s"
        );
        let fields = json(&progress(0));
        assert_eq!(fields["estimated_rows"], serde_json::Value::Null);
        assert_eq!(fields["rows_per_second"], 50000.0);
    }
}
