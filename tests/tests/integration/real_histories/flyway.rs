//! Flyway: Marquez's versioned and repeatable scripts.

use fleetshift_common::engine::ShardEngine;
use fleetshift_common::source::{MigrationSet, SourceFormat};
use fleetshift_tests::{binary, fixtures};

use super::postgres_tables;
use crate::integration::support::{self, Database, json};

#[tokio::test]
async fn marquez_flyway_history_applies_in_flyway_order_and_reruns_a_changed_repeatable() {
    // A copy, so a repeatable script can change as it would in the project.
    let directory = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(fixtures::marquez()).expect("list") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), directory.path().join(entry.file_name())).expect("copy");
    }
    let set = MigrationSet::load(directory.path(), None).expect("Marquez's history loads as it is");
    assert_eq!(set.format, SourceFormat::Flyway);
    assert_eq!(set.revisions.len(), 84);
    let order: Vec<&str> = set.revisions[..4]
        .iter()
        .map(|revision| revision.version.as_str())
        .collect();
    assert_eq!(
        order,
        ["1", "2", "2.1", "3"],
        "Flyway orders versions part by part"
    );
    let repeatables: Vec<String> = set.revisions[81..]
        .iter()
        .map(|revision| revision.name.clone())
        .collect();
    assert_eq!(
        repeatables,
        [
            "Datasets_view",
            "Jobs_view_and_rewrite_function",
            "Runs_view"
        ],
        "repeatable scripts last, by description"
    );
    let ignored: Vec<_> = set
        .ignored
        .iter()
        .filter_map(|path| path.file_name())
        .collect();
    assert_eq!(
        ignored,
        ["V57__readme.md"],
        "a README named like a script is no script"
    );
    let path = directory.path().to_str().expect("UTF-8 path");

    let Database {
        cluster: _cluster,
        url,
        admin,
    } = support::database("marquez").await;
    let up = binary::run(&url, &["migrate", "up", "--dir", path]);
    assert!(up.status.success(), "{}", binary::printed(&up));
    let shard = support::postgres(&url).await;
    assert_eq!(shard.read_ledger().await.expect("ledger").len(), 84);
    let tables = postgres_tables(&admin).await;
    for table in ["datasets", "jobs", "runs", "lineage_events", "namespaces"] {
        assert!(
            tables.iter().any(|name| name == table),
            "{table} missing: {tables:?}"
        );
    }
    let views: Vec<String> = sqlx::query_scalar(
        "SELECT viewname::text FROM pg_views WHERE schemaname = 'public' ORDER BY 1",
    )
    .fetch_all(&admin)
    .await
    .expect("catalog");
    for view in ["datasets_view", "jobs_view", "runs_view"] {
        assert!(
            views.iter().any(|name| name == view),
            "{view} missing: {views:?}"
        );
    }

    // Nothing changed: nothing runs. A repeatable script changes: it alone runs again.
    let again = binary::run(&url, &["migrate", "up", "--dir", path, "--output", "json"]);
    assert!(again.status.success(), "{}", binary::printed(&again));
    assert_eq!(
        json(&again)["steps"].as_array().map(Vec::len),
        Some(0),
        "{}",
        binary::printed(&again)
    );
    let runs_view = directory.path().join("R__Runs_view.sql");
    let mut sql = std::fs::read_to_string(&runs_view).expect("read");
    sql.push_str("\n-- changed by the team\n");
    std::fs::write(&runs_view, sql).expect("write");
    let rerun = binary::run(&url, &["migrate", "up", "--dir", path, "--output", "json"]);
    assert!(rerun.status.success(), "{}", binary::printed(&rerun));
    let steps = json(&rerun)["steps"].clone();
    assert_eq!(steps.as_array().map(Vec::len), Some(1), "{steps}");
    assert_eq!(steps[0]["name"], "Runs_view", "{steps}");
    assert_eq!(
        shard.read_ledger().await.expect("ledger").len(),
        85,
        "each content recorded"
    );

    // Flyway has no down scripts without its paid edition: a revert is refused naming the
    // newest versioned revision (a repeatable script is never reverted).
    let down = binary::run(&url, &["migrate", "down", "--dir", path]);
    support::assert_exit(&down, 2);
    assert!(
        binary::printed(&down).contains("74_alter_jobs_to_add_current_run_uuid"),
        "{}",
        binary::printed(&down)
    );
}
