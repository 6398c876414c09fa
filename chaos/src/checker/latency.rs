//! The application's reads while migrations run: a migration waits for its lock at most
//! `lock_timeout` before it gives up and tries later, so a read queued behind that wait is
//! held at most as long. Reads overlapping a fault (a frozen agent holding its lock, a
//! restarting server) are left out: the bound is about lock waits, not outages.

use std::time::Duration;

use serde::Serialize;

use super::{Check, Violation};

/// One read, timed from the campaign's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Read {
    pub started: Duration,
    pub took: Duration,
}

/// When a fault was in force, from its injection to its healing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: Duration,
    pub to: Duration,
}

/// How the reads went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReadSummary {
    /// Reads timed, and of those the ones outside every fault's window.
    pub reads: usize,
    pub counted: usize,
    pub p50_ms: u64,
    pub p99_ms: u64,
    pub max_ms: u64,
}

/// After a fault heals, what it left (reconnecting pools, a server recovering) settles
/// within this.
const SETTLING: Duration = Duration::from_secs(3);

/// The reads outside `windows`, summarised, and a violation when their p99 is past `bound`.
pub fn check(
    reads: &[Read],
    windows: &[Window],
    bound: Duration,
) -> (ReadSummary, Option<Violation>) {
    let mut counted: Vec<Duration> = reads
        .iter()
        .filter(|read| {
            let end = read.started + read.took;
            windows
                .iter()
                .all(|window| end < window.from || read.started > window.to + SETTLING)
        })
        .map(|read| read.took)
        .collect();
    counted.sort();
    let percentile = |percent: usize| {
        counted
            .len()
            .checked_sub(1)
            .map(|last| counted[last * percent / 100])
            .unwrap_or_default()
    };
    let p99 = percentile(99);
    let millis = |duration: Duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    let summary = ReadSummary {
        reads: reads.len(),
        counted: counted.len(),
        p50_ms: millis(percentile(50)),
        p99_ms: millis(p99),
        max_ms: millis(counted.last().copied().unwrap_or_default()),
    };
    let violation = (p99 > bound).then(|| {
        Violation::fleet(
            Check::ReadLatency,
            format!(
                "application reads' p99 was {} ms over {} reads outside faults, past the bound of {} ms (lock_timeout + 50 ms)",
                summary.p99_ms,
                summary.counted,
                millis(bound)
            ),
        )
    });
    (summary, violation)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reads(latencies_ms: &[u64]) -> Vec<Read> {
        latencies_ms
            .iter()
            .enumerate()
            .map(|(index, took)| Read {
                started: Duration::from_secs(u64::try_from(index).unwrap_or_default()),
                took: Duration::from_millis(*took),
            })
            .collect()
    }

    #[test]
    fn slow_reads_during_a_fault_do_not_count_and_slow_ones_outside_do() {
        let mut latencies = vec![5; 200];
        latencies[100] = 9_000;
        latencies[101] = 9_000;
        latencies[102] = 9_000;
        let fault = Window {
            from: Duration::from_secs(100),
            to: Duration::from_secs(102),
        };
        let bound = Duration::from_millis(250);
        let (summary, violation) = check(&reads(&latencies), &[fault], bound);
        assert_eq!(violation, None, "{summary:?}");
        assert_eq!(summary.max_ms, 5);
        assert!(summary.counted < 200 - 3);

        let (summary, violation) = check(&reads(&latencies), &[], bound);
        assert_eq!(summary.p99_ms, 9_000);
        assert!(violation.is_some_and(|violation| violation.detail.contains("9000 ms")));
    }
}
