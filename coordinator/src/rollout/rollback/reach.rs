//! Where a rollback takes each shard, and whether the plan's down scripts can take it there.
//! Every revision a shard would revert needs a down script (in every engine's files); when one
//! has none, the rollback is refused at planning, naming those revisions and the lowest version
//! the plan can reach (`--to`), instead of failing on the shards once approved.

use fleetshift_common::ledger::BASE;
use fleetshift_common::proto::v1::{Plan, ShardTask};
use fleetshift_common::source::MigrationSet;

use crate::rollout::RolloutError;

/// Each task's shard with the version it goes back to: its version before the plan, or `to`
/// where that is later. Refused when a revision on the way has no down script.
pub fn destinations(
    set: &MigrationSet,
    plan: &Plan,
    tasks: &[&ShardTask],
    to: Option<&str>,
) -> Result<Vec<(String, String)>, RolloutError> {
    let place = |version: &str, what: &dyn Fn() -> String| place(set, plan, version, what);
    let target = place(&plan.target_version, &|| "its target".to_owned())?;
    let to = match to {
        None => None,
        Some(version) => {
            let at = place(version, &|| format!("--to {version}"))?;
            if at > target {
                return Err(RolloutError::BadRequest(format!(
                    "--to {version} is after plan {}'s target {}: a rollback only goes back",
                    plan.plan_id, plan.target_version
                )));
            }
            Some(at)
        }
    };
    let mut destinations = Vec::new();
    let mut irreversible: Vec<usize> = Vec::new();
    for task in tasks {
        let before = place(&task.previous_version, &|| {
            format!("shard {}'s version before the plan", task.shard_id)
        })?;
        let reached = if task.current_version.is_empty() {
            target
        } else {
            place(&task.current_version, &|| {
                format!("shard {}'s version", task.shard_id)
            })?
        };
        // `None` (base) sorts before every revision.
        let back_to = to.map_or(before, |at| before.max(at));
        let reverted = back_to.map_or(0, |index| index + 1)..reached.map_or(0, |index| index + 1);
        irreversible.extend(reverted.filter(|&index| !reversible(set, index)));
        let version = match back_to {
            Some(index) if back_to != before => set.revisions[index].version.as_str().to_owned(),
            _ => task.previous_version.clone(),
        };
        destinations.push((task.shard_id.clone(), version));
    }
    irreversible.sort_unstable();
    irreversible.dedup();
    match irreversible.last() {
        None => Ok(destinations),
        Some(&newest) => Err(refusal(set, plan, &irreversible, newest, target)),
    }
}

/// Where `version` stands in `set`: `None` before every revision (`base`).
fn place(
    set: &MigrationSet,
    plan: &Plan,
    version: &str,
    what: &dyn Fn() -> String,
) -> Result<Option<usize>, RolloutError> {
    if version == BASE {
        return Ok(None);
    }
    set.position(version).map(Some).ok_or_else(|| {
        RolloutError::BadRequest(format!(
            "{} ({version}) is not a version of plan {}'s migration set",
            what(),
            plan.plan_id
        ))
    })
}

/// Whether the revision at `index` has a down script in every engine's files.
fn reversible(set: &MigrationSet, index: usize) -> bool {
    std::iter::once(set)
        .chain(set.engine_variants().map(|(_, variant)| variant))
        .all(|each| {
            each.revisions
                .get(index)
                .is_none_or(|revision| revision.down.is_some())
        })
}

fn refusal(
    set: &MigrationSet,
    plan: &Plan,
    irreversible: &[usize],
    newest: usize,
    target: Option<usize>,
) -> RolloutError {
    let named: Vec<String> = irreversible
        .iter()
        .map(|&index| {
            let revision = &set.revisions[index];
            match &revision.irreversible {
                Some(why) => format!("{} ({why})", revision.label()),
                None => revision.label(),
            }
        })
        .collect();
    let reachable = set.revisions[newest].version.as_str();
    let next = if Some(newest) == target {
        "its newest revision cannot be reverted, so the plan cannot be rolled back; write a forward fix and plan it".to_owned()
    } else {
        format!(
            "`fleetshift rollback {} --to {reachable}` goes back as far as the down scripts do ({reachable} stays applied); or write the missing down scripts (or mark a deliberate no-op with `-- fleetshift:nothing-to-undo`) and plan them as a new set",
            plan.plan_id
        )
    };
    RolloutError::BadRequest(format!(
        "plan {} cannot be rolled back that far: {} revision(s) it would revert have no down script: {}\nnext: {next}",
        plan.plan_id,
        named.len(),
        named.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Revisions 1 to 4, those in `irreversible` without a down script.
    fn set(directory: &Path, irreversible: &[u32]) -> MigrationSet {
        for version in 1..=4 {
            let write = |name: String, sql: String| {
                std::fs::write(directory.join(name), sql).expect("write");
            };
            write(
                format!("{version}_t{version}.up.sql"),
                format!("CREATE TABLE t{version} (id int);"),
            );
            if !irreversible.contains(&version) {
                write(
                    format!("{version}_t{version}.down.sql"),
                    format!("DROP TABLE t{version};"),
                );
            }
        }
        MigrationSet::load(directory, None).expect("set")
    }

    fn task(shard: &str, before: &str) -> ShardTask {
        ShardTask {
            shard_id: shard.to_owned(),
            previous_version: before.to_owned(),
            ..ShardTask::default()
        }
    }

    fn plan() -> Plan {
        Plan {
            plan_id: "p1".to_owned(),
            target_version: "4".to_owned(),
            ..Plan::default()
        }
    }

    #[test]
    fn each_shard_goes_back_to_its_own_version_or_to_the_later_to() {
        let directory = tempfile::tempdir().expect("dir");
        let set = set(directory.path(), &[]);
        let (a, b) = (task("a", "base"), task("b", "2"));
        let back = destinations(&set, &plan(), &[&a, &b], None).expect("reversible");
        assert_eq!(
            back,
            [("a".into(), "base".into()), ("b".into(), "2".into())]
        );
        let back = destinations(&set, &plan(), &[&a, &b], Some("1")).expect("reversible");
        assert_eq!(back, [("a".into(), "1".into()), ("b".into(), "2".into())]);
        let after = destinations(&set, &plan(), &[&a], Some("9")).expect_err("unknown");
        assert!(
            after.to_string().contains("--to 9 (9) is not a version"),
            "{after}"
        );
    }

    #[test]
    fn revisions_without_down_scripts_are_named_with_the_version_it_can_reach() {
        let directory = tempfile::tempdir().expect("dir");
        let set = set(directory.path(), &[1, 3]);
        let (a, b) = (task("a", "base"), task("b", "2"));
        let refused = destinations(&set, &plan(), &[&a, &b], None)
            .expect_err("irreversible")
            .to_string();
        assert!(
            refused.contains("2 revision(s) it would revert have no down script: 1_t1, 3_t3")
                && refused.contains("`fleetshift rollback p1 --to 3`"),
            "{refused}"
        );
        let back = destinations(&set, &plan(), &[&a, &b], Some("3")).expect("reachable");
        assert_eq!(back, [("a".into(), "3".into()), ("b".into(), "3".into())]);

        let newest = set_with_newest_irreversible();
        let refused = destinations(&newest.1, &plan(), &[&b], None)
            .expect_err("nothing reversible")
            .to_string();
        assert!(
            refused.contains("its newest revision cannot be reverted"),
            "{refused}"
        );
    }

    fn set_with_newest_irreversible() -> (tempfile::TempDir, MigrationSet) {
        let directory = tempfile::tempdir().expect("dir");
        let loaded = set(directory.path(), &[4]);
        (directory, loaded)
    }
}
