//! Alembic projects as fleetshift runs them: SQL rendered once, by the operator's CLI, from
//! the project's own Alembic in offline mode, into a folder of its own. Agents read that folder
//! only, never Python:
//!
//! - `fleetshift-alembic.toml` ([`Manifest`]) lists the revisions in the order Alembic applies
//!   them, each with its parents (`down_revision`), name and source file;
//! - `revisions/<id>.up.sql` and `revisions/<id>.down.sql` hold each revision's own SQL (no
//!   `BEGIN`/`COMMIT`, no version-table bookkeeping); an irreversible revision has no down file.
//!
//! Versions are Alembic's revision ids, ordered by their place in the manifest.

mod history;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Revision, Script, SourceProblem, Version, read};

pub use history::AlembicHistory;

/// The manifest's file name: its presence marks a rendered Alembic set.
pub const MANIFEST: &str = "fleetshift-alembic.toml";
/// The folder of rendered scripts beside the manifest.
pub const SCRIPTS: &str = "revisions";

/// What the renderer writes beside the scripts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The table Alembic keeps its heads in (`alembic_version` unless `env.py` says otherwise).
    pub version_table: String,
    /// Whether agents keep that table current where it exists, so the team's
    /// `alembic current` stays true while both tools run the same database.
    pub keep_version_table: bool,
    /// In the order Alembic applies them.
    #[serde(rename = "revision", default)]
    pub revisions: Vec<ManifestRevision>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestRevision {
    pub id: String,
    /// The revisions it follows (`down_revision`; several for a merge revision).
    #[serde(default)]
    pub parents: Vec<String>,
    pub name: String,
    /// The Python file it was rendered from, relative to the project.
    pub source: String,
    /// False when Alembic renders part of it in an `autocommit_block()`.
    pub transactional: bool,
    /// Why its downgrade could not be rendered (it raised in offline mode): no down script.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub irreversible: Option<String>,
}

impl Manifest {
    pub fn up_path(directory: &Path, id: &str) -> PathBuf {
        directory.join(SCRIPTS).join(format!("{id}.up.sql"))
    }

    pub fn down_path(directory: &Path, id: &str) -> PathBuf {
        directory.join(SCRIPTS).join(format!("{id}.down.sql"))
    }
}

/// A rendered set's revisions in the manifest's order, and the history they come from.
pub fn revisions(
    directory: &Path,
    problems: &mut Vec<SourceProblem>,
) -> (Vec<Revision>, Option<AlembicHistory>) {
    let path = directory.join(MANIFEST);
    let Some(text) = read::text(&path, problems) else {
        return (Vec::new(), None);
    };
    let manifest: Manifest = match toml::from_str(&text) {
        Ok(manifest) => manifest,
        Err(error) => {
            let line = error
                .span()
                .map(|span| text[..span.start].lines().count().max(1));
            let message = format!(
                "{}; render the Alembic project again rather than editing this file",
                error.message()
            );
            problems.push(match line {
                Some(line) => SourceProblem::at_line(&path, line, message),
                None => SourceProblem::new(&path, message),
            });
            return (Vec::new(), None);
        }
    };
    let revisions = manifest
        .revisions
        .iter()
        .enumerate()
        .filter_map(|(position, entry)| revision(directory, position, entry, problems))
        .collect();
    match AlembicHistory::new(&manifest) {
        Ok(history) => (revisions, Some(history)),
        Err(cut) => {
            problems.extend(
                cut.into_iter()
                    .map(|message| SourceProblem::new(&path, message)),
            );
            (revisions, None)
        }
    }
}

fn revision(
    directory: &Path,
    position: usize,
    entry: &ManifestRevision,
    problems: &mut Vec<SourceProblem>,
) -> Option<Revision> {
    let script = |path: PathBuf, problems: &mut Vec<SourceProblem>| {
        read::text(&path, problems).map(|sql| Script::new(path, 1, sql))
    };
    let up = script(Manifest::up_path(directory, &entry.id), problems)?;
    let down = match entry.irreversible {
        Some(_) => None,
        None => Some(script(Manifest::down_path(directory, &entry.id), problems)?),
    };
    let version = Version::alembic(&entry.id, position);
    let revision = Revision::new(version, &entry.name, up, None, entry.transactional);
    // A downgrade Alembic renders as nothing (`pass`) is a deliberate no-op revert.
    let mut revision = revision.with_down(down);
    revision.irreversible = entry.irreversible.as_ref().map(|error| {
        format!(
            "Alembic could not render the downgrade of {} offline: {error}",
            entry.source
        )
    });
    Some(revision)
}

#[cfg(test)]
mod tests;
