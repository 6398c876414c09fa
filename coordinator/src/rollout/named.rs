//! The shards `--shards` names among those a rollback or retry could take: ids or patterns
//! where `*` matches any run of characters; the rest of those are left out, said so.

use fleetshift_common::proto::v1::{LeftOut, ShardTask};
use fleetshift_common::selector::id_matches as matches;

use super::RolloutError;

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
