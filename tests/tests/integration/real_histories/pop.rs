//! pop: Ory Kratos's 703 versions, each engine running its own dialect files; popx's history
//! adopted on SQLite.

use fleetshift_common::engine::ShardEngine;
use fleetshift_common::ledger::RevisionStatus;
use fleetshift_common::source::{MigrationSet, SourceFormat};
use fleetshift_tests::{binary, fixtures};
use sqlx::Connection;

use super::{adopt_after_refusal, postgres_tables};
use crate::integration::support::{self, Database};

#[tokio::test]
async fn kratos_pop_history_goes_up_and_down_on_postgres_with_its_postgres_files() {
    let directory = fixtures::kratos();
    let set = MigrationSet::load(&directory, None).expect("Kratos's history loads as it is");
    assert_eq!(set.format, SourceFormat::Pop);
    assert_eq!(set.revisions.len(), 703);
    assert_eq!(set.revisions[0].version.as_str(), "20150100000001000000");
    assert!(set.ignored.is_empty(), "{:?}", set.ignored);
    let path = directory.to_str().expect("UTF-8 path");

    let Database {
        cluster: _cluster,
        url,
        admin,
    } = support::database("kratos").await;
    let up = binary::run(&url, &["migrate", "up", "--dir", path]);
    assert!(up.status.success(), "{}", binary::printed(&up));
    let shard = support::postgres(&url).await;
    let ledger = shard.read_ledger().await.expect("ledger");
    assert_eq!(ledger.len(), 703);
    assert!(
        ledger
            .iter()
            .all(|entry| entry.status == RevisionStatus::Applied),
        "{ledger:?}"
    );
    let tables = postgres_tables(&admin).await;
    for table in [
        "identities",
        "identity_credentials",
        "sessions",
        "networks",
        "courier_messages",
    ] {
        assert!(
            tables.iter().any(|name| name == table),
            "{table} missing: {tables:?}"
        );
    }
    // PostgreSQL ran the postgres files: Kratos gives its id columns the uuid type there.
    let id_type: String = sqlx::query_scalar(
        "SELECT data_type::text FROM information_schema.columns
         WHERE table_name = 'identities' AND column_name = 'id'",
    )
    .fetch_one(&admin)
    .await
    .expect("catalog");
    assert_eq!(id_type, "uuid");

    let down = binary::run(&url, &["migrate", "down", "--to", "base", "--dir", path]);
    assert!(down.status.success(), "{}", binary::printed(&down));
    assert_eq!(postgres_tables(&admin).await, Vec::<String>::new());
    let ledger = shard.read_ledger().await.expect("ledger");
    assert!(
        ledger
            .iter()
            .all(|entry| entry.status == RevisionStatus::Reverted),
        "{ledger:?}"
    );
}

/// The file popx would run on SQLite for one version of a pop directory: its `sqlite3` (or
/// `sqlite`) file, else its dialect-less one. Written here from popx's rule, apart from the
/// reader under test.
fn popx_sqlite_file(directory: &std::path::Path, version: &str) -> Option<std::path::PathBuf> {
    let mut names: Vec<String> = std::fs::read_dir(directory)
        .expect("list")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.starts_with(&format!("{version}_")) && name.ends_with(".up.sql"))
        .collect();
    names.sort();
    let dialect = |name: &String| name.split('.').nth(1).map(str::to_owned);
    names
        .iter()
        .find(|name| matches!(dialect(name).as_deref(), Some("sqlite3" | "sqlite")))
        .or_else(|| {
            names
                .iter()
                .find(|name| matches!(dialect(name).as_deref(), Some("up" | "autocommit")))
        })
        .map(|name| directory.join(name))
}

#[tokio::test]
async fn kratos_pop_history_is_adopted_from_popx_and_finished_on_sqlite_with_its_sqlite_files() {
    let directory = fixtures::kratos();
    let set = MigrationSet::load(&directory, None).expect("Kratos's history loads as it is");
    let path = directory.to_str().expect("UTF-8 path");
    let home = tempfile::tempdir().expect("tempdir");
    let database = home.path().join("kratos.db");
    let url = format!("sqlite:{}", database.display());

    // popx ran the first 120 versions and kept its schema_migration table.
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&database)
        .create_if_missing(true);
    let mut popx = sqlx::SqliteConnection::connect_with(&options)
        .await
        .expect("SQLite");
    sqlx::raw_sql(
        "CREATE TABLE schema_migration (version VARCHAR (48) NOT NULL, version_self INT NOT NULL DEFAULT 0);
         CREATE UNIQUE INDEX schema_migration_version_idx ON schema_migration (version);",
    )
    .execute(&mut popx)
    .await
    .expect("popx's table");
    let mut skipped = 0;
    for revision in &set.revisions[..120] {
        let version = revision.version.as_str();
        // popx neither runs nor records a version with no file for its dialect.
        let Some(file) = popx_sqlite_file(&directory, version) else {
            skipped += 1;
            continue;
        };
        let sql = std::fs::read_to_string(&file).expect("read");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut popx)
            .await
            .unwrap_or_else(|error| panic!("{}: {error}", file.display()));
        sqlx::query("INSERT INTO schema_migration (version) VALUES (?1)")
            .bind(version)
            .execute(&mut popx)
            .await
            .expect("record");
    }
    popx.close().await.expect("close");
    assert!(skipped > 0, "Kratos has versions for other dialects only");

    adopt_after_refusal(&url, path, "schema_migration");
    // The 120 adopted revisions created tables already: running one again would fail.
    let up = binary::run(&url, &["migrate", "up", "--dir", path]);
    assert!(up.status.success(), "{}", binary::printed(&up));
    let shard = support::sqlite(&database).await;
    let ledger = shard.read_ledger().await.expect("ledger");
    assert_eq!(ledger.len(), 703);
    assert!(
        ledger
            .iter()
            .all(|entry| entry.status == RevisionStatus::Applied),
        "{ledger:?}"
    );

    // SQLite ran its own files: PostgreSQL's alter constraints and columns in ways SQLite
    // refuses, and the sqlite3 files rebuild tables through `_tmp` copies they drop again.
    let tables = |pool: sqlx::SqlitePool| async move {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table'
             AND name NOT LIKE 'fleetshift%' AND name NOT LIKE 'sqlite_%' ORDER BY 1",
        )
        .fetch_all(&pool)
        .await
        .expect("catalog");
        names
    };
    let pool = sqlx::SqlitePool::connect(&url).await.expect("SQLite");
    let after_up = tables(pool.clone()).await;
    for table in [
        "identities",
        "identity_credentials",
        "sessions",
        "networks",
        "schema_migration",
    ] {
        assert!(
            after_up.iter().any(|name| name == table),
            "{table} missing: {after_up:?}"
        );
    }
    assert!(
        !after_up.iter().any(|name| name.ends_with("_tmp")),
        "{after_up:?}"
    );

    let down = binary::run(&url, &["migrate", "down", "--to", "base", "--dir", path]);
    assert!(down.status.success(), "{}", binary::printed(&down));
    assert_eq!(
        tables(pool).await,
        ["schema_migration"],
        "only popx's own table is left"
    );
}
