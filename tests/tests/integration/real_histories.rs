//! Public migration histories nobody on this project wrote, taken as they are (files copied
//! unchanged into `tests/fixtures/` with their source and license): loaded, linted, applied
//! to a real PostgreSQL database and recorded.

use fleetshift_common::engine::ShardEngine;
use fleetshift_common::ledger::RevisionStatus;
use fleetshift_common::source::{MigrationSet, SourceFormat};
use fleetshift_tests::{binary, fixtures};
use sqlx::Connection;

use super::support::{self, Database, json};

#[tokio::test]
async fn harbors_golang_migrate_history_loads_lints_and_applies_as_it_is() {
    let directory = fixtures::harbor();
    let set = MigrationSet::load(&directory, None).expect("Harbor's history loads as it is");
    assert_eq!(set.format, SourceFormat::Sqlx);
    assert_eq!(set.revisions.len(), 39);
    assert_eq!(set.revisions[0].version.as_str(), "0001");
    assert!(set.ignored.is_empty(), "{:?}", set.ignored);
    let path = directory.to_str().expect("UTF-8 path");

    let report = lint_report(&directory, 0);
    assert_eq!(report["revisions"], 39, "{report}");
    assert_eq!(
        report["problems"].as_array().map(Vec::len),
        Some(0),
        "{report}"
    );

    let Database {
        cluster: _cluster,
        url,
        admin,
    } = support::database("harbor").await;
    // Harbor's 2.0 revision alters golang-migrate's own history table (to record a data
    // version), so the history runs where golang-migrate made that table, as on every real
    // Harbor database: make it, empty, as golang-migrate does before its first run.
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL)",
    )
    .execute(&admin)
    .await
    .expect("golang-migrate's table");
    let up = binary::run(&url, &["migrate", "up", "--dir", path]);
    assert!(up.status.success(), "{}", binary::printed(&up));
    let shard = support::postgres(&url).await;
    let ledger = shard.read_ledger().await.expect("ledger");
    assert_eq!(ledger.len(), 39);
    assert!(
        ledger
            .iter()
            .all(|entry| entry.status == RevisionStatus::Applied),
        "{ledger:?}"
    );
    let present: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables
         WHERE schemaname = 'public' AND tablename IN ('artifact', 'project', 'repository', 'task', 'execution')
         ORDER BY 1",
    )
    .fetch_all(&admin)
    .await
    .expect("catalog");
    assert_eq!(
        present,
        ["artifact", "execution", "project", "repository", "task"],
        "Harbor's schema is there"
    );
    // 0030 added a column to golang-migrate's table and 0040 dropped it again, as in Harbor.
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns
         WHERE table_name = 'schema_migrations' ORDER BY ordinal_position",
    )
    .fetch_all(&admin)
    .await
    .expect("catalog");
    assert_eq!(
        columns,
        ["version", "dirty"],
        "golang-migrate's table as Harbor leaves it"
    );

    // Nothing left to do; and no down scripts, so a revert is refused naming them.
    let again = binary::run(&url, &["migrate", "up", "--dir", path]);
    assert!(again.status.success(), "{}", binary::printed(&again));
    let down = binary::run(&url, &["migrate", "down", "--dir", path]);
    support::assert_exit(&down, 2);
    assert!(
        binary::printed(&down).contains("0190_2.16.0_schema"),
        "{}",
        binary::printed(&down)
    );
}

/// `fleetshift lint PATH --output json --fail-on never`: its report, once it exited `code`.
fn lint_report(path: &std::path::Path, code: i32) -> serde_json::Value {
    let lint = std::process::Command::new(binary::fleetshift())
        .args([
            "lint",
            path.to_str().expect("UTF-8 path"),
            "--output",
            "json",
            "--fail-on",
            "never",
        ])
        .output()
        .expect("lint");
    support::assert_exit(&lint, code);
    json(&lint)
}

/// `up` refuses a database another tool migrated, naming that tool's `table`; `adopt` then
/// imports its history.
fn adopt_after_refusal(url: &str, path: &str, table: &str) {
    let refused = binary::run(url, &["migrate", "up", "--dir", path]);
    support::assert_exit(&refused, 7);
    assert!(
        binary::printed(&refused).contains(table),
        "{}",
        binary::printed(&refused)
    );
    let adopt = binary::run(
        url,
        &[
            "migrate",
            "adopt",
            "--dir",
            path,
            "--reason",
            "switching tools",
        ],
    );
    assert!(adopt.status.success(), "{}", binary::printed(&adopt));
}

/// The tables of the public schema, sorted.
async fn postgres_tables(admin: &sqlx::PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'
         AND tablename NOT LIKE 'fleetshift%' ORDER BY 1",
    )
    .fetch_all(admin)
    .await
    .expect("catalog")
}

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

#[tokio::test]
async fn entes_golang_migrate_history_with_transaction_blocks_goes_up_and_down() {
    let directory = fixtures::ente();
    let set = MigrationSet::load(&directory, None).expect("Ente's history loads as it is");
    assert_eq!(set.format, SourceFormat::Sqlx);
    assert_eq!(set.revisions.len(), 124);
    let folded = set
        .revisions
        .iter()
        .filter(|revision| !revision.up.folded().is_empty())
        .count();
    assert!(
        folded >= 8,
        "Ente groups statements in BEGIN … COMMIT blocks: {folded}"
    );
    let path = directory.to_str().expect("UTF-8 path");

    let Database {
        cluster: _cluster,
        url,
        admin,
    } = support::database("ente").await;
    let up = binary::run(&url, &["migrate", "up", "--dir", path]);
    assert!(up.status.success(), "{}", binary::printed(&up));
    let shard = support::postgres(&url).await;
    let ledger = shard.read_ledger().await.expect("ledger");
    assert_eq!(ledger.len(), 124);
    let tables = postgres_tables(&admin).await;
    for table in [
        "users",
        "files",
        "collections",
        "otts",
        "public_collection_tokens",
    ] {
        assert!(
            tables.iter().any(|name| name == table),
            "{table} missing: {tables:?}"
        );
    }

    // Thirteen down scripts hold only a comment (`-- no-op`, `-- Just for sanity`): not
    // marked as deliberate no-ops, they count as missing, so going back to the start is
    // refused naming each of them, before anything is reverted.
    let refused = binary::run(&url, &["migrate", "down", "--to", "base", "--dir", path]);
    support::assert_exit(&refused, 2);
    let printed = binary::printed(&refused);
    for revision in [
        "91_increase_free_validity",
        "24_bump_ids",
        "16_remove_deleted_file_objects",
    ] {
        assert!(printed.contains(revision), "{revision}: {printed}");
    }
    assert_eq!(shard.read_ledger().await.expect("ledger").len(), 124);
    assert!(
        shard
            .read_ledger()
            .await
            .expect("ledger")
            .iter()
            .all(|entry| entry.status == RevisionStatus::Applied),
        "nothing was reverted"
    );
    // Above them, the real down scripts revert 124 to 94.
    let down = binary::run(&url, &["migrate", "down", "--to", "93", "--dir", path]);
    assert!(down.status.success(), "{}", binary::printed(&down));
    let reverted = |ledger: &[fleetshift_common::ledger::LedgerEntry]| {
        ledger
            .iter()
            .filter(|entry| entry.status == RevisionStatus::Reverted)
            .count()
    };
    assert_eq!(
        reverted(&shard.read_ledger().await.expect("ledger")),
        124 - 93
    );
    // 93's own down script drops a function another table's trigger still uses (a real bug
    // of that script): the revert fails naming the file and line, is rolled back whole,
    // and 93 stays applied.
    let broken = binary::run(&url, &["migrate", "down", "--dir", path]);
    support::assert_exit(&broken, 1);
    let printed = binary::printed(&broken);
    assert!(
        printed.contains("93_emergency_contact.down.sql:12"),
        "{printed}"
    );
    assert!(
        printed.contains("the revision is still applied"),
        "{printed}"
    );
    assert_eq!(
        reverted(&shard.read_ledger().await.expect("ledger")),
        124 - 93
    );
}

#[test]
fn supabases_dbmate_history_loads_and_lints_as_it_is() {
    let directory = fixtures::supabase();
    let set = MigrationSet::load(&directory, None).expect("Supabase's history loads as it is");
    assert_eq!(set.format, SourceFormat::Dbmate);
    assert_eq!(set.revisions.len(), 30);
    assert_eq!(set.revisions[0].version.as_str(), "10000000000000");
    assert!(
        set.revisions.iter().all(|revision| revision.down.is_none()),
        "every down section is empty"
    );
    let report = lint_report(&directory, 0);
    assert_eq!(report["revisions"], 30, "{report}");
    assert_eq!(
        report["problems"].as_array().map(Vec::len),
        Some(0),
        "{report}"
    );
}

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

#[tokio::test]
async fn fluiditys_dbmate_history_goes_up_and_its_reversible_revisions_down_on_postgres() {
    let directory = fixtures::fluidity();
    let set = MigrationSet::load(&directory, None).expect("Fluidity's history loads as it is");
    assert_eq!(set.format, SourceFormat::Dbmate);
    assert_eq!(set.revisions.len(), 31);
    let first = &set.revisions[0];
    assert_eq!(
        (first.version.as_str(), first.name.as_str()),
        ("20220701151154", "numeric"),
        "dbmate's version is the leading digits, whatever separates the name"
    );
    // Four down sections only say "there's no good way to remove enum variants".
    let irreversible = set
        .revisions
        .iter()
        .filter(|revision| revision.down.is_none())
        .count();
    assert_eq!(irreversible, 4);
    let report = lint_report(&directory, 0);
    assert_eq!(
        report["problems"].as_array().map(Vec::len),
        Some(0),
        "{report}"
    );
    let path = directory.to_str().expect("UTF-8 path");

    let Database {
        cluster: _cluster,
        url,
        admin,
    } = support::database("fluidity").await;
    let up = binary::run(&url, &["migrate", "up", "--dir", path]);
    assert!(up.status.success(), "{}", binary::printed(&up));
    let shard = support::postgres(&url).await;
    assert_eq!(shard.read_ledger().await.expect("ledger").len(), 31);
    let tables = postgres_tables(&admin).await;
    assert!(
        tables.iter().any(|name| name == "faucet_users"),
        "{tables:?}"
    );

    // Back to the start is refused naming the enum revisions, before anything is reverted;
    // the newest revision goes down with its real down section.
    let refused = binary::run(&url, &["migrate", "down", "--to", "base", "--dir", path]);
    support::assert_exit(&refused, 2);
    assert!(
        binary::printed(&refused).contains("20220704151154_arbitrum-network"),
        "{}",
        binary::printed(&refused)
    );
    let down = binary::run(&url, &["migrate", "down", "--dir", path]);
    assert!(down.status.success(), "{}", binary::printed(&down));
    let ledger = shard.read_ledger().await.expect("ledger");
    let reverted: Vec<&str> = ledger
        .iter()
        .filter(|entry| entry.status == RevisionStatus::Reverted)
        .map(|entry| entry.version.as_str())
        .collect();
    assert_eq!(reverted, ["20240318191548"]);
}
