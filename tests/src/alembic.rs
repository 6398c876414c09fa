//! Alembic projects for the tests: the virtualenv `scripts/test` installs Alembic and
//! Flask-Migrate into, and `fleetshift` runs with it and a cache folder of the test's own.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `.tools/alembic` (Alembic 1.20.1, Flask-Migrate 4.1.0), or `FLEETSHIFT_TEST_ALEMBIC_VENV`.
pub fn venv() -> PathBuf {
    let venv = std::env::var_os("FLEETSHIFT_TEST_ALEMBIC_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/alembic"));
    assert!(
        venv.join("bin/alembic").is_file(),
        "{} has no Alembic: run scripts/test, which installs it",
        venv.display()
    );
    venv
}

/// The Flask-Migrate project written for the tests (22 revisions with a branch and its
/// merge), in `tests/fixtures/alembic/flask_shop/`.
pub fn flask_shop() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/alembic/flask_shop")
}

/// microblog's Flask-Migrate history (9 revisions), copied unchanged with its source and
/// license in `tests/fixtures/alembic/microblog/`, beside a stub application of ours.
pub fn microblog() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/alembic/microblog")
}

/// `fleetshift` with the test virtualenv and `cache` as its rendered-set cache.
pub fn fleetshift(cache: &Path) -> Command {
    let mut command = Command::new(crate::binary::fleetshift());
    command
        .env("FLEETSHIFT_ALEMBIC_VENV", venv())
        .env("FLEETSHIFT_CACHE_DIR", cache)
        .env("RUST_LOG", "info");
    command
}

/// Runs `fleetshift` (see [`fleetshift`]) on `database_url` with `arguments`.
pub fn run(cache: &Path, database_url: &str, arguments: &[&str]) -> Output {
    fleetshift(cache)
        .args(arguments)
        .env("FLEETSHIFT_DATABASE_URL", database_url)
        .output()
        .expect("run fleetshift")
}
