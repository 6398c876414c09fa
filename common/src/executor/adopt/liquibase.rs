//! Matching Liquibase's `databasechangelog` rows to the revisions of a Liquibase set.

use std::path::Path;

use crate::engine::foreign::ForeignChangeset;
use crate::source::{MigrationSet, Revision};

/// The revisions the rows name (by `author:id`, and by changelog file where the same
/// `author:id` is in several files), and the rows that name none, as `author:id (file)`.
pub fn matched<'s>(
    set: &'s MigrationSet,
    changesets: &[ForeignChangeset],
) -> (Vec<&'s Revision>, Vec<String>) {
    let mut adopted: Vec<&Revision> = Vec::new();
    let mut unknown = Vec::new();
    for changeset in changesets {
        let name = format!("{}:{}", changeset.author, changeset.id);
        let candidates: Vec<&Revision> = set
            .revisions
            .iter()
            .filter(|revision| revision.name == name)
            .collect();
        let same_file = |revision: &&&Revision| {
            revision
                .up
                .path
                .file_name()
                .is_some_and(|file| Path::new(&changeset.filename).file_name() == Some(file))
        };
        let found = match candidates.as_slice() {
            [only] => Some(*only),
            several => several.iter().find(same_file).copied(),
        };
        match found {
            Some(revision) if !adopted.iter().any(|seen| seen.version == revision.version) => {
                adopted.push(revision);
            }
            Some(_) => {}
            None => unknown.push(format!("{name} ({})", changeset.filename)),
        }
    }
    adopted.sort_by(|left, right| left.version.cmp(&right.version));
    (adopted, unknown)
}
