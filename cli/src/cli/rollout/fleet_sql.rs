//! `fleetshift plan <dir> --sql`: the fleet's dry run. The shards the selector matches (as the
//! coordinator knows them now) are grouped by the version they are at and their engine; each
//! group gets exactly the SQL its shards would run to the target, per revision and
//! transaction mode, as `migrate up --dry-run` prints it for one database. No plan is made.

use std::collections::BTreeMap;
use std::process::ExitCode;

use fleetshift_common::engine::Timeouts;
use fleetshift_common::error::ErrorKind;
use fleetshift_common::executor::Direction;
use fleetshift_common::ledger::{BASE, shown_version};
use fleetshift_common::proto::v1::{Engine as WireEngine, ListShardsRequest, ShardSummary};
use fleetshift_common::selector::id_matches;
use fleetshift_common::source::{Engine, MigrationSet, Revision};
use serde_json::json;

use super::PlanArgs;
use crate::cli::Output;
use crate::cli::dry_run::DryRun;
use crate::cli::fleet::{client, refused};
use crate::cli::render;
use crate::exit;

/// Shards at one version, of one engine.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Group {
    engine: Engine,
    /// Empty: no revision applied.
    version: String,
}

pub async fn print(arguments: &PlanArgs, set: &MigrationSet) -> ExitCode {
    let output = arguments.output;
    let target = match target_index(set, arguments.target.as_deref()) {
        Ok(index) => index,
        Err(message) => return bad_input(output, &message),
    };
    let mut client = match client(&arguments.connection, output).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    let request = ListShardsRequest {
        selector: arguments.selector.iter().cloned().collect(),
    };
    let listed = match client.list_shards(request).await {
        Ok(response) => response.into_inner().shards,
        Err(status) => return refused(&arguments.connection, output, &status),
    };
    let groups = groups(&listed, &arguments.shards);
    if groups.is_empty() {
        return bad_input(
            output,
            "no shard matches the selector and --shard; `fleetshift shards` lists them",
        );
    }
    let timeouts = Timeouts {
        lock_timeout: arguments.lock_timeout,
        statement_timeout: arguments.statement_timeout,
        ..Timeouts::default()
    };
    let mut documents = Vec::new();
    for (group, shards) in &groups {
        let engine_set = set.for_engine(group.engine);
        let pending = match pending(engine_set, &group.version, target) {
            Ok(pending) => pending,
            Err(message) => {
                return bad_input(output, &format!("shards {}: {message}", shards.join(", ")));
            }
        };
        let label = format!(
            "{} shard(s) at {} ({}): {}",
            shards.len(),
            shown_version(&group.version),
            group.engine.name(),
            shards.join(", ")
        );
        let dry_run = DryRun {
            target: &label,
            revisions: &pending,
            direction: Direction::Up,
            timeouts,
        };
        match output {
            Output::Human => {
                dry_run.print_sql();
                println!();
            }
            Output::Json => documents.push(json!({
                "shards": shards,
                "engine": group.engine.name(),
                "current_version": shown_version(&group.version),
                "revisions": dry_run.revisions_json(),
            })),
        }
    }
    if output == Output::Json {
        render::print_json(&json!({
            "target_version": set.revisions[target].version.as_str(),
            "groups": documents,
        }));
    }
    ExitCode::SUCCESS
}

/// The shards `patterns` choose (all when empty), grouped by engine and version.
fn groups<'s>(listed: &'s [ShardSummary], patterns: &[String]) -> BTreeMap<Group, Vec<&'s str>> {
    let mut groups: BTreeMap<Group, Vec<&str>> = BTreeMap::new();
    let chosen = listed.iter().filter(|shard| {
        patterns.is_empty()
            || patterns
                .iter()
                .any(|pattern| id_matches(pattern, &shard.shard_id))
    });
    for shard in chosen {
        let engine = match shard.engine() {
            WireEngine::Sqlite => Engine::Sqlite,
            WireEngine::Postgres | WireEngine::Unspecified => Engine::Postgres,
        };
        let version = match shard.current_version.as_str() {
            BASE => String::new(),
            other => other.to_owned(),
        };
        groups
            .entry(Group { engine, version })
            .or_default()
            .push(&shard.shard_id);
    }
    groups
}

fn bad_input(output: Output, message: &str) -> ExitCode {
    render::failure(output, message, ErrorKind::BadInput);
    ExitCode::from(exit::BAD_INPUT)
}

/// Where the run ends: `requested`, or the set's newest revision.
fn target_index(set: &MigrationSet, requested: Option<&str>) -> Result<usize, String> {
    match requested {
        None => set
            .revisions
            .len()
            .checked_sub(1)
            .ok_or_else(|| "the migration set is empty".to_owned()),
        Some(version) => set
            .position(version)
            .ok_or_else(|| format!("--target {version} is not a version of the set")),
    }
}

/// The revisions after `current` up to the one at `target`, as a shard at `current` runs
/// them; none when it is at or past the target.
fn pending<'s>(
    set: &'s MigrationSet,
    current: &str,
    target: usize,
) -> Result<Vec<&'s Revision>, String> {
    let first = if current.is_empty() {
        0
    } else {
        set.position(current).map(|index| index + 1).ok_or_else(|| {
            format!(
                "at version {current}, which the set does not contain; `fleetshift migrate status` on the shard tells what it has"
            )
        })?
    };
    Ok(set.revisions.iter().take(target + 1).skip(first).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_runs_what_lies_between_its_version_and_the_target() {
        let directory = tempfile::tempdir().expect("dir");
        for version in 1..=3 {
            std::fs::write(
                directory.path().join(format!("{version}_t.sql")),
                format!("CREATE TABLE t{version} (id int);"),
            )
            .expect("write");
        }
        let set = MigrationSet::load(directory.path(), None).expect("set");
        let versions = |current: &str, target: usize| -> Vec<String> {
            pending(&set, current, target)
                .expect("pending")
                .iter()
                .map(|revision| revision.version.as_str().to_owned())
                .collect()
        };
        assert_eq!(versions("", 2), ["1", "2", "3"]);
        assert_eq!(versions("1", 1), ["2"]);
        assert!(versions("3", 1).is_empty(), "past the target: nothing");
        assert!(pending(&set, "9", 2).is_err());
        assert_eq!(target_index(&set, None), Ok(2));
        assert!(target_index(&set, Some("7")).is_err());
    }
}
