//! An assignment as the agent runs it: the wire message checked once, where a run begins, so
//! nothing deeper guesses at a missing field.

use std::collections::HashMap;
use std::sync::Arc;

use fleetshift_common::fence::FenceToken;
use fleetshift_common::proto::v1::{
    Assignment, Direction, ExecutionLimits, HostDuties, MigrationSet,
};
use fleetshift_common::schema_baseline::SchemaBaseline;

use super::window_gate::WindowGate;

/// A checked assignment.
#[derive(Debug, Clone)]
pub struct Order {
    pub assignment_id: String,
    pub plan_id: String,
    pub shard_id: String,
    /// The claim's token: positive.
    pub fence_token: FenceToken,
    /// Up or down, never unspecified.
    pub direction: Direction,
    /// `None`: the set's last version.
    pub target_version: Option<String>,
    /// The plan's record of the shard's version before it (down only); empty: what the run
    /// finds.
    pub revert_to: String,
    pub set: MigrationSet,
    pub limits: ExecutionLimits,
    pub duties: HostDuties,
    pub trace_context: HashMap<String, String>,
    /// The shard's maintenance windows and the revisions' estimates; none: any time.
    pub gate: Option<Arc<WindowGate>>,
    /// A verified schema baseline to seed the shard from when its ledger is empty.
    pub baseline: Option<SchemaBaseline>,
}

/// What is wrong with an assignment: the field, and how.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("assignment {assignment:?}: {field} {problem}")]
pub struct InvalidAssignment {
    pub assignment: String,
    pub field: &'static str,
    pub problem: &'static str,
}

impl TryFrom<Assignment> for Order {
    type Error = InvalidAssignment;

    fn try_from(assignment: Assignment) -> Result<Self, Self::Error> {
        let invalid = |field, problem| InvalidAssignment {
            assignment: assignment.assignment_id.clone(),
            field,
            problem,
        };
        for (field, value) in [
            ("assignment_id", &assignment.assignment_id),
            ("plan_id", &assignment.plan_id),
            ("shard_id", &assignment.shard_id),
        ] {
            if value.is_empty() {
                return Err(invalid(field, "is missing"));
            }
        }
        let fence_token = FenceToken::from_wire(assignment.fence_token).ok_or_else(|| {
            invalid(
                "fence_token",
                "is not a claim's token (it must be positive)",
            )
        })?;
        let direction = match Direction::try_from(assignment.direction) {
            Ok(direction @ (Direction::Up | Direction::Down)) => direction,
            Ok(Direction::Unspecified) => return Err(invalid("direction", "is missing")),
            Err(_) => return Err(invalid("direction", "is not up or down")),
        };
        let set = assignment
            .migration_set
            .ok_or_else(|| invalid("migration_set", "is missing"))?;
        let baseline = assignment
            .baseline
            .as_ref()
            .map(SchemaBaseline::from_wire)
            .transpose()
            .map_err(|_| {
                invalid(
                    "baseline",
                    "is not whole (its SQL, version or fingerprint is missing)",
                )
            })?;
        let gate = WindowGate::new(&assignment.windows, &assignment.estimates)
            .map_err(|_| invalid("windows", "cannot be read"))?
            .map(Arc::new);
        Ok(Self {
            fence_token,
            direction,
            target_version: Some(assignment.target_version).filter(|target| !target.is_empty()),
            revert_to: assignment.revert_to,
            set,
            limits: assignment.limits.unwrap_or_default(),
            duties: assignment.duties.unwrap_or_default(),
            trace_context: assignment.trace_context,
            gate,
            baseline,
            assignment_id: assignment.assignment_id,
            plan_id: assignment.plan_id,
            shard_id: assignment.shard_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> Assignment {
        Assignment {
            assignment_id: "p1~s1~7".to_owned(),
            plan_id: "p1".to_owned(),
            shard_id: "s1".to_owned(),
            fence_token: 7,
            direction: Direction::Up.into(),
            migration_set: Some(MigrationSet::default()),
            ..Assignment::default()
        }
    }

    #[test]
    fn a_complete_assignment_becomes_an_order_with_defaults_for_what_may_be_absent() {
        let order = Order::try_from(valid()).expect("valid");
        assert_eq!(order.fence_token, FenceToken::from_raw(7));
        assert_eq!(order.direction, Direction::Up);
        assert_eq!(order.target_version, None);
        assert_eq!(order.limits, ExecutionLimits::default());
    }

    /// A change that breaks an assignment.
    type Breakage = fn(&mut Assignment);

    #[test]
    fn a_missing_field_is_named() {
        let cases: [(Breakage, &str); 5] = [
            (|a| a.shard_id.clear(), "shard_id is missing"),
            (|a| a.fence_token = 0, "fence_token is not a claim's token"),
            (
                |a| a.direction = Direction::Unspecified.into(),
                "direction is missing",
            ),
            (|a| a.direction = 42, "direction is not up or down"),
            (|a| a.migration_set = None, "migration_set is missing"),
        ];
        for (break_it, expected) in cases {
            let mut assignment = valid();
            break_it(&mut assignment);
            let error = Order::try_from(assignment).expect_err(expected);
            assert!(error.to_string().contains(expected), "{error}");
            assert!(
                error.to_string().starts_with("assignment \"p1~s1~7\""),
                "{error}"
            );
        }
    }
}
