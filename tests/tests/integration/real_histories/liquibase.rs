//! Liquibase formatted SQL: pg-index-health-demo's master changelog with a tolerated failure,
//! Liquibase's own changelogs, and a tolerated failure inside a transaction.

use fleetshift_common::engine::ShardEngine;
use fleetshift_common::ledger::RevisionStatus;
use fleetshift_common::source::{MigrationSet, SourceFormat};
use fleetshift_tests::{binary, fixtures};

use super::{adopt_after_refusal, lint_report, postgres_tables};
use crate::integration::support::{self, Database, json};

#[tokio::test]
async fn pg_index_health_demos_liquibase_changelog_runs_through_its_master_with_a_tolerated_failure()
 {
    let directory = fixtures::pg_index_health_demo();
    let set = MigrationSet::load(&directory, None).expect("the changelog loads as it is");
    assert_eq!(set.format, SourceFormat::Liquibase);
    assert_eq!(set.revisions.len(), 41);
    let first: Vec<&str> = set.revisions[..3]
        .iter()
        .map(|revision| revision.name.as_str())
        .collect();
    assert_eq!(
        first,
        [
            "ivan.vakhrushev:2020.01.01:create.schema",
            "ivan.vakhrushev:2024.11.01:warehouse.table",
            "ivan.vakhrushev:2025.06.28:warehouse.created_at.column",
        ],
        "schema.sql, then warehouse.sql, as the master lists them"
    );
    let tolerant: Vec<&str> = set
        .revisions
        .iter()
        .filter(|revision| revision.failure_tolerated)
        .map(|revision| revision.name.as_str())
        .collect();
    assert_eq!(
        tolerant,
        ["ivan.vakhrushev:2020.01.02:create.unique.index.on.email"]
    );
    let report = lint_report(&directory, 0);
    assert_eq!(report["revisions"], 41, "{report}");

    let Database {
        cluster: _cluster,
        url,
        admin,
    } = support::database("pg_index_health").await;
    let path = directory.to_str().expect("UTF-8 path");
    let up = binary::run(&url, &["migrate", "up", "--dir", path, "--output", "json"]);
    assert!(up.status.success(), "{}", binary::printed(&up));
    // The demo's unique index on emails it made duplicate fails, as the demo means it to;
    // failOnError:false records it with its failure and the run goes on to the end.
    let steps = json(&up)["steps"].clone();
    assert_eq!(steps.as_array().map(Vec::len), Some(41), "{steps}");
    let tolerated: Vec<&serde_json::Value> = steps
        .as_array()
        .expect("steps")
        .iter()
        .filter(|step| step.get("tolerated_failure").is_some())
        .collect();
    assert_eq!(tolerated.len(), 1, "{steps}");
    let failure = tolerated[0]["tolerated_failure"].as_str().expect("text");
    assert!(
        failure.contains("sql/buyer.sql:35") && failure.contains("could not create unique index"),
        "{failure}"
    );
    let shard = support::postgres(&url).await;
    let ledger = shard.read_ledger().await.expect("ledger");
    assert_eq!(ledger.len(), 41);
    assert!(
        ledger
            .iter()
            .all(|entry| entry.status == RevisionStatus::Applied),
        "{ledger:?}"
    );
    let recorded: Vec<&str> = ledger
        .iter()
        .filter_map(|entry| entry.error.as_deref())
        .collect();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert!(
        recorded[0].starts_with("failure tolerated (failOnError:false): "),
        "{recorded:?}"
    );
    // What the demo is about: the failed concurrent build left an INVALID index behind.
    let valid: bool = sqlx::query_scalar(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = 'demo.i_buyer_email'::regclass",
    )
    .fetch_one(&admin)
    .await
    .expect("the index the build left");
    assert!(!valid);
    let again = binary::run(&url, &["migrate", "up", "--dir", path, "--output", "json"]);
    assert!(again.status.success(), "{}", binary::printed(&again));
    assert_eq!(
        json(&again)["steps"].as_array().map(Vec::len),
        Some(0),
        "recorded: not run again"
    );
}

#[tokio::test]
async fn liquibase_formatted_changelogs_go_up_and_down_and_a_liquibase_history_is_adopted() {
    let directory = fixtures::liquibase_tests();
    let set = MigrationSet::load(&directory, None).expect("Liquibase's changelogs load");
    assert_eq!(set.format, SourceFormat::Liquibase);
    let names: Vec<&str> = set
        .revisions
        .iter()
        .map(|revision| revision.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "your.name:1",
            "nvoxland:1",
            "flautert:3324_1",
            "flautert:3324_2"
        ],
        "files in name order, changesets in file order"
    );
    let path = directory.to_str().expect("UTF-8 path");
    // A changelog file inside the set is linted as the changesets it holds.
    let file = directory.join("rollbackable.changelog.sql");
    assert_eq!(lint_report(&file, 0)["revisions"], 2);

    let Database {
        cluster: _cluster,
        url,
        admin,
    } = support::database("liquibase").await;
    let up = binary::run(&url, &["migrate", "up", "--dir", path]);
    assert!(up.status.success(), "{}", binary::printed(&up));
    assert_eq!(
        postgres_tables(&admin).await,
        ["included_sql", "person", "rollback_test"]
    );
    // `-- rollback DROP TABLE rollback_test` and `-- rollback empty` revert 4 and 3; the
    // first file has no rollback, so going further is refused naming it.
    let down = binary::run(&url, &["migrate", "down", "--to", "2", "--dir", path]);
    assert!(down.status.success(), "{}", binary::printed(&down));
    assert_eq!(postgres_tables(&admin).await, ["included_sql", "person"]);
    let refused = binary::run(&url, &["migrate", "down", "--to", "base", "--dir", path]);
    support::assert_exit(&refused, 2);
    assert!(
        binary::printed(&refused).contains("your.name:1"),
        "{}",
        binary::printed(&refused)
    );

    // A database Liquibase migrated through the first two changesets: its history is adopted
    // by author:id and nothing is run twice.
    let Database {
        cluster: _other,
        url,
        admin,
    } = support::database("from_liquibase").await;
    sqlx::raw_sql(
        "CREATE TABLE databasechangelog (id varchar(255) NOT NULL, author varchar(255) NOT NULL,
             filename varchar(255) NOT NULL, dateexecuted timestamp NOT NULL,
             orderexecuted int NOT NULL, exectype varchar(10) NOT NULL, md5sum varchar(35));
         INSERT INTO databasechangelog VALUES
             ('1', 'your.name', 'changelog/basic.formatted.sql', now(), 1, 'EXECUTED', '9:0'),
             ('1', 'nvoxland', 'changelog/included.sql', now(), 2, 'EXECUTED', '9:0'),
             ('3324_1', 'flautert', 'changelog/rollbackable.changelog.sql', now(), 3, 'FAILED', '9:0');
         CREATE TABLE person (id int primary key, name varchar(50) not null, address1 varchar(50),
             address2 varchar(50), city varchar(30));
         CREATE TABLE included_sql (id int not null primary key, name varchar(255));",
    )
    .execute(&admin)
    .await
    .expect("Liquibase's history");
    adopt_after_refusal(&url, path, "databasechangelog");
    let shard = support::postgres(&url).await;
    assert_eq!(
        shard.read_ledger().await.expect("ledger").len(),
        2,
        "the FAILED row is not adopted"
    );
    let up = binary::run(&url, &["migrate", "up", "--dir", path]);
    assert!(up.status.success(), "{}", binary::printed(&up));
    assert_eq!(shard.read_ledger().await.expect("ledger").len(), 4);
}

/// The transactional side of `failOnError:false` (pg-index-health-demo's tolerated failure
/// runs outside a transaction): the failed changeset's transaction is rolled back whole, the
/// revision is recorded with its failure, and the next one runs (on SQLite, through the CLI).
#[tokio::test]
async fn a_tolerated_failure_in_a_transaction_leaves_nothing_of_it_and_the_run_goes_on() {
    let directory = fixtures::migrations(&[(
        "changelog.sql",
        "--liquibase formatted sql
--changeset a:1
CREATE TABLE a (id integer);
--changeset a:2 failOnError:false
CREATE TABLE half (id integer);
INSERT INTO missing VALUES (1);
--changeset a:3
CREATE TABLE c (id integer);
",
    )]);
    let home = tempfile::tempdir().expect("tempdir");
    let database = home.path().join("shard.db");
    let url = format!("sqlite:{}", database.display());
    let up = binary::run(&url, &["migrate", "up", "--dir", support::dir(&directory)]);
    assert!(up.status.success(), "{}", binary::printed(&up));
    assert!(
        binary::printed(&up).contains("failed, and recorded as applied (failOnError:false)"),
        "{}",
        binary::printed(&up)
    );
    let pool = sqlx::SqlitePool::connect(&url).await.expect("SQLite");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('a', 'half', 'c') ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .expect("catalog");
    assert_eq!(tables, ["a", "c"], "nothing of the failed changeset stays");
    let shard = support::sqlite(&database).await;
    let ledger = shard.read_ledger().await.expect("ledger");
    assert_eq!(ledger.len(), 3);
    assert!(
        ledger
            .iter()
            .all(|entry| entry.status == RevisionStatus::Applied)
    );
    assert!(
        ledger[1]
            .error
            .as_deref()
            .is_some_and(|error| error.contains("changelog.sql:6") && error.contains("missing")),
        "{ledger:?}"
    );
}
