//! Alembic: microblog's Flask-Migrate history, rendered by `flask db` from its own
//! `migrations/` folder, applied to PostgreSQL and reverted to base.

use fleetshift_tests::alembic;

use super::{lint_report_with, postgres_tables};
use crate::integration::support::{self, Database, assert_exit, json};

const MICROBLOG_ORDER: [&str; 9] = [
    "e517276bb1c2",
    "780739b227a7",
    "37f06a334dbf",
    "ae346256b650",
    "2b017edaa91f",
    "d049de007ccf",
    "f7ac3d27bb1d",
    "c81bac34faab",
    "834b1a697901",
];

#[tokio::test]
async fn microblogs_flask_migrate_history_renders_goes_up_and_back_to_base() {
    let cache = tempfile::tempdir().expect("cache");
    let project = alembic::microblog();
    let report = lint_report_with(alembic::fleetshift(cache.path()), &project, 0);
    assert_eq!(report["revisions"], 9, "{report}");

    // A virtualenv given relative to where the operator stands, not to the project.
    let venv = alembic::venv();
    let (parent, name) = (
        venv.parent().expect("parent"),
        venv.file_name().expect("name"),
    );
    let cold = tempfile::tempdir().expect("a cache of its own, so Alembic runs");
    let verified = alembic::fleetshift(cold.path())
        .current_dir(parent)
        .env_remove("FLEETSHIFT_ALEMBIC_VENV")
        .args(["migrate", "verify", "--dir"])
        .arg(&project)
        .arg("--alembic-venv")
        .arg(name)
        .output()
        .expect("verify");
    assert_exit(&verified, 0);

    let Database {
        cluster: _cluster,
        url,
        admin,
    } = support::database("microblog").await;
    let dir = project.to_str().expect("UTF-8 path");
    let up = alembic::run(
        cache.path(),
        &url,
        &["migrate", "up", "--dir", dir, "--output", "json"],
    );
    assert_exit(&up, 0);
    let report = json(&up);
    let versions: Vec<&str> = report["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|step| step["version"].as_str())
        .collect();
    assert_eq!(versions, MICROBLOG_ORDER);
    assert_eq!(
        postgres_tables(&admin).await,
        [
            "followers",
            "message",
            "notification",
            "post",
            "task",
            "user"
        ]
    );
    let down = alembic::run(
        cache.path(),
        &url,
        &["migrate", "down", "--to", "base", "--dir", dir],
    );
    assert_exit(&down, 0);
    assert!(postgres_tables(&admin).await.is_empty());
}
