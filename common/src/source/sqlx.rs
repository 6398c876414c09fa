//! sqlx and golang-migrate: `<version>_<name>.up.sql` + `.down.sql`, or sqlx's single
//! `<version>_<name>.sql`; sqlx's `-- no-transaction` first line turns the transaction off,
//! and so does a script whose every statement PostgreSQL refuses in a transaction, as
//! golang-migrate runs it (see [`super::mode`]).

use std::collections::BTreeMap;

use super::layout::{EntryKind, Listing, version_and_name};
use super::{Revision, Script, SourceProblem, Version, mode, read};

pub fn revisions(listing: &Listing, problems: &mut Vec<SourceProblem>) -> Vec<Revision> {
    let mut downs = BTreeMap::new();
    for entry in listing.of_kind(|kind| kind == EntryKind::UpDownScript) {
        if let Some(stem) = entry.file_name.strip_suffix(".down.sql")
            && let Some((version, _)) = version_and_name(stem)
        {
            downs.insert(version.to_owned(), entry);
        }
    }
    let mut revisions = Vec::new();
    let scripts = listing.of_kind(|kind| {
        matches!(
            kind,
            EntryKind::UpDownScript | EntryKind::SingleScript { .. }
        )
    });
    for entry in scripts {
        if entry.file_name.ends_with(".down.sql") {
            continue;
        }
        let stem = entry
            .file_name
            .strip_suffix(".up.sql")
            .or_else(|| entry.file_name.strip_suffix(".sql"))
            .unwrap_or(&entry.file_name);
        let Some((version_text, name)) = version_and_name(stem) else {
            continue;
        };
        let Some(version) = Version::integer(version_text) else {
            problems.push(SourceProblem::new(&entry.path, "version is not an integer"));
            continue;
        };
        let down_entry = downs.remove(version_text);
        let Some(up_sql) = read::text(&entry.path, problems) else {
            continue;
        };
        let down = down_entry.and_then(|down_entry| {
            read::text(&down_entry.path, problems)
                .map(|sql| Script::new(down_entry.path.clone(), 1, sql))
        });
        let marked = up_sql.lines().next().map(str::trim) == Some("-- no-transaction");
        let up = Script::new(entry.path.clone(), 1, up_sql);
        let transactional = !marked && mode::detected(&up);
        revisions.push(Revision::new(version, name, up, down, transactional));
    }
    for (version, orphan) in downs {
        problems.push(SourceProblem::new(
            &orphan.path,
            format!(
                "down script without an up script: add {version}_<name>.up.sql or remove this file"
            ),
        ));
    }
    revisions
}
