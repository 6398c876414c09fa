//! Liquibase "formatted SQL" changelogs: a directory of `--liquibase formatted sql` files (read
//! in name order), or a master changelog (XML or YAML) that includes them in its own order.
//! Each changeset is a revision: its version is its place in that order (1, 2, …), its name
//! `author:id`, as Liquibase identifies it. A changeset limited to some databases (`dbms:`)
//! is a recorded no-op on the others, so every engine has the same versions.

mod formatted;
mod master;

use std::path::{Path, PathBuf};

use super::layout::{EntryKind, Listing};
use super::{Engine, Revision, Script, SourceProblem, Version, read};

pub use formatted::is_header;
pub use master::is_master;

use formatted::{Changeset, Rollback};

/// What reading a Liquibase set gives: each engine's revisions, whether they differ by engine,
/// and the files read (so the folders holding them are not reported as ignored).
pub struct Read {
    pub per_engine: Vec<(Engine, Vec<Revision>)>,
    pub differs: bool,
    pub files: Vec<PathBuf>,
}

pub fn revisions(directory: &Path, listing: &Listing, problems: &mut Vec<SourceProblem>) -> Read {
    let masters: Vec<&Path> = listing
        .of_kind(|kind| kind == EntryKind::LiquibaseMaster)
        .map(|entry| entry.path.as_path())
        .collect();
    let files = match masters.as_slice() {
        [] => listing
            .of_kind(|kind| kind == EntryKind::LiquibaseChangelog)
            .map(|entry| entry.path.clone())
            .collect(),
        [master] => master::follow(master, directory, problems),
        several => {
            for master in several {
                problems.push(SourceProblem::new(
                    master,
                    "one of several master changelogs in the directory; keep the one that includes the others here and move the rest away",
                ));
            }
            Vec::new()
        }
    };
    let mut changesets = Vec::new();
    for file in &files {
        let Some(text) = read::text(file, problems) else {
            continue;
        };
        changesets.extend(formatted::changesets(file, &text, problems));
    }
    changesets.retain(|changeset| !changeset.ignored);
    let differs = changesets.iter().any(|changeset| {
        Engine::ALL
            .iter()
            .any(|engine| !changeset.dbms.runs_on(*engine))
    });
    let per_engine = Engine::ALL
        .iter()
        .map(|engine| {
            let revisions = changesets
                .iter()
                .enumerate()
                .filter_map(|(index, changeset)| revision(index + 1, changeset, *engine))
                .collect();
            (*engine, revisions)
        })
        .collect();
    Read {
        per_engine,
        differs,
        files,
    }
}

/// The changeset at `position` in the set's order, as `engine` runs it.
fn revision(position: usize, changeset: &Changeset, engine: Engine) -> Option<Revision> {
    let version = Version::integer(&position.to_string())?;
    let name = changeset.name();
    if !changeset.dbms.runs_on(engine) {
        let nothing = || Script::new(changeset.path.clone(), changeset.line, String::new());
        let revision = Revision::new(version, &name, nothing(), None, true);
        return Some(revision.with_down(Some(nothing())));
    }
    let revision = Revision::new(
        version,
        &name,
        changeset.up.clone(),
        None,
        changeset.transactional,
    );
    // Written rollbacks count even without statements (`--rollback empty`).
    let down = match &changeset.rollback {
        Rollback::Missing => None,
        Rollback::Nothing => Some(Script::new(
            changeset.path.clone(),
            changeset.line,
            String::new(),
        )),
        Rollback::Sql(script) => Some(script.clone()),
    };
    let mut revision = revision.with_down(down);
    revision.failure_tolerated = changeset.failure_tolerated;
    Some(revision)
}

#[cfg(test)]
mod tests;
