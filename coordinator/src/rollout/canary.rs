//! The last check of post-migration validation, which only the coordinator can make: a shard
//! that reached a version must have the schema the plan's canary reached at that version (the
//! first of the plan's shards to get there). A shard whose schema differs fails with the
//! differences, object by object; its revisions stand.

use fleetshift_common::proto::v1::{
    ErrorDetail, ErrorKind, ShardState, ShardTask, ValidationReport,
};
use fleetshift_common::schema::Fingerprint;

use crate::schemas;
use crate::store::{Store, StoreError};

/// Differences listed in a failure; the rest are counted.
const LISTED: usize = 20;

/// The canary `task` is compared with among the plan's `tasks`: the first other task to
/// succeed at the same version with a schema on record.
pub fn of<'t>(
    task: &ShardTask,
    tasks: impl IntoIterator<Item = &'t ShardTask>,
) -> Option<&'t ShardTask> {
    tasks
        .into_iter()
        .filter(|other| {
            other.shard_id != task.shard_id
                && other.state == i32::from(ShardState::Succeeded)
                && other.current_version == task.current_version
                && other
                    .schema
                    .as_ref()
                    .is_some_and(|schema| !schema.after.is_empty())
        })
        .min_by_key(|other| {
            let at = other.finished_at.unwrap_or_default();
            (at.seconds, at.nanos, other.shard_id.clone())
        })
}

/// `task`, which succeeded, compared with `canary`: its validation names the canary, and a
/// different schema fails it with the differences (read from the snapshots the fleet keeps).
pub async fn compare<S: Store>(
    store: &S,
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
    use fleetshift_common::proto::v1::SchemaFingerprints;

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
        let tasks = [late.clone(), first.clone(), other_version, failed];
        let ours = task("e", "3", "f2", 30);
        assert_eq!(of(&ours, &tasks).map(|t| t.shard_id.as_str()), Some("b"));
        assert_eq!(
            of(&first, &tasks).map(|t| t.shard_id.as_str()),
            Some("a"),
            "never itself"
        );
        let unrecorded = task("e", "4", "f2", 30);
        assert!(of(&unrecorded, &tasks).is_none(), "nobody else at 4");
    }
}
