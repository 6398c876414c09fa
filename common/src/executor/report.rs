//! What a run did, for people and for `--output json`.

use serde::Serialize;

use super::SchemaFingerprints;
use crate::fence::FenceToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepOutcome {
    Applied,
    /// An interrupted non-transactional revision, finished.
    Resumed,
    Reverted,
    /// Another run on the same shard (with an equal or newer token) got there first.
    AlreadyDone,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub version: String,
    pub name: String,
    pub outcome: StepOutcome,
    pub transactional: bool,
    pub statements_run: usize,
    pub duration_ms: u64,
    /// Attempts beyond the first, after lock conflicts.
    pub lock_retries: usize,
    /// The failure a revision that tolerates one (Liquibase `failOnError:false`) met: it is
    /// recorded as applied with this error, and the run goes on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tolerated_failure: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub shard: String,
    pub fence_token: FenceToken,
    pub steps: Vec<StepReport>,
    pub current_version: Option<String>,
    /// The schema before the first revision and after the last; none when nothing ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<SchemaFingerprints>,
}
