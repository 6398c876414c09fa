//! Migration sources: the histories users already keep, read from a directory.
//!
//! Formats are detected from file names (or named explicitly): sqlx / golang-migrate,
//! diesel, Flyway, dbmate, pop, Liquibase formatted SQL, and Alembic projects once rendered
//! to SQL (see [`alembic`]). Loading validates the whole set
//! before anything touches a database and reports every problem it finds in one
//! [`SourceError`].

pub mod alembic;
mod backfill;
mod dbmate;
mod diesel;
mod digest;
mod engine;
mod flyway;
use digest::{alembic_digest, digest, engines_digest};
mod layout;
mod liquibase;
mod mode;
mod phase;
mod pop;
mod problem;
mod read;
mod sqlx;
mod version;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sha2::{Digest, Sha256};

pub use alembic::AlembicHistory;
pub use backfill::{Backfill, PLACEHOLDER as BACKFILL_PLACEHOLDER};
pub use engine::Engine;
pub use phase::Phase;
pub use problem::{SourceError, SourceProblem};
pub use version::Version;

use crate::statements::{self, Statement};

/// The migration layouts fleetshift reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceFormat {
    /// `<version>_<name>.up.sql` + `.down.sql`, or single `<version>_<name>.sql` (sqlx, golang-migrate).
    Sqlx,
    /// `<version>_<name>/up.sql`, `down.sql`, optional `metadata.toml`.
    Diesel,
    /// `V<version>__<name>.sql`, optional `U<version>__<name>.sql`.
    Flyway,
    /// `<version>_<name>.sql` with `-- migrate:up` / `-- migrate:down` sections.
    Dbmate,
    /// `<version>_<name>[.<dialect>][.autocommit].(up|down).sql` (pop, popx): each engine
    /// runs its dialect's files.
    Pop,
    /// Liquibase formatted SQL changelogs (`--liquibase formatted sql`, `--changeset
    /// author:id`), alone or included by an XML/YAML master changelog; version = changeset order.
    Liquibase,
    /// An Alembic (or Flask-Migrate) project, rendered to SQL by the CLI: a
    /// `fleetshift-alembic.toml` manifest and `revisions/<id>.up.sql` / `.down.sql`.
    Alembic,
}

impl SourceFormat {
    pub const ALL: [SourceFormat; 7] = [
        Self::Sqlx,
        Self::Diesel,
        Self::Flyway,
        Self::Dbmate,
        Self::Pop,
        Self::Liquibase,
        Self::Alembic,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlx => "sqlx",
            Self::Diesel => "diesel",
            Self::Flyway => "flyway",
            Self::Dbmate => "dbmate",
            Self::Pop => "pop",
            Self::Liquibase => "liquibase",
            Self::Alembic => "alembic",
        }
    }
}

impl SourceFormat {
    /// Parses a version as this format spells it (also dash-less diesel versions, as
    /// diesel records them).
    pub fn parse_version(self, text: &str) -> Option<Version> {
        match self {
            Self::Sqlx | Self::Liquibase => Version::integer(text),
            Self::Diesel => Version::diesel(text),
            Self::Flyway => Version::flyway(text),
            Self::Dbmate | Self::Pop => Version::digits_as_text(text),
            // Revision ids name revisions as written; their order is the set's.
            Self::Alembic => None,
        }
    }
}

impl fmt::Display for SourceFormat {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

impl FromStr for SourceFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "sqlx" | "golang-migrate" => Ok(Self::Sqlx),
            "diesel" => Ok(Self::Diesel),
            "flyway" => Ok(Self::Flyway),
            "dbmate" => Ok(Self::Dbmate),
            "pop" | "popx" => Ok(Self::Pop),
            "liquibase" => Ok(Self::Liquibase),
            "alembic" | "flask-migrate" => Ok(Self::Alembic),
            other => Err(format!(
                "unknown migration format {other:?}; expected one of sqlx, golang-migrate, diesel, flyway, dbmate, pop, liquibase, alembic, flask-migrate"
            )),
        }
    }
}

/// SQL text read from a file, remembering where in the file it starts; split into
/// statements once, when read.
#[derive(Debug, Clone)]
pub struct Script {
    pub path: PathBuf,
    /// 1-based line of the file on which `sql` begins (dbmate sections start mid-file).
    pub first_line: usize,
    pub sql: String,
    statements: Vec<Statement>,
    /// `BEGIN` / `COMMIT` pairs folded into the revision's own transaction (see
    /// [`Script::fold_transaction_blocks`]): not run, reported by lint.
    folded: Vec<Statement>,
}

impl Script {
    pub fn new(path: PathBuf, first_line: usize, sql: String) -> Self {
        let statements = statements::split(&sql);
        Self {
            path,
            first_line,
            sql,
            statements,
            folded: Vec::new(),
        }
    }

    /// The statements that run.
    pub fn statements(&self) -> &[Statement] {
        &self.statements
    }

    /// The `BEGIN` / `COMMIT` statements folded into the revision's transaction.
    pub fn folded(&self) -> &[Statement] {
        &self.folded
    }

    /// Scripts written for tools that run a file as it is (golang-migrate) group their
    /// statements in `BEGIN; … COMMIT;` blocks. In a transactional revision, fleetshift already
    /// runs the whole script in ONE transaction, which contains every such block: plain,
    /// balanced, non-nested pairs are folded into it (not run), so the script applies all or
    /// nothing where the original could stop between blocks. Anything else (a `ROLLBACK`,
    /// an unbalanced or nested pair, `BEGIN ISOLATION LEVEL …`) is left to be refused.
    fn fold_transaction_blocks(&mut self) {
        let mut open = false;
        let mut boundaries = Vec::new();
        for (index, statement) in self.statements.iter().enumerate() {
            if !statement.controls_transaction() {
                continue;
            }
            match statement.plain_transaction_boundary() {
                Some(opens) if opens != open => {
                    open = opens;
                    boundaries.push(index);
                }
                _ => return,
            }
        }
        if open || boundaries.is_empty() {
            return;
        }
        for index in boundaries.into_iter().rev() {
            self.folded.insert(0, self.statements.remove(index));
        }
    }

    /// The line in the file of a line in this script.
    pub fn file_line(&self, script_line: usize) -> usize {
        self.first_line + script_line - 1
    }

    /// `path:line` of a statement of this script.
    pub fn locate(&self, statement: &Statement) -> String {
        format!("{}:{}", self.path.display(), self.file_line(statement.line))
    }

    fn checksum(&self) -> String {
        hex::encode(Sha256::digest(self.sql.as_bytes()))
    }
}

/// One revision of a migration set.
#[derive(Debug, Clone)]
pub struct Revision {
    pub version: Version,
    pub name: String,
    pub up: Script,
    /// `None`: irreversible. A down script without statements counts as missing (real
    /// histories write `-- Not reversible` there) unless it carries [`NOTHING_TO_UNDO`].
    pub down: Option<Script>,
    /// Whether the revision runs inside one transaction (the default in every format).
    pub transactional: bool,
    /// SHA-256 of the up script, hex.
    pub checksum: String,
    /// A failure of the up script is recorded and the run goes on (Liquibase
    /// `failOnError:false`); only statement failures, never faults or stops.
    pub failure_tolerated: bool,
    /// Why the revision has no down script, when its tool says (an Alembic downgrade that
    /// raised when rendered offline).
    pub irreversible: Option<String>,
    /// Run in batches of its key range, each its own transaction (`-- fleetshift:backfill`).
    pub backfill: Option<Backfill>,
    /// The phase of a zero-downtime change it belongs to (`-- fleetshift:phase`), its own or
    /// the revision's before it.
    pub phase: Option<Phase>,
}

/// Marks a statement-less down script as a deliberate no-op revert.
pub const NOTHING_TO_UNDO: &str = "fleetshift:nothing-to-undo";

impl Revision {
    fn new(
        version: Version,
        name: &str,
        up: Script,
        down: Option<Script>,
        transactional: bool,
    ) -> Self {
        let checksum = up.checksum();
        let down = down.filter(|script| {
            !script.statements().is_empty() || script.sql.contains(NOTHING_TO_UNDO)
        });
        let mut revision = Self {
            version,
            name: name.to_owned(),
            up,
            down: None,
            transactional,
            checksum,
            failure_tolerated: false,
            irreversible: None,
            backfill: None,
            phase: None,
        };
        if transactional {
            revision.up.fold_transaction_blocks();
        }
        revision.with_down(down)
    }

    /// Sets the down script as written, even without statements: for layouts where a
    /// written down script is a deliberate no-op revert (pop, Liquibase's `--rollback empty`).
    fn with_down(mut self, down: Option<Script>) -> Self {
        self.down = down.map(|mut script| {
            if self.transactional {
                script.fold_transaction_blocks();
            }
            script
        });
        self
    }

    pub fn label(&self) -> String {
        if self.is_repeatable() {
            return self.version.to_string();
        }
        format!("{}_{}", self.version, self.name)
    }

    /// A Flyway repeatable script: applied after every versioned revision and again when its
    /// content changes; never reverted.
    pub fn is_repeatable(&self) -> bool {
        self.version.is_repeatable()
    }

    /// An up script that is empty or holds only comments: a deliberate revision in real
    /// histories (a placeholder for another dialect, a step kept for numbering), applied as
    /// a no-op and recorded in the ledger like any other.
    pub fn is_no_op(&self) -> bool {
        self.up.statements().is_empty()
    }
}

/// A validated, ordered migration set.
#[derive(Debug, Clone)]
pub struct MigrationSet {
    pub directory: PathBuf,
    pub format: SourceFormat,
    /// The revisions in order, as PostgreSQL runs them (see [`MigrationSet::for_engine`]).
    pub revisions: Vec<Revision>,
    /// Files in the directory that belong to no revision (seed data, READMEs).
    pub ignored: Vec<PathBuf>,
    /// SHA-256 over every revision's version, name, mode and up/down scripts, hex; for a set
    /// whose engines run different files, over each engine's revisions and file names.
    pub digest: String,
    /// The set as each other engine runs it, where that differs (pop dialect files,
    /// Liquibase `dbms:` changesets).
    variants: BTreeMap<Engine, MigrationSet>,
    /// An Alembic set's revision graph and version table.
    pub alembic: Option<AlembicHistory>,
}

/// A directory as far as it could be read: the revisions read, in order, and every problem
/// found with the files (transaction control statements aside: see
/// [`transaction_control`]). Lint works on this, so a set's bad input is reported beside
/// its findings rather than instead of them.
#[derive(Debug)]
pub struct Reading {
    pub format: SourceFormat,
    /// As PostgreSQL runs them.
    pub revisions: Vec<Revision>,
    /// As each other engine runs them, where that differs (pop dialect files, Liquibase
    /// `dbms:` changesets).
    pub variants: BTreeMap<Engine, Vec<Revision>>,
    pub problems: Vec<SourceProblem>,
    /// Files in the directory that belong to no revision.
    pub ignored: Vec<PathBuf>,
    /// An Alembic set's revision graph and version table.
    pub alembic: Option<AlembicHistory>,
}

impl Reading {
    /// Reads `directory`; `format` is detected when `None`. `Err` only when the directory
    /// cannot be listed or its format cannot be told.
    pub fn of(directory: &Path, format: Option<SourceFormat>) -> Result<Self, SourceError> {
        let listing = layout::Listing::read(directory)?;
        let format = listing.format(directory, format)?;
        let mut problems = listing.near_misses();
        let mut variants = BTreeMap::new();
        let mut ignored = listing.ignored(format);
        let mut alembic = None;
        let mut revisions = match format {
            SourceFormat::Sqlx => sqlx::revisions(&listing, &mut problems),
            SourceFormat::Diesel => diesel::revisions(&listing, &mut problems),
            SourceFormat::Flyway => flyway::revisions(&listing, &mut problems),
            SourceFormat::Dbmate => dbmate::revisions(&listing, &mut problems),
            SourceFormat::Pop => {
                let per_engine = pop::revisions(directory, &listing, &mut problems);
                split_engines(per_engine, &mut variants)
            }
            SourceFormat::Liquibase => {
                let read = liquibase::revisions(directory, &listing, &mut problems);
                // Folders the master changelog reached into hold revisions.
                ignored.retain(|path| !read.files.iter().any(|file| file.starts_with(path)));
                let mut per_engine = read.per_engine;
                if !read.differs {
                    per_engine.retain(|(engine, _)| *engine == Engine::Postgres);
                }
                split_engines(per_engine, &mut variants)
            }
            SourceFormat::Alembic => {
                let (revisions, history) = alembic::revisions(directory, &mut problems);
                ignored.retain(|path| !path.ends_with(alembic::SCRIPTS));
                alembic = history;
                revisions
            }
        };
        for revisions in std::iter::once(&mut revisions).chain(variants.values_mut()) {
            revisions.sort_by(|left, right| left.version.cmp(&right.version));
            duplicates(revisions, &mut problems);
            backfill::mark(revisions, &mut problems);
            phase::mark(revisions, &mut problems);
        }
        tidy(&mut problems);
        Ok(Self {
            format,
            ignored,
            revisions,
            variants,
            problems,
            alembic,
        })
    }
}

/// Problems in file and line order, each once (a file every engine reads is reported once).
fn tidy(problems: &mut Vec<SourceProblem>) {
    problems.sort_by(|left, right| left.path.cmp(&right.path).then(left.line.cmp(&right.line)));
    problems.dedup();
}

/// PostgreSQL's revisions; the other engines' go to `variants`.
fn split_engines(
    per_engine: Vec<(Engine, Vec<Revision>)>,
    variants: &mut BTreeMap<Engine, Vec<Revision>>,
) -> Vec<Revision> {
    let mut postgres = Vec::new();
    for (engine, revisions) in per_engine {
        if engine == Engine::Postgres {
            postgres = revisions;
        } else {
            variants.insert(engine, revisions);
        }
    }
    postgres
}

impl MigrationSet {
    /// Reads and validates `directory`; `format` is detected when `None`.
    pub fn load(directory: &Path, format: Option<SourceFormat>) -> Result<Self, SourceError> {
        let Reading {
            format,
            revisions,
            variants,
            mut problems,
            ignored,
            alembic,
        } = Reading::of(directory, format)?;
        for revisions in std::iter::once(&revisions).chain(variants.values()) {
            problems.extend(transaction_control(revisions));
        }
        if !problems.is_empty() {
            tidy(&mut problems);
            return Err(SourceError {
                directory: directory.to_path_buf(),
                problems,
            });
        }
        let digest = if let Some(history) = &alembic {
            alembic_digest(&revisions, history)
        } else if variants.is_empty() {
            digest(&revisions)
        } else {
            let engines = std::iter::once((Engine::Postgres, &revisions)).chain(
                variants
                    .iter()
                    .map(|(engine, revisions)| (*engine, revisions)),
            );
            engines_digest(engines)
        };
        let set = |revisions| Self {
            directory: directory.to_path_buf(),
            format,
            ignored: ignored.clone(),
            revisions,
            digest: digest.clone(),
            variants: BTreeMap::new(),
            alembic: alembic.clone(),
        };
        let variants = variants
            .into_iter()
            .map(|(engine, revisions)| (engine, set(revisions)))
            .collect();
        Ok(Self {
            variants,
            ..set(revisions)
        })
    }

    /// The set as `engine` runs it: the same set unless what runs differs by engine (pop,
    /// Liquibase `dbms:`).
    /// Every engine's set has the same versions and the same digest.
    pub fn for_engine(&self, engine: Engine) -> &MigrationSet {
        self.variants.get(&engine).unwrap_or(self)
    }

    /// Each engine with the set it runs, when the files differ by engine; empty otherwise.
    pub fn engine_variants(&self) -> impl Iterator<Item = (Engine, &MigrationSet)> {
        let differs = !self.variants.is_empty();
        std::iter::once((Engine::Postgres, self))
            .chain(self.variants.iter().map(|(engine, set)| (*engine, set)))
            .filter(move |_| differs)
    }

    /// Names every script (of every engine's set) under `origin` where it is under `directory`:
    /// a set loaded from a copy reports its files as the original's. Only names change.
    pub fn name_scripts_under(&mut self, directory: &Path, origin: &Path) {
        for revision in &mut self.revisions {
            for script in std::iter::once(&mut revision.up).chain(revision.down.as_mut()) {
                if let Ok(relative) = script.path.strip_prefix(directory) {
                    script.path = origin.join(relative);
                }
            }
        }
        for variant in self.variants.values_mut() {
            variant.name_scripts_under(directory, origin);
        }
    }

    /// The index of the revision `version` names, read the way this set's format reads
    /// versions (`0009` is `9`; Flyway's `1.2.0` is `1.2`; diesel's without dashes), or as
    /// written when it is no version of the format.
    pub fn position(&self, version: &str) -> Option<usize> {
        let named = self.names(version);
        self.revisions
            .iter()
            .position(|revision| named(&revision.version))
    }

    pub fn revision(&self, version: &str) -> Option<&Revision> {
        self.position(version).map(|index| &self.revisions[index])
    }

    /// Whether a version is the one `text` names (see [`MigrationSet::position`]); `text` is
    /// read once.
    pub fn names(&self, text: &str) -> impl Fn(&Version) -> bool + use<> {
        let parsed = self.format.parse_version(text);
        let text = text.to_owned();
        move |version| match &parsed {
            Some(parsed) => version == parsed,
            None => version.as_str() == text,
        }
    }
}

fn duplicates(revisions: &[Revision], problems: &mut Vec<SourceProblem>) {
    for pair in revisions.windows(2) {
        if pair[0].version == pair[1].version {
            problems.push(SourceProblem::new(
                &pair[1].up.path,
                format!(
                    "duplicate version {}: also used by {}",
                    pair[1].version,
                    pair[0].up.path.display()
                ),
            ));
        }
    }
}

/// Transaction control statements in any script of `revisions`: fleetshift runs each
/// transactional revision in ONE transaction and each statement of a non-transactional one on
/// its own, so a `BEGIN` or `COMMIT` would break either.
pub fn transaction_control(revisions: &[Revision]) -> Vec<SourceProblem> {
    let mut problems = Vec::new();
    for revision in revisions {
        for script in std::iter::once(&revision.up).chain(&revision.down) {
            for statement in script.statements() {
                if statement.controls_transaction() {
                    problems.push(SourceProblem::at_line(
                        &script.path,
                        script.file_line(statement.line),
                        TRANSACTION_CONTROL,
                    ));
                }
            }
        }
    }
    problems
}

/// Why a transaction control statement cannot stand in a revision.
pub const TRANSACTION_CONTROL: &str = "transaction control statement: fleetshift runs each transactional revision in ONE transaction and each statement of a non-transactional one on its own; remove it";

#[cfg(test)]
mod tests;
