//! The ledger a shard keeps about itself: one history row per revision, a one-row fence,
//! and an audit trail of operator overrides. Engines store it; the executor reasons about it.

use std::collections::HashMap;
use std::fmt;

use crate::fence::FenceToken;
use crate::schema::Fingerprint;

use serde::Serialize;

/// How a shard with no revision applied names its version.
pub const BASE: &str = "base";

/// `version` as messages show it: [`BASE`] for none (empty).
pub fn shown_version(version: &str) -> &str {
    if version.is_empty() { BASE } else { version }
}

/// Where a revision stands on a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RevisionStatus {
    /// A non-transactional revision began and has not finished (or was interrupted).
    Started,
    Applied,
    /// The last attempt failed and was rolled back; it may be retried.
    Failed,
    /// Applied once, then reverted with its down script.
    Reverted,
}

impl RevisionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Applied => "applied",
            Self::Failed => "failed",
            Self::Reverted => "reverted",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "started" => Some(Self::Started),
            "applied" => Some(Self::Applied),
            "failed" => Some(Self::Failed),
            "reverted" => Some(Self::Reverted),
            _ => None,
        }
    }
}

impl fmt::Display for RevisionStatus {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// One row of the shard's history, as read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerEntry {
    pub version: String,
    pub name: String,
    pub checksum: String,
    pub status: RevisionStatus,
    pub transactional: bool,
    pub fence_token: FenceToken,
    pub plan_id: Option<String>,
    pub agent_id: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub duration_ms: Option<i64>,
    pub statements_run: i64,
    pub error: Option<String>,
}

/// The schema a shard had when a run left it at `version`, kept in the ledger beside the
/// history (one row per version, replaced when a later run reaches the version again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionFingerprint {
    pub version: String,
    pub fingerprint: Fingerprint,
}

/// Who is writing, under which fencing token.
#[derive(Debug, Clone)]
pub struct Writer {
    pub fence_token: FenceToken,
    pub agent_id: String,
    pub plan_id: Option<String>,
}

/// A history row to insert or update (keyed by version).
#[derive(Debug, Clone)]
pub struct LedgerRecord {
    pub version: String,
    pub name: String,
    pub checksum: String,
    pub status: RevisionStatus,
    pub transactional: bool,
    /// Keep the row's existing `started_at` (finishing a started revision) instead of now.
    pub keep_started_at: bool,
    pub duration_ms: Option<i64>,
    pub statements_run: i64,
    pub error: Option<String>,
}

/// How far a backfill job got: written with each batch, in the batch's transaction, so a
/// restart resumes after the last batch committed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackfillMark {
    pub version: String,
    /// The last key of the last batch committed; `None` before the first.
    pub after: Option<String>,
    /// Keys the committed batches covered.
    pub rows: i64,
    pub batches: i64,
}

/// An operator decision worth keeping on the shard itself (drift override, adoption).
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub action: String,
    pub version: Option<String>,
    pub reason: String,
}

/// What a fenced transaction expects of the ledger before it writes anything.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    pub expectations: Vec<(String, Expect)>,
}

/// The state a guarded revision must be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Applied,
    /// Never applied, failed or reverted.
    NotApplied,
    /// Not applied, or started earlier and being resumed.
    NotAppliedOrStarted,
    Started,
}

impl Expect {
    /// The statuses this expectation accepts; `None` is a revision the ledger has no row for.
    pub fn allowed(self) -> &'static [Option<RevisionStatus>] {
        use RevisionStatus::{Applied, Failed, Reverted, Started};
        match self {
            Self::Applied => &[Some(Applied)],
            Self::NotApplied => &[None, Some(Failed), Some(Reverted)],
            Self::NotAppliedOrStarted => &[None, Some(Failed), Some(Reverted), Some(Started)],
            Self::Started => &[Some(Started)],
        }
    }

    fn allows(self, status: Option<RevisionStatus>) -> bool {
        self.allowed().contains(&status)
    }
}

/// A guard that did not hold: which revision, what was expected, what was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardViolation {
    pub version: String,
    pub expected: Expect,
    pub found: Option<RevisionStatus>,
}

impl Guard {
    pub fn require(mut self, version: &str, expect: Expect) -> Self {
        self.expectations.push((version.to_owned(), expect));
        self
    }

    pub fn versions(&self) -> Vec<String> {
        self.expectations
            .iter()
            .map(|(version, _)| version.clone())
            .collect()
    }

    /// Checks the statuses read inside the transaction.
    pub fn check(&self, observed: &HashMap<String, RevisionStatus>) -> Result<(), GuardViolation> {
        for (version, expect) in &self.expectations {
            let found = observed.get(version).copied();
            if !expect.allows(found) {
                return Err(GuardViolation {
                    version: version.clone(),
                    expected: *expect,
                    found,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_reports_the_first_unmet_expectation() {
        let guard = Guard::default()
            .require("1", Expect::Applied)
            .require("2", Expect::NotApplied);
        let mut observed = HashMap::from([("1".to_owned(), RevisionStatus::Applied)]);
        assert_eq!(guard.check(&observed), Ok(()));
        observed.insert("2".to_owned(), RevisionStatus::Reverted);
        assert_eq!(guard.check(&observed), Ok(()));
        observed.insert("2".to_owned(), RevisionStatus::Applied);
        let violation = guard.check(&observed).expect_err("2 is applied");
        assert_eq!(violation.version, "2");
        observed.remove("1");
        assert_eq!(guard.check(&observed).expect_err("1 missing").found, None);
    }
}
