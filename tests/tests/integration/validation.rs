//! Post-migration validation on real PostgreSQL and SQLite.
//!
//! - The validator, before and after a hand-made mess: an index left invalid by a failed
//!   concurrent build fails the report, a foreign key added `NOT VALID` over orphaned rows is
//!   listed with its count and first keys, a deleted row changes the checksum, and the row
//!   counts say before and after. A key check that would queue behind another session's
//!   `ACCESS EXCLUSIVE` lock gives up within the lock timeout instead.
//! - The executor with `--verify-data` checks inside each revision's transaction: a revision
//!   that deletes protected rows is rolled back whole (the rows are all there), recorded as
//!   failed, and says which table changed and how; on SQLite too.
//! - SQLite: `foreign_key_check` finds orphans, and the checksum sees a changed value.

use std::time::Duration;

use fleetshift_common::engine::ShardEngine;
use fleetshift_common::error::ErrorKind;
use fleetshift_common::executor::Request;
use fleetshift_common::ledger::RevisionStatus;
use fleetshift_common::proto::v1::DataCheck;
use fleetshift_common::source::MigrationSet;
use fleetshift_common::validation::{self, Checks, Validator};
use sqlx::Connection;

use fleetshift_tests::fixtures;

use super::support;

const SHOP: &str = "
    CREATE TABLE customers (id bigint PRIMARY KEY, name text);
    CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint, region text, total numeric NOT NULL);
    INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 5) g;
    INSERT INTO orders SELECT g, 1 + g % 5, CASE WHEN g = 7 THEN NULL ELSE 'eu' END, g * 10
    FROM generate_series(1, 20) g;";

fn orders(columns: &[&str]) -> Vec<DataCheck> {
    vec![DataCheck {
        table: "orders".to_owned(),
        columns: columns.iter().map(|column| (*column).to_owned()).collect(),
    }]
}

fn checks<'a>(touched: &'a [String], verify_data: &'a [DataCheck]) -> Checks<'a> {
    Checks {
        touched,
        verify_data,
        lock_timeout: Duration::from_millis(300),
        statement_timeout: Duration::from_secs(30),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_validator_fails_what_the_revisions_broke_and_lists_what_stands() {
    let database = support::database("validated").await;
    let admin = &database.admin;
    sqlx::raw_sql(SHOP).execute(admin).await.expect("schema");
    let shard = support::postgres(&database.url).await;
    let validator = Validator::Postgres(shard.pool());
    let touched = ["orders".to_owned(), "invoices".to_owned()];
    let verify = orders(&["id", "total"]);
    let plan = checks(&touched, &verify);
    let before = validator.observe(&plan).await.expect("before");
    assert_eq!(before.refusal(&plan), None);

    // What a run might leave: a unique index whose concurrent build failed on duplicates, a
    // foreign key written NOT VALID over orphans, a new table, a row deleted.
    let failed_build =
        sqlx::raw_sql("CREATE UNIQUE INDEX CONCURRENTLY orders_region_key ON orders (region)")
            .execute(admin)
            .await;
    assert!(failed_build.is_err(), "the duplicates fail the build");
    sqlx::raw_sql(
        "UPDATE orders SET customer_id = 99 WHERE id IN (3, 4);
         ALTER TABLE orders ADD CONSTRAINT orders_customer_fk FOREIGN KEY (customer_id)
             REFERENCES customers (id) NOT VALID;
         CREATE TABLE invoices (id bigint);
         DELETE FROM orders WHERE id = 20;",
    )
    .execute(admin)
    .await
    .expect("the mess");
    let after = validator.observe(&plan).await.expect("after");
    let keys = validator.foreign_keys(&plan).await.expect("keys");
    let report = validation::compare(&before, &after, &verify, keys);
    assert!(!report.passed);
    assert_eq!(report.failures.len(), 2, "{:#?}", report.failures);
    assert_eq!(
        report.failures[0],
        "index orders_region_key is invalid after the revisions (a concurrent build failed part-way): drop it and build it again, or roll back"
    );
    assert!(
        report.failures[1].starts_with(
            "--verify-data orders:id,total: the data changed: 20 row(s) before, 19 after, checksum "
        ),
        "{:#?}",
        report.failures
    );
    let notes = report.notes.join("\n");
    assert!(
        notes.contains(
            "constraint orders.orders_customer_fk is NOT VALID (left so by the revisions)"
        ),
        "{notes}"
    );
    assert!(
        notes.contains(
            "foreign key orders.orders_customer_fk: 2 row(s) violate it (first: (99), (99))"
        ),
        "{notes}"
    );
    let counts: Vec<(String, Option<i64>, Option<i64>)> = report
        .row_counts
        .iter()
        .map(|rows| (rows.table.clone(), rows.before, rows.after))
        .collect();
    assert_eq!(
        counts,
        [
            ("invoices".to_owned(), None, Some(0)),
            ("orders".to_owned(), Some(20), Some(19))
        ]
    );

    // The key check waits for no lock longer than the plan's lock timeout.
    let mut holder = sqlx::PgConnection::connect(&database.url)
        .await
        .expect("connect");
    let mut holding = holder.begin().await.expect("begin");
    sqlx::raw_sql("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *holding)
        .await
        .expect("lock");
    let blocked = validator.foreign_keys(&plan).await.expect("keys");
    assert!(
        blocked[0].error.contains("lock timeout"),
        "{:?}",
        blocked[0]
    );
    holding.rollback().await.expect("release");
}

/// A history whose second revision deletes an order nobody meant to delete.
fn deleting_history() -> (tempfile::TempDir, MigrationSet) {
    let directory = fixtures::migrations(&[
        ("1_note.up.sql", "ALTER TABLE orders ADD COLUMN note text;"),
        ("1_note.down.sql", "ALTER TABLE orders DROP COLUMN note;"),
        (
            "2_cleanup.up.sql",
            "UPDATE orders SET note = 'checked';\nDELETE FROM orders WHERE region IS NULL;",
        ),
        ("2_cleanup.down.sql", "UPDATE orders SET note = NULL;"),
    ]);
    let set = MigrationSet::load(directory.path(), None).expect("set");
    (directory, set)
}

/// Runs the deleting history with `orders:id,total` protected: revision 1 applies, revision
/// 2 is rolled back whole and recorded failed, naming the table and the counts.
async fn a_deleting_revision_is_rolled_back_whole<E: ShardEngine>(engine: &E) {
    let (_directory, set) = deleting_history();
    let protected = orders(&["id", "total"]);
    let error = support::executor(engine, "agent-a", Some(1))
        .verify_data(&protected)
        .up(&set, &Request::default())
        .await
        .expect_err("the deletion is refused");
    assert_eq!(error.kind(), ErrorKind::Failed, "{error}");
    let said = error.to_string();
    assert!(
        said.contains("the revision changed data the plan says no revision may change: --verify-data orders:id,total: the data changed: 20 row(s) before, 19 after"),
        "{said}"
    );
    assert!(
        said.contains("none of the revision's statements took effect"),
        "{said}"
    );
    assert!(
        said.contains("2_cleanup.up.sql (the --verify-data check after its last statement)"),
        "{said}"
    );
    let ledger = engine.read_ledger().await.expect("ledger");
    let status = |version: &str| {
        ledger
            .iter()
            .find(|entry| entry.version == version)
            .map(|entry| entry.status)
    };
    assert_eq!(status("1"), Some(RevisionStatus::Applied));
    assert_eq!(status("2"), Some(RevisionStatus::Failed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revision_that_deletes_protected_rows_is_rolled_back_whole() {
    let database = support::database("protected").await;
    sqlx::raw_sql(SHOP)
        .execute(&database.admin)
        .await
        .expect("schema");
    let shard = support::postgres(&database.url).await;
    a_deleting_revision_is_rolled_back_whole(&shard).await;
    let (rows, noted): (i64, i64) = sqlx::query_as("SELECT count(*), count(note) FROM orders")
        .fetch_one(&database.admin)
        .await
        .expect("count");
    assert_eq!((rows, noted), (20, 0), "every row is there, untouched");

    let directory = tempfile::tempdir().expect("tempdir");
    let path = directory.path().join("shop.db");
    let shard = support::sqlite(&path).await;
    let sqlite_shop = "
        CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT);
        CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER, region TEXT,
                             total NUMERIC NOT NULL);
        WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 20)
        INSERT INTO orders SELECT n, 1, CASE WHEN n = 7 THEN NULL ELSE 'eu' END, n * 10 FROM g;";
    sqlx::raw_sql(sqlite_shop)
        .execute(shard.pool())
        .await
        .expect("schema");
    a_deleting_revision_is_rolled_back_whole(&shard).await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(shard.pool())
        .await
        .expect("count");
    assert_eq!(rows, 20);
}

#[tokio::test]
async fn sqlite_validation_finds_orphans_and_changed_values() {
    let directory = tempfile::tempdir().expect("tempdir");
    let shard = support::sqlite(&directory.path().join("shop.db")).await;
    sqlx::raw_sql(
        "CREATE TABLE customers (id INTEGER PRIMARY KEY);
         CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers (id), total NUMERIC);
         INSERT INTO customers VALUES (1);
         INSERT INTO orders VALUES (1, 1, 10), (2, 1, 20);",
    )
    .execute(shard.pool())
    .await
    .expect("schema");
    let validator = Validator::Sqlite(shard.pool());
    let touched = ["orders".to_owned()];
    let verify = orders(&[]);
    let plan = checks(&touched, &verify);
    let before = validator.observe(&plan).await.expect("before");
    // An orphan, as a connection without foreign-key enforcement (SQLite's default) writes it.
    let mut connection = shard.pool().acquire().await.expect("connection");
    sqlx::raw_sql(
        "PRAGMA foreign_keys = OFF;
         UPDATE orders SET total = 21 WHERE id = 2; INSERT INTO orders VALUES (3, 42, 5);
         PRAGMA foreign_keys = ON;",
    )
    .execute(&mut *connection)
    .await
    .expect("change");
    drop(connection);
    let after = validator.observe(&plan).await.expect("after");
    let keys = validator.foreign_keys(&plan).await.expect("keys");
    let report = validation::compare(&before, &after, &verify, keys);
    assert!(!report.passed);
    assert!(
        report.failures[0]
            .starts_with("--verify-data orders: the data changed: 2 row(s) before, 3 after"),
        "{:?}",
        report.failures
    );
    assert_eq!(
        report.notes,
        [
            "foreign key orders -> customers: 1 row(s) violate it (first: rowid 3); fix them before the key is validated"
        ]
    );
    assert_eq!(report.row_counts[0].before, Some(2));
    assert_eq!(report.row_counts[0].after, Some(3));
    let missing = vec![DataCheck {
        table: "ordrs".to_owned(),
        columns: Vec::new(),
    }];
    let refused = validator
        .observe(&checks(&touched, &missing))
        .await
        .expect("observed");
    assert_eq!(
        refused.refusal(&checks(&touched, &missing)).as_deref(),
        Some("--verify-data ordrs: no such table before the revisions; fix the plan's table name")
    );
}
