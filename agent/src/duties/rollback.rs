//! When the agent reverts a shard on its own: the plan's triggers, read against how the
//! revisions went. A revision that failed (rolled back by its transaction, or out of lock
//! retries), one that ran longer than the plan's limit, or a baseline query that degraded past
//! the threshold. A run that was stopped, fenced out, could not reach the database or needs an
//! operator never triggers one: the shard is someone else's, or nobody can tell its state.

use std::time::Duration;

use fleetshift_common::error::{ErrorKind, ExecError};
use fleetshift_common::executor::{RunReport, StepOutcome};
use fleetshift_common::proto::v1::RollbackPolicy;

/// The plan's rollback triggers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Triggers {
    pub on_failure: bool,
    pub on_degradation: bool,
    pub revision_time_limit: Option<Duration>,
}

impl Triggers {
    pub fn from_policy(policy: Option<&RollbackPolicy>) -> Self {
        let Some(policy) = policy else {
            return Self::default();
        };
        Self {
            on_failure: policy.on_failure,
            on_degradation: policy.on_degradation,
            revision_time_limit: policy
                .revision_time_limit
                .and_then(|limit| Duration::try_from(limit).ok())
                .filter(|limit| !limit.is_zero()),
        }
    }

    /// Why the shard must go back, if it must. `degradation` describes the baseline queries
    /// that degraded after the revisions, and `invalid` what failed their validation, when
    /// anything did; a failed validation counts as a failure.
    pub fn reason(
        &self,
        outcome: &Result<RunReport, ExecError>,
        degradation: Option<&str>,
        invalid: Option<&str>,
    ) -> Option<String> {
        match outcome {
            // A shard too busy to go on is left where it is: reverting it would add to the load.
            Err(ExecError::Throttled { .. }) => None,
            Err(error) => (self.on_failure
                && matches!(error.kind(), ErrorKind::Failed | ErrorKind::LockTimeout))
            .then(|| format!("a revision failed: {error}")),
            Ok(report) => {
                let slow = self.revision_time_limit.and_then(|limit| {
                    report
                        .steps
                        .iter()
                        .find(|step| {
                            matches!(step.outcome, StepOutcome::Applied | StepOutcome::Resumed)
                                && Duration::from_millis(step.duration_ms) > limit
                        })
                        .map(|step| {
                            format!(
                                "revision {}_{} ran {:.1}s, over the plan's limit of {:.1}s",
                                step.version,
                                step.name,
                                Duration::from_millis(step.duration_ms).as_secs_f64(),
                                limit.as_secs_f64()
                            )
                        })
                });
                let degraded = degradation
                    .filter(|_| self.on_degradation)
                    .map(|described| format!("performance degraded: {described}"));
                let invalid = invalid
                    .filter(|_| self.on_failure)
                    .map(|failures| format!("post-migration validation failed: {failures}"));
                slow.or(invalid).or(degraded)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use fleetshift_common::executor::StepReport;

    use super::*;
    use fleetshift_common::fence::FenceToken;

    fn report(duration_ms: u64) -> RunReport {
        RunReport {
            shard: "s".to_owned(),
            fence_token: FenceToken::from_raw(1),
            steps: vec![StepReport {
                version: "2".to_owned(),
                name: "index".to_owned(),
                outcome: StepOutcome::Applied,
                transactional: true,
                statements_run: 1,
                duration_ms,
                lock_retries: 0,
                tolerated_failure: None,
            }],
            current_version: Some("2".to_owned()),
            schema: None,
        }
    }

    fn failure(kind: ErrorKind) -> ExecError {
        match kind {
            ErrorKind::Stopped => ExecError::Stopped {
                shard: "s".to_owned(),
                next: String::new(),
                reason: "told to".to_owned(),
            },
            _ => ExecError::Database {
                shard: "s".to_owned(),
                context: "revision 2".to_owned(),
                detail: "boom".to_owned(),
            },
        }
    }

    #[test]
    fn each_trigger_fires_only_when_the_plan_asks_for_it() {
        let none = Triggers::default();
        let all = Triggers {
            on_failure: true,
            on_degradation: true,
            revision_time_limit: Some(Duration::from_secs(1)),
        };
        let failed = Err(failure(ErrorKind::Failed));
        assert!(none.reason(&failed, None, None).is_none());
        assert!(
            all.reason(&failed, None, None)
                .expect("failure")
                .contains("boom")
        );
        let stopped = Err(failure(ErrorKind::Stopped));
        assert!(
            all.reason(&stopped, None, None).is_none(),
            "a stop is obeyed"
        );
        let throttled = Err(ExecError::Throttled {
            shard: "s".to_owned(),
            next: "revision 2".to_owned(),
            detail: "replica lag 9.0s > 5s".to_owned(),
            waited_secs: 1800,
        });
        assert!(
            all.reason(&throttled, None, None).is_none(),
            "a busy shard is not reverted"
        );

        let slow = Ok(report(1_500));
        assert!(none.reason(&slow, None, None).is_none());
        assert!(
            all.reason(&slow, None, None)
                .expect("slow")
                .contains("ran 1.5s, over the plan's limit of 1.0s")
        );
        let quick = Ok(report(500));
        assert!(all.reason(&quick, None, None).is_none());
        assert!(none.reason(&quick, Some("q 3x"), None).is_none());
        assert_eq!(
            all.reason(&quick, Some("q 3x"), None).as_deref(),
            Some("performance degraded: q 3x")
        );
        let invalid = Some("--verify-data orders: the data changed");
        assert!(none.reason(&quick, None, invalid).is_none());
        assert_eq!(
            all.reason(&quick, None, invalid).as_deref(),
            Some("post-migration validation failed: --verify-data orders: the data changed"),
            "a failed validation is a failure"
        );
    }
}
