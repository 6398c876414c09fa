//! Flyway: `V<version>__<name>.sql`, optional `U<version>__<name>.sql` undo scripts,
//! repeatable `R__<description>.sql` scripts and `….sql.conf` files (`executeInTransaction`).

use std::path::Path;

use super::layout::{EntryKind, Listing};
use super::{Revision, Script, SourceProblem, Version, mode, read};

pub fn revisions(listing: &Listing, problems: &mut Vec<SourceProblem>) -> Vec<Revision> {
    let mut undos: Vec<(Version, &Path)> = Vec::new();
    let mut versioned = Vec::new();
    let mut repeatables = Vec::new();
    for entry in listing.of_kind(|kind| kind == EntryKind::FlywayFile) {
        if entry.file_name.ends_with(".sql.conf") {
            continue;
        }
        if let Some(description) = entry
            .file_name
            .strip_prefix("R__")
            .and_then(|rest| rest.strip_suffix(".sql"))
        {
            repeatables.extend(repeatable(&entry.path, description, problems));
            continue;
        }
        let Some((prefix, version, name)) = parse_name(&entry.file_name) else {
            problems.push(SourceProblem::new(
                &entry.path,
                "expected V<version>__<name>.sql or U<version>__<name>.sql with a numeric version such as 1.2.10",
            ));
            continue;
        };
        if prefix == 'U' {
            undos.push((version, &entry.path));
        } else {
            versioned.push((version, name, entry));
        }
    }
    let mut revisions = Vec::new();
    for (version, name, entry) in versioned {
        let undo_path = undos
            .iter()
            .position(|(undo_version, _)| *undo_version == version)
            .map(|index| undos.swap_remove(index).1);
        let Some(up_sql) = read::text(&entry.path, problems) else {
            continue;
        };
        let down = undo_path.and_then(|path| {
            read::text(path, problems).map(|sql| Script::new(path.to_path_buf(), 1, sql))
        });
        let up = Script::new(entry.path.clone(), 1, up_sql);
        let Some(transactional) = transaction_mode(&up, problems) else {
            continue;
        };
        revisions.push(Revision::new(version, &name, up, down, transactional));
    }
    for (_, orphan) in undos {
        problems.push(SourceProblem::new(
            orphan,
            "undo script without a versioned V script of the same version",
        ));
    }
    revisions.extend(repeatables);
    revisions
}

/// A repeatable script (`R__<description>.sql`): run after every versioned revision, and
/// again whenever its content changes, as Flyway runs it. Its version names its content
/// (see [`Version::repeatable`]); it has no down script (Flyway has none for it).
fn repeatable(
    path: &Path,
    description: &str,
    problems: &mut Vec<SourceProblem>,
) -> Option<Revision> {
    if description.is_empty() {
        problems.push(SourceProblem::new(
            path,
            "a repeatable script needs a description: `R__<description>.sql`",
        ));
        return None;
    }
    let sql = read::text(path, problems)?;
    let up = Script::new(path.to_path_buf(), 1, sql);
    let transactional = transaction_mode(&up, problems)?;
    let version = Version::repeatable(description, &up.checksum());
    Some(Revision::new(version, description, up, None, transactional))
}

fn parse_name(file_name: &str) -> Option<(char, Version, String)> {
    let stem = file_name.strip_suffix(".sql")?;
    let prefix = stem.chars().next()?;
    let (version_text, name) = stem[1..].split_once("__")?;
    let version = Version::flyway(version_text)?;
    (!name.is_empty()).then(|| (prefix, version, name.to_owned()))
}

/// Whether the script runs in a transaction: as its `.sql.conf` says, else as Flyway decides
/// from its statements; `None` (a problem reported) when the `.sql.conf` is invalid.
fn transaction_mode(up: &Script, problems: &mut Vec<SourceProblem>) -> Option<bool> {
    execute_in_transaction(&up.path, problems).unwrap_or_else(|| Some(mode::detected(up)))
}

/// `executeInTransaction` from the script's `.sql.conf`: `None` when there is none, or
/// when it does not say; `Some(None)` when it is invalid.
fn execute_in_transaction(
    script: &Path,
    problems: &mut Vec<SourceProblem>,
) -> Option<Option<bool>> {
    let mut conf = script.as_os_str().to_owned();
    conf.push(".conf");
    let conf = Path::new(&conf);
    if !conf.exists() {
        return None;
    }
    let Some(text) = read::text(conf, problems) else {
        return Some(None);
    };
    for (index, line) in text.lines().enumerate() {
        let Some((setting, value)) = line.split_once('=') else {
            continue;
        };
        if setting.trim() == "executeInTransaction" {
            return Some(match value.trim() {
                "true" => Some(true),
                "false" => Some(false),
                other => {
                    problems.push(SourceProblem::at_line(
                        conf,
                        index + 1,
                        format!("executeInTransaction must be true or false, not {other:?}"),
                    ));
                    None
                }
            });
        }
    }
    None
}
