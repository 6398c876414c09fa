//! Which of a source plan's shards a rollback or retry takes: those its own rule keeps, then
//! those `--shards` names (ids or patterns where `*` matches any run of characters); every
//! other is left out with the reason.

use fleetshift_common::proto::v1::{LeftOut, Plan, ShardTask};
use fleetshift_common::selector::id_matches as matches;

use super::{RolloutError, waves};

/// `source`'s tasks that `why_not` keeps (`None`), and the others with its reason.
pub fn sift(
    source: &Plan,
    why_not: impl Fn(&ShardTask) -> Option<String>,
) -> (Vec<&ShardTask>, Vec<LeftOut>) {
    let mut kept = Vec::new();
    let mut left_out = Vec::new();
    for task in waves::planned_tasks(source) {
        match why_not(task) {
            Some(reason) => left_out.push(LeftOut {
                shard_id: task.shard_id.clone(),
                reason,
            }),
            None => kept.push(task),
        }
    }
    (kept, left_out)
}

/// The tasks `patterns` name (all of them when empty), and the others as left out. Refused
/// when a pattern names none of `tasks`, listing them as `what` (e.g. "shard plan p1 moved").
pub fn named<'p>(
    tasks: Vec<&'p ShardTask>,
    patterns: &[String],
    what: &str,
) -> Result<(Vec<&'p ShardTask>, Vec<LeftOut>), RolloutError> {
    if let Some(unmatched) = patterns
        .iter()
        .find(|pattern| !tasks.iter().any(|task| matches(pattern, &task.shard_id)))
    {
        return Err(RolloutError::BadRequest(format!(
            "--shards {unmatched} matches no {what} ({})",
            listing(&tasks)
        )));
    }
    let (taken, unnamed): (Vec<&ShardTask>, Vec<&ShardTask>) =
        tasks.into_iter().partition(|task| {
            patterns.is_empty()
                || patterns
                    .iter()
                    .any(|pattern| matches(pattern, &task.shard_id))
        });
    let left_out = unnamed
        .into_iter()
        .map(|task| LeftOut {
            shard_id: task.shard_id.clone(),
            reason: "not named by --shards".to_owned(),
        })
        .collect();
    Ok((taken, left_out))
}

fn listing(tasks: &[&ShardTask]) -> String {
    if tasks.is_empty() {
        return "none".to_owned();
    }
    let ids: Vec<&str> = tasks.iter().map(|task| task.shard_id.as_str()).collect();
    ids.join(", ")
}
