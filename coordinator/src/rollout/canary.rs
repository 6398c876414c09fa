//! The last check of post-migration validation, which only the coordinator can make: a shard
//! that reached a version must have the schema the plan's canary reached at that version (the
//! first of the plan's shards to get there). A shard whose schema differs fails with the
//! differences, object by object; its revisions stand. Shards the plan took with their drift
//! allowed (`--allow-drift-shards`) never set the schema, and a difference of theirs is a note.

use fleetshift_common::proto::v1::{
    ErrorDetail, ErrorKind, Plan, ShardState, ShardTask, ValidationReport,
};
use fleetshift_common::schema::Fingerprint;

use crate::schemas;
use crate::store::{Store, StoreError};

/// Differences listed in a failure; the rest are counted.
const LISTED: usize = 20;

/// Whether `task` may be a canary at its version: it succeeded with a schema on record.
pub fn candidate(task: &ShardTask) -> bool {
    task.state == i32::from(ShardState::Succeeded)
        && task
            .schema
            .as_ref()
            .is_some_and(|schema| !schema.after.is_empty())
}

/// When `task` finished: candidates are taken first to finish first (by shard id on a tie).
pub fn finished(task: &ShardTask) -> (i64, i32) {
    let at = task.finished_at.unwrap_or_default();
    (at.seconds, at.nanos)
}

/// The canary `task` is compared with among `candidates`, the plan's [`candidate`]s at
/// `task`'s version in the order they finished: the first that is another shard and whose
/// drift the plan did not allow.
pub fn of<'t>(
    plan: &Plan,
    task: &ShardTask,
    candidates: impl IntoIterator<Item = &'t ShardTask>,
) -> Option<&'t ShardTask> {
    candidates.into_iter().find(|other| {
        other.shard_id != task.shard_id && drift_allowed(plan, &other.shard_id).is_none()
    })
}

/// Why `plan` took `shard` with a schema that differed from the fleet's, when it did.
fn drift_allowed<'p>(plan: &'p Plan, shard: &str) -> Option<&'p str> {
    plan.drift_allowed
        .iter()
        .find(|allowed| allowed.shard_id == shard)
        .map(|allowed| allowed.reason.as_str())
}

/// `task` of `plan`, which succeeded, compared with `canary`: its validation names the
/// canary, and a different schema fails it with the differences (read from the snapshots the
/// fleet keeps), or is noted when the plan allowed the shard's drift.
pub async fn compare<S: Store>(
    store: &S,
    plan: &Plan,
    mut task: ShardTask,
    canary: &ShardTask,
) -> Result<ShardTask, StoreError> {
    let (Some(ours), Some(theirs)) = (&task.schema, &canary.schema) else {
        return Ok(task);
    };
    let (ours, theirs) = (ours.after.clone(), theirs.after.clone());
    let validation = task.validation.get_or_insert_with(|| ValidationReport {
        passed: true,
        ..ValidationReport::default()
    });
    validation.canary_shard.clone_from(&canary.shard_id);
    validation.canary_fingerprint.clone_from(&theirs);
    if ours == theirs || ours.is_empty() {
        return Ok(task);
    }
    let differences = differences(store, &ours, &theirs).await?;
    let failure = format!(
        "schema {} differs from canary shard {}'s {} at version {}: {differences}",
        short(&ours),
        canary.shard_id,
        short(&theirs),
        task.current_version
    );
    if let Some(reason) = drift_allowed(plan, &task.shard_id) {
        validation.notes.push(format!(
            "{failure} (its drift was allowed when the plan was made: {reason})"
        ));
        return Ok(task);
    }
    validation.passed = false;
    validation.failures.push(failure.clone());
    task.state = ShardState::Failed.into();
    task.error = Some(ErrorDetail {
        kind: ErrorKind::Failed.into(),
        message: format!(
            "shard {}: post-migration validation failed: {failure}; the revisions stand: compare with `fleetshift schema diff --shard {} --shard {}`, then fix the shard or revert it with `fleetshift rollback`",
            task.shard_id, task.shard_id, canary.shard_id
        ),
    });
    Ok(task)
}

/// The differences of the snapshot `ours` against `theirs`, one per object, for a message.
async fn differences<S: Store>(store: &S, ours: &str, theirs: &str) -> Result<String, StoreError> {
    let load = |hex: &str| {
        let fingerprint = Fingerprint::from_hex(hex);
        async move {
            match fingerprint {
                Some(fingerprint) => schemas::load(store, &fingerprint).await,
                None => Ok(None),
            }
        }
    };
    let (Some(ours), Some(theirs)) = (load(ours).await?, load(theirs).await?) else {
        return Ok("(a snapshot is not kept, so the objects are not listed)".to_owned());
    };
    let differences = ours.diff(&theirs);
    let mut listed: Vec<String> = differences
        .iter()
        .take(LISTED)
        .map(ToString::to_string)
        .collect();
    if differences.len() > LISTED {
        listed.push(format!("and {} more", differences.len() - LISTED));
    }
    Ok(listed.join("; "))
}

fn short(fingerprint: &str) -> &str {
    fingerprint.get(..12).unwrap_or(fingerprint)
}

#[cfg(test)]
mod tests {
    use fleetshift_common::proto::v1::{AssignmentResult, DriftAllowance, SchemaFingerprints};
    use fleetshift_common::schema::{ObjectKind, Snapshot, attributes, wire};

    use crate::store::MemoryStore;

    use super::*;

    fn task(shard: &str, version: &str, after: &str, finished: i64) -> ShardTask {
        ShardTask {
            shard_id: shard.to_owned(),
            state: ShardState::Succeeded.into(),
            current_version: version.to_owned(),
            schema: Some(SchemaFingerprints {
                after: after.to_owned(),
                ..SchemaFingerprints::default()
            }),
            finished_at: Some(prost_types::Timestamp {
                seconds: finished,
                nanos: 0,
            }),
            ..ShardTask::default()
        }
    }

    #[test]
    fn the_canary_is_the_first_other_shard_to_succeed_at_the_version() {
        let late = task("a", "3", "f1", 20);
        let first = task("b", "3", "f1", 10);
        let other_version = task("c", "2", "f0", 1);
        let failed = ShardTask {
            state: ShardState::Failed.into(),
            ..task("d", "3", "f9", 2)
        };
        let mut model = crate::rollout::model::Model::default();
        for (revision, each) in [late.clone(), first.clone(), other_version, failed]
            .into_iter()
            .enumerate()
        {
            let shard = each.shard_id.clone();
            model.record_task("p1", &shard, each, i64::try_from(revision).expect("small"));
        }
        let tasks = model.tasks.get("p1").expect("recorded");
        let plan = Plan::default();
        let ours = task("e", "3", "f2", 30);
        let canary = |task: &ShardTask| {
            of(&plan, task, tasks.candidates(&task.current_version)).map(|t| t.shard_id.as_str())
        };
        assert_eq!(canary(&ours), Some("b"));
        assert_eq!(canary(&first), Some("a"), "never itself");
        let unrecorded = task("e", "4", "f2", 30);
        assert!(canary(&unrecorded).is_none(), "nobody else at 4");
        let allowed = Plan {
            drift_allowed: vec![DriftAllowance {
                shard_id: "b".to_owned(),
                reason: "hotfix".to_owned(),
                ..DriftAllowance::default()
            }],
            ..Plan::default()
        };
        assert_eq!(
            of(&allowed, &ours, tasks.candidates("3")).map(|t| t.shard_id.as_str()),
            Some("a"),
            "a shard whose drift was allowed never sets the schema"
        );
    }

    /// Two schemas kept in `store`: `users`, and `users` with an index; their fingerprints.
    async fn kept(store: &MemoryStore) -> (String, String) {
        let mut plain = Snapshot::default();
        plain.insert(ObjectKind::Table, "public.users", attributes([]));
        let mut indexed = plain.clone();
        indexed.insert(ObjectKind::Index, "public.users_email_idx", attributes([]));
        let mut fingerprints = Vec::new();
        for snapshot in [plain, indexed] {
            let fingerprint = snapshot.fingerprint().to_string();
            let mut result = AssignmentResult {
                schema: Some(SchemaFingerprints {
                    after: fingerprint.clone(),
                    ..SchemaFingerprints::default()
                }),
                schema_snapshot: wire::pack(&snapshot),
                ..AssignmentResult::default()
            };
            schemas::keep_left(store, "a", &mut result)
                .await
                .expect("kept");
            assert!(
                result.schema_snapshot.is_empty(),
                "not stored with the result"
            );
            fingerprints.push(fingerprint);
        }
        (fingerprints[0].clone(), fingerprints[1].clone())
    }

    #[tokio::test]
    async fn a_different_schema_fails_unless_the_plan_allowed_the_shards_drift() {
        let store = MemoryStore::new();
        let (plain, indexed) = kept(&store).await;
        let canary = task("users-0", "1", &plain, 1);
        let same = compare(
            &store,
            &Plan::default(),
            task("users-1", "1", &plain, 2),
            &canary,
        )
        .await
        .expect("compared");
        assert_eq!(same.state, i32::from(ShardState::Succeeded));
        let report = same.validation.expect("report");
        assert!(report.passed);
        assert_eq!(report.canary_shard, "users-0");

        let differs = task("users-2", "1", &indexed, 3);
        let failed = compare(&store, &Plan::default(), differs.clone(), &canary)
            .await
            .expect("compared");
        assert_eq!(failed.state, i32::from(ShardState::Failed));
        let message = failed.error.expect("error").message;
        assert!(
            message.contains("differs from canary shard users-0's")
                && message.contains("at version 1: index public.users_email_idx: extra"),
            "{message}"
        );
        assert!(!failed.validation.expect("report").passed);

        let allowed = Plan {
            drift_allowed: vec![DriftAllowance {
                shard_id: "users-2".to_owned(),
                reason: "hotfix 4711".to_owned(),
                ..DriftAllowance::default()
            }],
            ..Plan::default()
        };
        let noted = compare(&store, &allowed, differs, &canary)
            .await
            .expect("compared");
        assert_eq!(noted.state, i32::from(ShardState::Succeeded));
        let report = noted.validation.expect("report");
        assert!(report.passed);
        assert!(
            report.notes[0]
                .ends_with("(its drift was allowed when the plan was made: hotfix 4711)"),
            "{:?}",
            report.notes
        );
    }
}
