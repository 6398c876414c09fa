//! Versions and revisions as real projects write them: digit strings of any length (20-digit
//! timestamps are beyond 64 bits), ordered by magnitude and named however spelled (`--to`
//! with leading zeros), through the CLI on PostgreSQL and SQLite, recorded in the ledger as
//! written; up scripts without statements applied as recorded no-ops; and a file named almost
//! like a migration refused with what is wrong with it.

use fleetshift_common::engine::ShardEngine;
use fleetshift_tests::{binary, fixtures};

use super::support::{self, Database, dir, json};

const FIRST: &str = "20150100000001000000";
const SECOND: &str = "20150101000001000000";
const THIRD: &str = "100000000000000000000000";

fn long_versions() -> tempfile::TempDir {
    fixtures::migrations(&[
        (
            "20150101000001000000_b.up.sql",
            "CREATE TABLE b (id integer);",
        ),
        ("20150101000001000000_b.down.sql", "DROP TABLE b;"),
        (
            "20150100000001000000_a.up.sql",
            "CREATE TABLE a (id integer);",
        ),
        ("20150100000001000000_a.down.sql", "DROP TABLE a;"),
        (
            "100000000000000000000000_c.up.sql",
            "CREATE TABLE c (id integer);",
        ),
        ("100000000000000000000000_c.down.sql", "DROP TABLE c;"),
    ])
}

/// Up to the second version (named with leading zeros), then the rest, then down to the first;
/// the shard's version after each step, as `migrate status` reports it.
fn walk(url: &str, directory: &tempfile::TempDir) -> Vec<String> {
    let current = || {
        let status = binary::run(
            url,
            &[
                "migrate",
                "status",
                "--dir",
                dir(directory),
                "--output",
                "json",
            ],
        );
        json(&status)["status"]["current_version"]
            .as_str()
            .unwrap_or("base")
            .to_owned()
    };
    let mut seen = Vec::new();
    for step in [
        vec![
            "migrate",
            "up",
            "--dir",
            dir(directory),
            "--to",
            "00020150101000001000000",
        ],
        vec!["migrate", "up", "--dir", dir(directory)],
        vec!["migrate", "down", "--dir", dir(directory), "--to", FIRST],
    ] {
        let output = binary::run(url, &step);
        assert!(
            output.status.success(),
            "{step:?}: {}",
            binary::printed(&output)
        );
        seen.push(current());
    }
    seen
}

#[tokio::test]
async fn twenty_digit_versions_go_up_and_down_on_postgres_in_order() {
    let Database {
        cluster: _cluster,
        url,
        admin: _admin,
    } = support::database("long_versions").await;
    let directory = long_versions();
    assert_eq!(walk(&url, &directory), [SECOND, THIRD, FIRST]);
    let shard = support::postgres(&url).await;
    let mut recorded: Vec<(String, String)> = shard
        .read_ledger()
        .await
        .expect("ledger")
        .into_iter()
        .map(|entry| (entry.version, entry.status.to_string()))
        .collect();
    recorded.sort();
    assert_eq!(
        recorded,
        [
            (THIRD.to_owned(), "reverted".to_owned()),
            (FIRST.to_owned(), "applied".to_owned()),
            (SECOND.to_owned(), "reverted".to_owned()),
        ],
        "recorded as written, beyond 64 bits"
    );
}

#[tokio::test]
async fn twenty_digit_versions_go_up_and_down_on_sqlite_in_order() {
    let home = tempfile::tempdir().expect("home");
    let url = format!("sqlite:{}", home.path().join("shard.db").display());
    let directory = long_versions();
    assert_eq!(walk(&url, &directory), [SECOND, THIRD, FIRST]);
}

#[test]
fn a_file_named_almost_like_a_migration_is_refused_naming_it_and_the_cause() {
    let directory = fixtures::migrations(&[
        ("20150100000001000000_a.up.sql", "SELECT 1;"),
        ("2015010000000100000a_b.up.sql", "SELECT 1;"),
    ]);
    let verify = binary::run("", &["migrate", "verify", "--dir", dir(&directory)]);
    support::assert_exit(&verify, 2);
    let printed = binary::printed(&verify);
    assert!(
        printed.contains("2015010000000100000a_b.up.sql")
            && printed.contains("the version `2015010000000100000a` is not a number"),
        "{printed}"
    );
    assert!(!printed.contains("unrecognised layout"), "{printed}");
}

/// A history with a comment-only placeholder and an empty step between two real revisions.
fn with_no_ops() -> tempfile::TempDir {
    fixtures::migrations(&[
        ("1_a.up.sql", "CREATE TABLE a (id integer);"),
        (
            "2_mysql_only.up.sql",
            "-- This step only exists for MySQL; kept so versions line up.\n",
        ),
        ("3_empty.up.sql", ""),
        ("4_b.up.sql", "CREATE TABLE b (id integer);"),
    ])
}

/// Every revision of [`with_no_ops`] is recorded applied in `ledger`, with its checksum.
fn assert_all_recorded(ledger: Vec<fleetshift_common::ledger::LedgerEntry>) {
    let directory = with_no_ops();
    let set = fleetshift_common::source::MigrationSet::load(directory.path(), None).expect("set");
    let mut recorded: Vec<(String, String, String)> = ledger
        .into_iter()
        .map(|entry| (entry.version, entry.status.to_string(), entry.checksum))
        .collect();
    recorded.sort();
    let expected: Vec<(String, String, String)> = set
        .revisions
        .iter()
        .map(|revision| {
            (
                revision.version.to_string(),
                "applied".to_owned(),
                revision.checksum.clone(),
            )
        })
        .collect();
    assert_eq!(
        recorded, expected,
        "every revision recorded, the no-ops too"
    );
}

#[tokio::test]
async fn up_scripts_without_statements_are_applied_as_recorded_no_ops() {
    let Database {
        cluster: _cluster,
        url,
        admin,
    } = support::database("no_ops").await;
    let directory = with_no_ops();
    let verify = binary::run(&url, &["migrate", "verify", "--dir", dir(&directory)]);
    assert!(verify.status.success(), "{}", binary::printed(&verify));
    let printed = binary::printed(&verify);
    assert!(
        printed.contains("no-op revision 2_mysql_only")
            && printed.contains("no-op revision 3_empty"),
        "{printed}"
    );
    let listed = binary::run(
        &url,
        &[
            "migrate",
            "verify",
            "--dir",
            dir(&directory),
            "--output",
            "json",
        ],
    );
    assert_eq!(
        json(&listed)["no_ops"].as_array().map(Vec::len),
        Some(2),
        "{}",
        binary::printed(&listed)
    );

    let up = binary::run(&url, &["migrate", "up", "--dir", dir(&directory)]);
    assert!(up.status.success(), "{}", binary::printed(&up));
    let b: bool = sqlx::query_scalar("SELECT to_regclass('b') IS NOT NULL")
        .fetch_one(&admin)
        .await
        .expect("catalog");
    assert!(b, "the revision after the no-ops ran");
    let shard = support::postgres(&url).await;
    assert_all_recorded(shard.read_ledger().await.expect("ledger"));

    let home = tempfile::tempdir().expect("home");
    let path = home.path().join("shard.db");
    let sqlite_url = format!("sqlite:{}", path.display());
    let up = binary::run(&sqlite_url, &["migrate", "up", "--dir", dir(&directory)]);
    assert!(up.status.success(), "{}", binary::printed(&up));
    let shard = support::sqlite(&path).await;
    assert_all_recorded(shard.read_ledger().await.expect("ledger"));
}

/// Flyway's repeatable scripts never stand in the way of reverting versioned revisions: the
/// down guard looks past them (on SQLite, through the CLI).
#[tokio::test]
async fn versioned_revisions_revert_past_applied_repeatable_scripts() {
    let directory = fixtures::migrations(&[
        ("V1__a.sql", "CREATE TABLE a (id integer);"),
        ("U1__a.sql", "DROP TABLE a;"),
        ("V2__b.sql", "CREATE TABLE b (id integer);"),
        ("U2__b.sql", "DROP TABLE b;"),
        (
            "R__views.sql",
            "DROP VIEW IF EXISTS v;\nCREATE VIEW v AS SELECT 1 AS one;",
        ),
    ]);
    let home = tempfile::tempdir().expect("tempdir");
    let database = home.path().join("shard.db");
    let url = format!("sqlite:{}", database.display());
    let up = binary::run(&url, &["migrate", "up", "--dir", dir(&directory)]);
    assert!(up.status.success(), "{}", binary::printed(&up));
    let down = binary::run(
        &url,
        &[
            "migrate",
            "down",
            "--dir",
            dir(&directory),
            "--output",
            "json",
        ],
    );
    assert!(down.status.success(), "{}", binary::printed(&down));
    let steps = json(&down)["steps"].clone();
    assert_eq!(steps.as_array().map(Vec::len), Some(1), "{steps}");
    assert_eq!(steps[0]["version"], "2", "{steps}");
    let shard = support::sqlite(&database).await;
    let ledger = shard.read_ledger().await.expect("ledger");
    let reverted: Vec<&str> = ledger
        .iter()
        .filter(|entry| entry.status == fleetshift_common::ledger::RevisionStatus::Reverted)
        .map(|entry| entry.version.as_str())
        .collect();
    assert_eq!(reverted, ["2"]);
}
