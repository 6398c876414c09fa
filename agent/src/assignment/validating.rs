//! Post-migration validation around a shard's revisions: the shard observed just before them
//! (the touched tables counted, the plan's `--verify-data` tables checksummed) and just after,
//! with the foreign keys the server does not enforce checked for violating rows. An
//! observation that loses the server runs again within the run's patience.

use fleetshift_common::engine::Timeouts;
use fleetshift_common::executor::Direction;
use fleetshift_common::proto::v1::{DataCheck, ErrorDetail, ErrorKind, ValidationReport};
use fleetshift_common::source::Revision;
use fleetshift_common::touched;
use fleetshift_common::validation::{self, Checks, Observed, ValidationError, Validator};

use super::wire::refused;
use crate::outage::{Patience, StepFailure};

/// What validates one shard's run.
pub(super) struct Validating<'a> {
    pub(super) validator: Validator<'a>,
    pub(super) verify_data: &'a [DataCheck],
    pub(super) timeouts: Timeouts,
    pub(super) shard_id: &'a str,
}

/// The shard before the revisions, and the tables they touch.
pub(super) struct Before {
    touched: Vec<String>,
    observed: Observed,
}

impl Validating<'_> {
    fn checks<'c>(&'c self, touched: &'c [String]) -> Checks<'c> {
        Checks {
            touched,
            verify_data: self.verify_data,
            lock_timeout: self.timeouts.lock_timeout,
            statement_timeout: self.timeouts.statement_timeout,
        }
    }

    /// Observes the shard before the revisions `revisions` (those a run in `direction` will
    /// apply or revert); a `--verify-data` table that cannot be checksummed refuses the run
    /// before anything changed.
    pub(super) async fn before(
        &self,
        revisions: &[&Revision],
        direction: Direction,
        patience: &mut Patience<'_>,
    ) -> Result<Before, ErrorDetail> {
        let touched = touched_tables(revisions, direction);
        let nothing_ran = |message: String| {
            refused(
                ErrorKind::Precondition,
                format!("shard {}: {message}; nothing ran", self.shard_id),
            )
        };
        let checks = self.checks(&touched);
        let observed = patience
            .persist("observing the shard before the revisions", || async {
                self.validator
                    .observe(&checks)
                    .await
                    .map_err(|error| step_failure(error, nothing_ran))
            })
            .await?;
        if let Some(refusal) = observed.refusal(&checks) {
            return Err(nothing_ran(refusal));
        }
        Ok(Before { touched, observed })
    }

    /// The report of the revisions that ran since `before`.
    pub(super) async fn after(
        &self,
        before: &Before,
        patience: &mut Patience<'_>,
    ) -> Result<ValidationReport, ErrorDetail> {
        let stand = |message: String| {
            refused(
                ErrorKind::Failed,
                format!("shard {}: {message}; the revisions stand", self.shard_id),
            )
        };
        let checks = self.checks(&before.touched);
        patience
            .persist("validating the shard after the revisions", || async {
                let after = self
                    .validator
                    .observe(&checks)
                    .await
                    .map_err(|error| step_failure(error, stand))?;
                let keys = self
                    .validator
                    .foreign_keys(&checks)
                    .await
                    .map_err(|error| step_failure(error, stand))?;
                Ok(validation::compare(
                    &before.observed,
                    &after,
                    self.verify_data,
                    keys,
                ))
            })
            .await
    }
}

/// A lost server is retried; anything else is final, as `refusal` words it.
fn step_failure(error: ValidationError, refusal: impl Fn(String) -> ErrorDetail) -> StepFailure {
    match error {
        ValidationError::ConnectionLost(detail) => StepFailure::Lost(detail),
        ValidationError::Refused(detail) => StepFailure::Final(refusal(detail)),
    }
}

/// The tables the scripts of `revisions` touch: their up scripts, or their down scripts when
/// reverting.
fn touched_tables(revisions: &[&Revision], direction: Direction) -> Vec<String> {
    touched::tables_of(revisions.iter().filter_map(|revision| match direction {
        Direction::Down => revision.down.as_ref(),
        Direction::Up => Some(&revision.up),
    }))
}
