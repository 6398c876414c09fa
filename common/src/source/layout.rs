//! Classifying the entries of a migration directory and detecting its format.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{SourceError, SourceFormat, SourceProblem, Version};

/// What an entry of the directory looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// `<version>_<name>/` (diesel).
    RevisionDirectory,
    /// `<version>_<name>.up.sql` or `.down.sql` (sqlx, golang-migrate, pop).
    UpDownScript,
    /// `<version>_<name>.<dialect>.up.sql`, or with `.autocommit` (pop only).
    PopScript,
    /// A `.sql` file whose first line is `--liquibase formatted sql`, whatever its name.
    LiquibaseChangelog,
    /// An XML or YAML Liquibase master changelog.
    LiquibaseMaster,
    /// `<version>_<name>.sql`: sqlx's single file, or dbmate's when it has section markers.
    SingleScript { has_dbmate_sections: bool },
    /// `V…__…sql`, `U…__…sql`, `R__…sql` or a `.sql.conf` beside them (Flyway).
    FlywayFile,
    /// Named like a migration but fitting no layout (a version that is not a number, a
    /// missing `_` or `__`): an error that says what is wrong, never silently ignored.
    NearMiss,
    /// `fleetshift-alembic.toml`: an Alembic project rendered to SQL.
    AlembicManifest,
    /// Anything else (seed data, READMEs): ignored and reported.
    Other,
}

impl EntryKind {
    fn detected_format(self) -> Option<SourceFormat> {
        match self {
            Self::RevisionDirectory => Some(SourceFormat::Diesel),
            Self::UpDownScript => Some(SourceFormat::Sqlx),
            Self::SingleScript {
                has_dbmate_sections: true,
            } => Some(SourceFormat::Dbmate),
            Self::SingleScript {
                has_dbmate_sections: false,
            } => Some(SourceFormat::Sqlx),
            Self::FlywayFile => Some(SourceFormat::Flyway),
            Self::PopScript => Some(SourceFormat::Pop),
            Self::LiquibaseChangelog | Self::LiquibaseMaster => Some(SourceFormat::Liquibase),
            Self::AlembicManifest => Some(SourceFormat::Alembic),
            Self::NearMiss | Self::Other => None,
        }
    }

    /// Whether the entry can belong to a set of `format`.
    fn fits(self, format: SourceFormat) -> bool {
        match (self, format) {
            // dbmate's module reports a missing `-- migrate:up` marker itself.
            (Self::SingleScript { .. }, SourceFormat::Dbmate) => true,
            // pop's dialect-less scripts are named like golang-migrate's.
            (Self::UpDownScript, SourceFormat::Pop) => true,
            (kind, format) => kind.detected_format() == Some(format),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub path: PathBuf,
    pub file_name: String,
    pub kind: EntryKind,
}

/// The directory's entries, sorted by name, hidden ones skipped.
#[derive(Debug)]
pub struct Listing {
    pub entries: Vec<Entry>,
}

impl Listing {
    pub fn read(directory: &Path) -> Result<Self, SourceError> {
        let fail = |message: String| SourceError {
            directory: directory.to_path_buf(),
            problems: vec![SourceProblem::new(directory, message)],
        };
        let reader = std::fs::read_dir(directory)
            .map_err(|error| fail(format!("cannot read migration directory: {error}")))?;
        let mut entries = Vec::new();
        for item in reader {
            let item =
                item.map_err(|error| fail(format!("cannot list migration directory: {error}")))?;
            let file_name = item.file_name().to_string_lossy().into_owned();
            if file_name.starts_with('.') {
                continue;
            }
            let path = item.path();
            let kind = classify(&path, &file_name);
            entries.push(Entry {
                path,
                file_name,
                kind,
            });
        }
        entries.sort_by(|left, right| left.file_name.cmp(&right.file_name));
        Ok(Self { entries })
    }

    /// The set's format: the one requested, or the single one detected.
    pub fn format(
        &self,
        directory: &Path,
        requested: Option<SourceFormat>,
    ) -> Result<SourceFormat, SourceError> {
        let mut examples: BTreeMap<&'static str, (SourceFormat, &Entry)> = BTreeMap::new();
        for entry in &self.entries {
            if let Some(format) = entry.kind.detected_format() {
                examples.entry(format.name()).or_insert((format, entry));
            }
        }
        let invalid = |problems: Vec<SourceProblem>| SourceError {
            directory: directory.to_path_buf(),
            problems,
        };
        if let Some(format) = requested {
            let foreign: Vec<SourceProblem> = self
                .entries
                .iter()
                .filter(|entry| {
                    !matches!(entry.kind, EntryKind::Other | EntryKind::NearMiss)
                        && !entry.kind.fits(format)
                })
                .map(|entry| {
                    SourceProblem::new(
                        &entry.path,
                        format!("does not belong to the {format} layout requested with --format"),
                    )
                })
                .collect();
            return if foreign.is_empty() {
                Ok(format)
            } else {
                Err(invalid(foreign))
            };
        }
        let detected: Vec<(SourceFormat, &Entry)> = examples.into_values().collect();
        let all_pop = self.entries.iter().all(|entry| {
            entry.kind.detected_format().is_none() || entry.kind.fits(SourceFormat::Pop)
        });
        if all_pop
            && detected
                .iter()
                .any(|(format, _)| *format == SourceFormat::Pop)
        {
            return Ok(SourceFormat::Pop);
        }
        match detected.as_slice() {
            [(format, _)] => Ok(*format),
            // What almost matched says more than "unrecognised".
            [] if !self.near_misses().is_empty() => Err(invalid(self.near_misses())),
            [] => Err(invalid(vec![SourceProblem::new(
                directory,
                "unrecognised layout: no file matches a known format (sqlx `1_name.up.sql`, diesel `2017-08-31-230457_name/up.sql`, Flyway `V1__name.sql`, dbmate `20200101000000_name.sql` with `-- migrate:up`, pop `20200101000000_name.postgres.up.sql`, Liquibase `.sql` files beginning `--liquibase formatted sql`, an Alembic or Flask-Migrate project with `alembic.ini` or `migrations/env.py`); name the format with --format if the directory is meant to be empty",
            )])),
            several => Err(invalid(
                several
                    .iter()
                    .map(|(format, entry)| {
                        SourceProblem::new(
                            &entry.path,
                            format!(
                                "mixed layout: this looks like {format}, but the directory also holds files of another format; keep one format per directory"
                            ),
                        )
                    })
                    .collect(),
            )),
        }
    }

    /// Entries that belong to no revision of a `format` set.
    pub fn ignored(&self, format: SourceFormat) -> Vec<PathBuf> {
        self.entries
            .iter()
            .filter(|entry| entry.kind != EntryKind::NearMiss && !entry.kind.fits(format))
            .map(|entry| entry.path.clone())
            .collect()
    }

    /// A problem for each entry named like a migration that fits no layout.
    pub fn near_misses(&self) -> Vec<SourceProblem> {
        self.of_kind(|kind| kind == EntryKind::NearMiss)
            .filter_map(|entry| {
                let is_dir = entry.path.is_dir();
                near_miss(&entry.file_name, is_dir)
                    .map(|reason| SourceProblem::new(&entry.path, reason))
            })
            .collect()
    }

    pub fn of_kind(&self, wanted: impl Fn(EntryKind) -> bool) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(move |entry| wanted(entry.kind))
    }
}

/// Splits `<version>_<name>` at the first underscore.
pub fn version_and_name(stem: &str) -> Option<(&str, &str)> {
    let (version, name) = stem.split_once('_')?;
    (!version.is_empty() && !name.is_empty()).then_some((version, name))
}

fn classify(path: &Path, file_name: &str) -> EntryKind {
    let is_dir = path.is_dir();
    let kind = if is_dir {
        let looks_like_revision = version_and_name(file_name)
            .is_some_and(|(version, _)| Version::diesel(version).is_some());
        if looks_like_revision {
            EntryKind::RevisionDirectory
        } else {
            EntryKind::Other
        }
    } else if file_name == super::alembic::MANIFEST {
        EntryKind::AlembicManifest
    } else if let Some(kind) = liquibase_kind(path) {
        kind
    } else if is_flyway_name(file_name) {
        EntryKind::FlywayFile
    } else {
        classify_script(path, file_name)
    };
    let meant_as_migration = kind == EntryKind::Other
        && (!is_dir || path.join("up.sql").is_file())
        && near_miss(file_name, is_dir).is_some();
    if meant_as_migration {
        EntryKind::NearMiss
    } else {
        kind
    }
}

fn classify_script(path: &Path, file_name: &str) -> EntryKind {
    let Some(stem) = file_name.strip_suffix(".sql") else {
        return EntryKind::Other;
    };
    if let Some(inner) = stem
        .strip_suffix(".up")
        .or_else(|| stem.strip_suffix(".down"))
    {
        return match version_and_name(inner) {
            Some((version, rest)) if Version::integer(version).is_some() => {
                if super::pop::marks_pop(rest) {
                    EntryKind::PopScript
                } else {
                    EntryKind::UpDownScript
                }
            }
            _ => EntryKind::Other,
        };
    }
    match version_and_name(stem) {
        Some((version, _)) if Version::integer(version).is_some() => EntryKind::SingleScript {
            has_dbmate_sections: has_dbmate_sections(path),
        },
        // dbmate takes a file's leading digits as its version, whatever follows them
        // (`20220807151154-faucet_users.sql`).
        _ if stem.starts_with(|c: char| c.is_ascii_digit()) && has_dbmate_sections(path) => {
            EntryKind::SingleScript {
                has_dbmate_sections: true,
            }
        }
        _ => EntryKind::Other,
    }
}

/// Why an entry that no layout recognises was nonetheless meant as a migration, when its
/// name says so: an `.up.sql` / `.down.sql` script, a `.sql` file or a directory (holding an
/// `up.sql`) whose name begins with a digit, or a `V<digit>…` / `U<digit>…` / `R_…` script.
fn near_miss(file_name: &str, is_dir: bool) -> Option<String> {
    const SQLX: &str = "sqlx and golang-migrate name scripts `<version>_<name>.up.sql` (or `.down.sql`, or one `<version>_<name>.sql`) with a version of digits only, any length, e.g. `20240131120000_add_users.up.sql`";
    let shape = |stem: &str| -> String {
        match stem.split_once('_') {
            None => format!("nothing separates the version from the name: `{stem}` has no `_`"),
            Some(("", _)) => "the version before the first `_` is empty".to_owned(),
            Some((_, "")) => "the name after the first `_` is empty".to_owned(),
            Some((version, _)) => format!("the version `{version}` is not a number"),
        }
    };
    if is_dir {
        return file_name.starts_with(|c: char| c.is_ascii_digit()).then(|| {
            let reason = match version_and_name(file_name) {
                None => shape(file_name),
                Some((version, _)) => format!("the version `{version}` has characters other than digits and dashes"),
            };
            format!("named like a diesel revision directory but {reason}; diesel names them `<version>_<name>/` with a version of digits and dashes, e.g. `2024-01-31-120000_add_users/`")
        });
    }
    if let Some(stem) = file_name
        .strip_suffix(".up.fizz")
        .or_else(|| file_name.strip_suffix(".down.fizz"))
    {
        return stem.starts_with(|c: char| c.is_ascii_digit()).then(|| {
            "a pop fizz migration: fizz is pop's own language, not SQL, and fleetshift runs SQL files only; replace it with `<version>_<name>.up.sql` (and `.down.sql`) holding the SQL it stands for".to_owned()
        });
    }
    let stem = file_name.strip_suffix(".sql")?;
    if let Some(inner) = stem
        .strip_suffix(".up")
        .or_else(|| stem.strip_suffix(".down"))
    {
        return Some(format!(
            "named like an up/down migration script but {}; {SQLX}",
            shape(inner)
        ));
    }
    let mut characters = stem.chars();
    let first = characters.next()?;
    if matches!(first, 'V' | 'U') && characters.next().is_some_and(|c| c.is_ascii_digit())
        || stem.starts_with("R_")
    {
        return Some(
            "named like a Flyway script but without the two underscores that separate the version from the description; Flyway names them `V<version>__<description>.sql` (`U` for undo, `R__` for repeatable), e.g. `V1.2__add_users.sql`".to_owned(),
        );
    }
    first
        .is_ascii_digit()
        .then(|| format!("named like a migration script but {}; {SQLX}", shape(stem)))
}

fn is_flyway_name(file_name: &str) -> bool {
    let stem = file_name
        .strip_suffix(".sql.conf")
        .or_else(|| file_name.strip_suffix(".sql"));
    let Some(stem) = stem else { return false };
    if stem.starts_with("R__") {
        return true;
    }
    let mut characters = stem.chars();
    matches!(characters.next(), Some('V' | 'U'))
        && characters.next().is_some_and(|c| c.is_ascii_digit())
        && stem.contains("__")
}

/// A Liquibase formatted SQL changelog (by its first line) or master changelog.
fn liquibase_kind(path: &Path) -> Option<EntryKind> {
    use std::io::BufRead;
    match path.extension().and_then(|extension| extension.to_str())? {
        "sql" => {
            let file = std::fs::File::open(path).ok()?;
            let mut first = String::new();
            std::io::BufReader::new(file).read_line(&mut first).ok()?;
            let first = first.trim_start_matches('\u{feff}');
            super::liquibase::is_header(first).then_some(EntryKind::LiquibaseChangelog)
        }
        "xml" | "yaml" | "yml" => {
            let text = std::fs::read_to_string(path).ok()?;
            super::liquibase::is_master(path, &text).then_some(EntryKind::LiquibaseMaster)
        }
        _ => None,
    }
}

fn has_dbmate_sections(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|bytes| {
        String::from_utf8_lossy(&bytes)
            .lines()
            .any(|line| super::dbmate::section_marker(line).is_some())
    })
}
