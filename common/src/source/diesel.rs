//! diesel: `<version>_<name>/up.sql`, `down.sql`, optional `metadata.toml`.

use std::path::Path;

use super::layout::{EntryKind, Listing, version_and_name};
use super::{Revision, Script, SourceProblem, Version, read};

#[derive(Debug, serde::Deserialize)]
struct Metadata {
    #[serde(default = "run_in_transaction_default")]
    run_in_transaction: bool,
}

fn run_in_transaction_default() -> bool {
    true
}

pub fn revisions(listing: &Listing, problems: &mut Vec<SourceProblem>) -> Vec<Revision> {
    let mut revisions = Vec::new();
    for entry in listing.of_kind(|kind| kind == EntryKind::RevisionDirectory) {
        let Some((version_text, name)) = version_and_name(&entry.file_name) else {
            continue;
        };
        let Some(version) = Version::diesel(version_text) else {
            continue;
        };
        let up_path = entry.path.join("up.sql");
        if !up_path.exists() {
            problems.push(SourceProblem::new(
                &up_path,
                "up script missing: every revision directory needs an up.sql",
            ));
            continue;
        }
        let Some(up_sql) = read::text(&up_path, problems) else {
            continue;
        };
        let down_path = entry.path.join("down.sql");
        let down = if down_path.exists() {
            read::text(&down_path, problems).map(|sql| Script::new(down_path, 1, sql))
        } else {
            None
        };
        let Some(transactional) = run_in_transaction(&entry.path.join("metadata.toml"), problems)
        else {
            continue;
        };
        let up = Script::new(up_path, 1, up_sql);
        revisions.push(Revision::new(version, name, up, down, transactional));
    }
    revisions
}

/// `run_in_transaction` from `metadata.toml` (true when the file is absent).
fn run_in_transaction(path: &Path, problems: &mut Vec<SourceProblem>) -> Option<bool> {
    if !path.exists() {
        return Some(true);
    }
    let text = read::text(path, problems)?;
    match toml::from_str::<Metadata>(&text) {
        Ok(metadata) => Some(metadata.run_in_transaction),
        Err(error) => {
            let line = error
                .span()
                .map_or(1, |span| text[..span.start].matches('\n').count() + 1);
            problems.push(SourceProblem::at_line(
                path,
                line,
                format!("invalid metadata.toml: {}", error.message()),
            ));
            None
        }
    }
}
