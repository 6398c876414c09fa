//! Histories left by other migration tools, read so a team switching to fleetshift
//! re-runs nothing.

use serde::Serialize;

/// A migration tool whose history table fleetshift can import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForeignTool {
    Sqlx,
    Flyway,
    GolangMigrate,
    Dbmate,
    Diesel,
    /// pop and popx: `schema_migration`, one row per applied version.
    Pop,
    /// Liquibase: `databasechangelog`, one row per changeset run (`id`, `author`, `filename`).
    Liquibase,
    /// Alembic (and Flask-Migrate): `alembic_version`, one row per head.
    Alembic,
}

impl ForeignTool {
    pub fn table(self) -> &'static str {
        match self {
            Self::Sqlx => "_sqlx_migrations",
            Self::Flyway => "flyway_schema_history",
            Self::GolangMigrate | Self::Dbmate => "schema_migrations",
            Self::Diesel => "__diesel_schema_migrations",
            Self::Pop => "schema_migration",
            Self::Liquibase => "databasechangelog",
            Self::Alembic => "alembic_version",
        }
    }
}

/// What a foreign history says is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForeignApplied {
    /// Versions recorded one by one; sqlx also keeps the SHA-384 of each up script.
    Versions(Vec<ForeignRevision>),
    /// golang-migrate keeps only the latest version and whether it was left half-done.
    UpTo { version: i64, dirty: bool },
    /// Liquibase records changesets by author, id and changelog file, not by version.
    Changesets(Vec<ForeignChangeset>),
    /// Alembic keeps only its heads: every ancestor of each is applied.
    Heads(Vec<String>),
}

/// A changeset Liquibase ran (`EXECUTED`, `MARK_RAN` or `RERAN` in `databasechangelog`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignChangeset {
    pub id: String,
    pub author: String,
    /// The changelog's path as Liquibase was given it (often a classpath path).
    pub filename: String,
}

/// Rows of `databasechangelog` that count as run; `FAILED` and `SKIPPED` do not.
pub(crate) fn liquibase_changesets(
    rows: Vec<(String, String, String, String)>,
) -> Vec<ForeignChangeset> {
    rows.into_iter()
        .filter(|(_, _, _, kind)| matches!(kind.as_str(), "EXECUTED" | "MARK_RAN" | "RERAN"))
        .map(|(id, author, filename, _)| ForeignChangeset {
            id,
            author,
            filename,
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignRevision {
    pub version: String,
    pub sha384: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignHistory {
    pub tool: ForeignTool,
    pub applied: ForeignApplied,
}

/// Replays Flyway's history (applies and undos, in installed order) into the applied set.
pub(crate) fn flyway_applied(rows: Vec<(String, String)>) -> Vec<ForeignRevision> {
    let mut applied: Vec<String> = Vec::new();
    for (version, kind) in rows {
        if kind.starts_with("UNDO") {
            applied.retain(|existing| *existing != version);
        } else if !applied.contains(&version) {
            applied.push(version);
        }
    }
    applied
        .into_iter()
        .map(|version| ForeignRevision {
            version,
            sha384: None,
        })
        .collect()
}

pub(crate) fn plain_versions(versions: Vec<String>) -> Vec<ForeignRevision> {
    versions
        .into_iter()
        .map(|version| ForeignRevision {
            version,
            sha384: None,
        })
        .collect()
}

pub(crate) fn sqlx_versions(rows: Vec<(i64, Vec<u8>)>) -> Vec<ForeignRevision> {
    rows.into_iter()
        .map(|(version, checksum)| ForeignRevision {
            version: version.to_string(),
            sha384: Some(checksum),
        })
        .collect()
}
