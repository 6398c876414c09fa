//! pop and popx (gobuffalo/pop, ory/x): `<version>_<name>[.<dialect>][.autocommit].(up|down).sql`.
//!
//! One directory serves several engines. A file without a dialect applies to every engine; a
//! dialect file wins over it for its engine; `.autocommit` runs the revision outside a
//! transaction. Versions are digit strings ordered as text, as popx orders them. Each engine
//! fleetshift runs gets its own list of revisions, all with the same versions: a version
//! whose files are all for other dialects is a recorded no-op on this engine, and a down
//! script that exists but holds no statement is a no-op revert, because popx runs it as one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::layout::{EntryKind, Listing, version_and_name};
use super::{Engine, Revision, Script, SourceProblem, Version, read};

/// The dialects pop names in file names, canonical first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Dialect {
    Postgres,
    Cockroach,
    Mysql,
    Sqlite3,
}

impl Dialect {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "postgres" => Some(Self::Postgres),
            "cockroach" => Some(Self::Cockroach),
            "mysql" => Some(Self::Mysql),
            "sqlite3" | "sqlite" => Some(Self::Sqlite3),
            _ => None,
        }
    }

    fn of(engine: Engine) -> Self {
        match engine {
            Engine::Postgres => Self::Postgres,
            Engine::Sqlite => Self::Sqlite3,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Cockroach => "cockroach",
            Self::Mysql => "mysql",
            Self::Sqlite3 => "sqlite3",
        }
    }
}

const DIALECTS: &str = "postgres, cockroach, mysql, sqlite3 (or sqlite)";

/// What follows the name in a pop file name: `[.<dialect>][.autocommit]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Suffix {
    dialect: Option<Dialect>,
    autocommit: bool,
}

/// Splits `<name>[.<dialect>][.autocommit]`; `Err` names a segment pop does not know.
fn split_name(text: &str) -> Result<(&str, Suffix), String> {
    let mut segments = text.split('.');
    let name = segments.next().unwrap_or_default();
    let rest: Vec<&str> = segments.collect();
    let (dialect, autocommit) = match rest.as_slice() {
        [] => (None, false),
        ["autocommit"] => (None, true),
        [dialect] => (Some(*dialect), false),
        [dialect, "autocommit"] => (Some(*dialect), true),
        _ => {
            return Err(format!(
                "pop names scripts `<version>_<name>[.<dialect>][.autocommit].up.sql` with no `.` in the name, but `{text}` has {} dot-separated parts after the name",
                rest.len()
            ));
        }
    };
    let dialect = match dialect {
        None => None,
        Some(text) => Some(Dialect::parse(text).ok_or_else(|| {
            format!("`{text}` is not a dialect pop knows; the dialects are {DIALECTS}")
        })?),
    };
    Ok((
        name,
        Suffix {
            dialect,
            autocommit,
        },
    ))
}

/// Whether an up/down script's `<name>…` part carries a pop dialect or `.autocommit`, which
/// only pop's layout gives meaning to.
pub fn marks_pop(name_and_suffix: &str) -> bool {
    name_and_suffix.contains('.')
        && split_name(name_and_suffix)
            .is_ok_and(|(_, suffix)| suffix.dialect.is_some() || suffix.autocommit)
}

/// One script file of the set.
#[derive(Debug)]
struct File {
    path: PathBuf,
    name: String,
    suffix: Suffix,
    up: bool,
}

/// The revisions each engine runs, every engine's list in the same version order.
pub fn revisions(
    directory: &Path,
    listing: &Listing,
    problems: &mut Vec<SourceProblem>,
) -> Vec<(Engine, Vec<Revision>)> {
    let mut by_version: BTreeMap<String, Vec<File>> = BTreeMap::new();
    let scripts =
        listing.of_kind(|kind| matches!(kind, EntryKind::PopScript | EntryKind::UpDownScript));
    for entry in scripts {
        let (stem, up) = match entry.file_name.strip_suffix(".up.sql") {
            Some(stem) => (stem, true),
            None => match entry.file_name.strip_suffix(".down.sql") {
                Some(stem) => (stem, false),
                None => continue,
            },
        };
        let Some((version, rest)) = version_and_name(stem) else {
            continue;
        };
        match split_name(rest) {
            Ok((name, suffix)) => by_version
                .entry(version.to_owned())
                .or_default()
                .push(File {
                    path: entry.path.clone(),
                    name: name.to_owned(),
                    suffix,
                    up,
                }),
            Err(reason) => problems.push(SourceProblem::new(&entry.path, reason)),
        }
    }
    let mut per_engine: Vec<(Engine, Vec<Revision>)> = Engine::ALL
        .iter()
        .map(|engine| (*engine, Vec::new()))
        .collect();
    for (version_text, files) in &by_version {
        let Some(version) = Version::digits_as_text(version_text) else {
            continue;
        };
        if !consistent(&files[..], problems) {
            continue;
        }
        for (engine, revisions) in &mut per_engine {
            let dialect = Dialect::of(*engine);
            if let Some(revision) = for_dialect(directory, &version, files, dialect, problems) {
                revisions.push(revision);
            }
        }
    }
    per_engine
}

/// Whether a version's files agree on the name and none is there twice; a problem otherwise.
fn consistent(files: &[File], problems: &mut Vec<SourceProblem>) -> bool {
    let first = &files[0];
    if let Some(other) = files.iter().find(|file| file.name != first.name) {
        problems.push(SourceProblem::new(
            &other.path,
            format!(
                "the same version is named `{}` here and `{}` in {}; pop reads one revision per version: give its files one name",
                other.name,
                first.name,
                first.path.display()
            ),
        ));
        return false;
    }
    for (index, file) in files.iter().enumerate() {
        let twin = files[..index]
            .iter()
            .find(|earlier| earlier.up == file.up && earlier.suffix.dialect == file.suffix.dialect);
        if let Some(twin) = twin {
            let dialect = file.suffix.dialect.map_or("every dialect", Dialect::name);
            problems.push(SourceProblem::new(
                &file.path,
                format!(
                    "a second {} script for {dialect} in this version, beside {}; keep one (`sqlite` and `sqlite3` name the same dialect, as do files with and without `.autocommit`)",
                    if file.up { "up" } else { "down" },
                    twin.path.display()
                ),
            ));
            return false;
        }
    }
    true
}

/// The revision `dialect` runs for one version: its own file where there is one, else the
/// file for every dialect, else a no-op.
fn for_dialect(
    directory: &Path,
    version: &Version,
    files: &[File],
    dialect: Dialect,
    problems: &mut Vec<SourceProblem>,
) -> Option<Revision> {
    let pick = |up: bool| {
        let of_direction = || files.iter().filter(move |file| file.up == up);
        of_direction()
            .find(|file| file.suffix.dialect == Some(dialect))
            .or_else(|| of_direction().find(|file| file.suffix.dialect.is_none()))
    };
    let name = &files[0].name;
    let (up_file, down_file) = (pick(true), pick(false));
    let Some(up_file) = up_file else {
        if let Some(down_file) = down_file {
            problems.push(SourceProblem::new(
                &down_file.path,
                format!(
                    "down script without an up script for {}: add {version}_{name}.up.sql (or .{}.up.sql) or remove this file",
                    dialect.name(),
                    dialect.name()
                ),
            ));
            return None;
        }
        // Every file of this version is for other dialects: nothing runs here, in both
        // directions, and the version is recorded like any other.
        let absent = |direction: &str| {
            let path = directory.join(format!(
                "{version}_{name}.{}.{direction}.sql",
                dialect.name()
            ));
            Script::new(path, 1, String::new())
        };
        let revision = Revision::new(version.clone(), name, absent("up"), None, true);
        return Some(revision.with_down(Some(absent("down"))));
    };
    if let Some(down_file) = down_file
        && down_file.suffix.autocommit != up_file.suffix.autocommit
    {
        let (with, without) = if up_file.suffix.autocommit {
            (up_file, down_file)
        } else {
            (down_file, up_file)
        };
        problems.push(SourceProblem::new(
            &without.path,
            format!(
                "{} is `.autocommit` but this script is not; fleetshift runs a revision's up and down in the same mode: name both `.autocommit` or neither",
                with.path.display()
            ),
        ));
        return None;
    }
    let up_sql = read::text(&up_file.path, problems)?;
    let down = match down_file {
        Some(file) => Some(Script::new(
            file.path.clone(),
            1,
            read::text(&file.path, problems)?,
        )),
        None => None,
    };
    let up = Script::new(up_file.path.clone(), 1, up_sql);
    let revision = Revision::new(version.clone(), name, up, None, !up_file.suffix.autocommit);
    // popx runs an empty down script as a no-op revert: written, it counts.
    Some(revision.with_down(down))
}

#[cfg(test)]
mod tests;
