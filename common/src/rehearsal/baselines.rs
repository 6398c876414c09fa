//! The plan's baseline queries on the scratch database: timed before the revisions and after
//! them, with the thresholds a rollout uses ([`crate::baseline`]). A query whose median grew
//! past the threshold, or that fails only afterwards, fails the rehearsal.

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::baseline::{BaselineError, Baselines};
use crate::engine::CountedPool;
use crate::proto::v1::{BaselineMeasured, BaselinePhase, BaselinePolicy};

/// One baseline query on the sample, before and after the revisions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineComparison {
    pub query: String,
    /// Medians in milliseconds.
    pub before_ms: f64,
    pub after_ms: f64,
    /// after / before (0 when not comparable).
    pub ratio: f64,
    pub degraded: bool,
    /// Its error after the revisions, when it failed then.
    pub error: Option<String>,
}

/// The policy's queries timed on `pool` before the revisions; `None` without queries.
pub(super) async fn before(
    policy: Option<&BaselinePolicy>,
    pool: &CountedPool,
) -> Result<Option<BaselineMeasured>, BaselineError> {
    let Some(baselines) = Baselines::from_policy(policy) else {
        return Ok(None);
    };
    let never = CancellationToken::new();
    baselines
        .measure(pool, BaselinePhase::Before, None, &never)
        .await
        .map(Some)
}

/// The same queries after the revisions, compared with `before`; each query's comparison and
/// the degradation, described, when there is one.
pub(super) async fn after(
    policy: Option<&BaselinePolicy>,
    pool: &CountedPool,
    before: &BaselineMeasured,
) -> Result<(Vec<BaselineComparison>, Option<String>), BaselineError> {
    let Some(baselines) = Baselines::from_policy(policy) else {
        return Ok((Vec::new(), None));
    };
    let never = CancellationToken::new();
    let after = baselines
        .measure(pool, BaselinePhase::After, Some(before), &never)
        .await?;
    let comparisons = after
        .queries
        .iter()
        .map(|timing| {
            let earlier = before
                .queries
                .iter()
                .find(|earlier| earlier.name == timing.name);
            BaselineComparison {
                query: timing.name.clone(),
                before_ms: earlier.map_or(0.0, |earlier| earlier.p50_ms),
                after_ms: timing.p50_ms,
                ratio: timing.p50_ratio,
                degraded: timing.degraded,
                error: (!timing.error.is_empty()).then(|| timing.error.clone()),
            }
        })
        .collect();
    Ok((comparisons, baselines.degradation(&after)))
}
