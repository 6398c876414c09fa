//! dbmate: one `<version>_<name>.sql` per revision with `-- migrate:up` and `-- migrate:down`
//! sections; `transaction:false` on a marker line turns the transaction off.

use super::layout::{EntryKind, Listing};
use super::{Revision, Script, SourceProblem, Version, read};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
}

/// A `-- migrate:up` / `-- migrate:down` marker line: its direction and whether it asks
/// for a transaction.
pub fn section_marker(line: &str) -> Option<(Direction, bool)> {
    let rest = line.trim_start().strip_prefix("--")?.trim_start();
    let (direction, options) = if let Some(options) = rest.strip_prefix("migrate:up") {
        (Direction::Up, options)
    } else {
        (Direction::Down, rest.strip_prefix("migrate:down")?)
    };
    let transactional = !options
        .split_whitespace()
        .any(|option| option == "transaction:false");
    Some((direction, transactional))
}

struct Section {
    first_line: usize,
    lines: Vec<String>,
    transactional: bool,
}

/// dbmate's reading of a file name: the leading digits are the version, and what follows
/// (after a `_` or `-`) describes it; a bare version is its own description.
fn version_and_description(stem: &str) -> Option<(&str, &str)> {
    let digits = stem
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(stem.len());
    let (version, rest) = stem.split_at(digits);
    if version.is_empty() {
        return None;
    }
    let description = rest.trim_start_matches(['_', '-']);
    Some((
        version,
        if description.is_empty() {
            version
        } else {
            description
        },
    ))
}

pub fn revisions(listing: &Listing, problems: &mut Vec<SourceProblem>) -> Vec<Revision> {
    let mut revisions = Vec::new();
    for entry in listing.of_kind(|kind| matches!(kind, EntryKind::SingleScript { .. })) {
        let stem = entry.file_name.trim_end_matches(".sql");
        let Some((version_text, name)) = version_and_description(stem) else {
            continue;
        };
        let Some(version) = Version::digits_as_text(version_text) else {
            continue;
        };
        let Some(text) = read::text(&entry.path, problems) else {
            continue;
        };
        let (mut up, mut down) = (None::<Section>, None::<Section>);
        let mut current: Option<Direction> = None;
        for (index, line) in text.lines().enumerate() {
            if let Some((direction, transactional)) = section_marker(line) {
                let section = Section {
                    first_line: index + 2,
                    lines: Vec::new(),
                    transactional,
                };
                let slot = if direction == Direction::Up {
                    &mut up
                } else {
                    &mut down
                };
                if slot.is_some() {
                    problems.push(SourceProblem::at_line(
                        &entry.path,
                        index + 1,
                        "section marker appears twice",
                    ));
                }
                *slot = Some(section);
                current = Some(direction);
                continue;
            }
            let slot = match current {
                Some(Direction::Up) => &mut up,
                Some(Direction::Down) => &mut down,
                None => continue,
            };
            if let Some(section) = slot {
                section.lines.push(line.to_owned());
            }
        }
        let Some(up) = up else {
            problems.push(SourceProblem::new(
                &entry.path,
                "up script missing: the file has no `-- migrate:up` section",
            ));
            continue;
        };
        let script = |section: &Section| {
            Script::new(
                entry.path.clone(),
                section.first_line,
                section.lines.join("\n"),
            )
        };
        let down_script = down.as_ref().map(script);
        revisions.push(Revision::new(
            version,
            name,
            script(&up),
            down_script,
            up.transactional,
        ));
    }
    revisions
}
