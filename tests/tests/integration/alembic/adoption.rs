//! A shard Alembic itself migrated half-way (`flask db upgrade <revision>`, online, on real
//! PostgreSQL) is adopted from `alembic_version` and finished by fleetshift, which keeps
//! `alembic_version` current so the team's `flask db current` stays true.

use std::path::Path;

use fleetshift_tests::alembic;

use super::FLASK_SHOP_ORDER;
use crate::integration::support::{self, Database, assert_exit, json};

/// Runs the fixture's own `flask db` on `url`, as the team would.
fn flask_db(url: &str, arguments: &[&str]) -> String {
    let sqlalchemy_url = url.replacen("postgres://", "postgresql+psycopg://", 1);
    let output = std::process::Command::new(alembic::venv().join("bin/flask"))
        .arg("db")
        .args(arguments)
        .current_dir(alembic::flask_shop())
        .env("SHOP_DATABASE_URL", sqlalchemy_url)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("flask db");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "flask db {arguments:?}: {printed}");
    printed
}

async fn version_rows(admin: &sqlx::PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT version_num::text FROM alembic_version ORDER BY 1")
        .fetch_all(admin)
        .await
        .expect("alembic_version")
}

fn migrate(cache: &Path, url: &str, arguments: &[&str]) -> std::process::Output {
    let project = alembic::flask_shop();
    let mut all = vec!["migrate"];
    all.extend_from_slice(arguments);
    all.extend_from_slice(&["--dir", project.to_str().expect("UTF-8 path")]);
    alembic::run(cache, url, &all)
}

/// A database `flask db upgrade <revision>` took there, and the cache to render in.
async fn taken_by_alembic_to(name: &str, revision: &str) -> (tempfile::TempDir, Database) {
    let cache = tempfile::tempdir().expect("cache");
    let database = support::database(name).await;
    flask_db(&database.url, &["upgrade", revision]);
    assert_eq!(version_rows(&database.admin).await, [revision]);
    (cache, database)
}

#[tokio::test]
async fn a_shard_alembic_took_half_way_is_adopted_finished_and_alembic_version_kept_true() {
    let half_way = FLASK_SHOP_ORDER[14];
    let (
        cache,
        Database {
            cluster: _cluster,
            url,
            admin,
        },
    ) = taken_by_alembic_to("half_way", half_way).await;

    // fleetshift will not run revisions Alembic may already have run…
    let refused = migrate(cache.path(), &url, &["up"]);
    assert_exit(&refused, 7);
    let printed = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert!(
        printed.contains("alembic_version") && printed.contains("migrate adopt"),
        "{printed}"
    );
    // …until it adopts them: every ancestor of the head Alembic recorded.
    let adopted = migrate(
        cache.path(),
        &url,
        &["adopt", "--reason", "switching to fleetshift"],
    );
    assert_exit(&adopted, 0);
    let status = migrate(cache.path(), &url, &["status", "--output", "json"]);
    assert_exit(&status, 0);
    let status = json(&status);
    assert_eq!(status["status"]["current_version"], half_way, "{status}");

    let up = migrate(cache.path(), &url, &["up", "--output", "json"]);
    assert_exit(&up, 0);
    let report = json(&up);
    let applied: Vec<&str> = report["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|step| step["version"].as_str())
        .collect();
    assert_eq!(
        applied,
        FLASK_SHOP_ORDER[15..],
        "only what Alembic had not run"
    );
    let head = FLASK_SHOP_ORDER[21];
    assert_eq!(version_rows(&admin).await, [head]);
    assert!(flask_db(&url, &["current"]).contains(&format!("{head} (head)")));

    // Down onto the branch: Alembic's rows are both branch heads, as Alembic itself keeps them.
    let down = migrate(cache.path(), &url, &["down", "--to", FLASK_SHOP_ORDER[11]]);
    assert_exit(&down, 0);
    assert_eq!(version_rows(&admin).await, ["1a2b3c4d5e11", "9f8e7d6c5b12"]);
    let current = flask_db(&url, &["current"]);
    assert!(
        current.contains("1a2b3c4d5e11") && current.contains("9f8e7d6c5b12"),
        "{current}"
    );
    // And Alembic takes it from there on its own.
    flask_db(&url, &["upgrade", "head"]);
    assert_eq!(version_rows(&admin).await, [head]);
}

#[tokio::test]
async fn a_shard_alembic_took_up_one_branch_gets_the_other_branch_and_the_merge() {
    // Shipments tracked, refunds not yet: Alembic applies 1a2b3c4d5e11 and its ancestors only.
    let tracked = FLASK_SHOP_ORDER[11];
    let (
        cache,
        Database {
            cluster: _cluster,
            url,
            admin,
        },
    ) = taken_by_alembic_to("one_branch", tracked).await;
    let adopted = migrate(
        cache.path(),
        &url,
        &["adopt", "--reason", "switching to fleetshift"],
    );
    assert_exit(&adopted, 0);

    // The refunds branch comes before it in Alembic's order; nothing applied depends on it.
    let refunds = FLASK_SHOP_ORDER[10];
    let to_refunds = migrate(cache.path(), &url, &["up", "--to", refunds]);
    assert_exit(&to_refunds, 0);
    assert_eq!(
        version_rows(&admin).await,
        [tracked, refunds],
        "both branch heads"
    );
    let up = migrate(cache.path(), &url, &["up", "--output", "json"]);
    assert_exit(&up, 0);
    let report = json(&up);
    let applied: Vec<&str> = report["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|step| step["version"].as_str())
        .collect();
    assert_eq!(applied, FLASK_SHOP_ORDER[12..]);
    let head = FLASK_SHOP_ORDER[21];
    assert_eq!(version_rows(&admin).await, [head]);
    assert!(flask_db(&url, &["current"]).contains(&format!("{head} (head)")));
}
