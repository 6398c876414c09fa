//! Migration directories written for one test.

use std::path::{Path, PathBuf};

/// A temporary migration directory; files are `(relative path, content)`.
pub fn migrations(files: &[(&str, &str)]) -> tempfile::TempDir {
    let directory = tempfile::Builder::new()
        .prefix("fleetshift-migrations-")
        .tempdir()
        .expect("temporary migration directory");
    for (relative, content) in files {
        write(directory.path(), relative, content);
    }
    directory
}

pub fn write(root: &Path, relative: &str, content: &str) {
    let path = root.join(relative);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create fixture directory");
    }
    std::fs::write(path, content).expect("write fixture");
}

/// crates.io's migration history (285 diesel revisions) from the shared corpora.
pub fn crates_io() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpora/crates.io/migrations")
}

/// Harbor's golang-migrate history (39 up scripts), copied unchanged with its source and
/// license in `tests/fixtures/harbor/`.
pub fn harbor() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/harbor/migrations")
}

/// Ory Kratos's pop history (703 versions, 3,483 files: a file per dialect, 20-digit
/// versions, `.autocommit` revisions), copied unchanged with its source and license in
/// `tests/fixtures/kratos/`.
pub fn kratos() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/kratos/migrations")
}

/// Marquez's Flyway history: 81 versioned scripts, 3 repeatable ones and the README beside
/// them, copied unchanged with their source and license in `tests/fixtures/marquez/`.
pub fn marquez() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/marquez/migrations")
}

/// Ente's golang-migrate history with down scripts (124 revisions), copied unchanged with
/// its source and license in `tests/fixtures/ente/`.
pub fn ente() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/ente/migrations")
}

/// A migration directory in the form an assignment ships it: every file (recursively), with
/// the set's format and digest.
pub fn shipped(directory: &Path) -> fleetshift_common::proto::v1::MigrationSet {
    let set =
        fleetshift_common::source::MigrationSet::load(directory, None).expect("migration set");
    fleetshift_common::shipped::pack(&set).expect("pack")
}

/// Dbmate history of Supabase's Postgres image (30 revisions), copied unchanged with its
/// source and license in `tests/fixtures/supabase/`.
pub fn supabase() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/supabase/migrations")
}

/// pg-index-health-demo's Liquibase changelog (a YAML master and 9 SQL files), copied
/// unchanged with its source and license in `tests/fixtures/pg-index-health-demo/`.
pub fn pg_index_health_demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pg-index-health-demo/changelog")
}

/// Three formatted SQL changelogs from Liquibase's own tests, copied unchanged with their
/// source and license in `tests/fixtures/liquibase-tests/`.
pub fn liquibase_tests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/liquibase-tests/changelog")
}

/// Fluidity's dbmate history for PostgreSQL (31 revisions), copied unchanged with its source
/// and license in `tests/fixtures/fluidity/`.
pub fn fluidity() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/fluidity/migrations")
}
