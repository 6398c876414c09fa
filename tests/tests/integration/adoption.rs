//! Switching tools: the history sqlx, golang-migrate, diesel, Flyway, dbmate, pop or
//! Liquibase kept is imported, and nothing is re-run.

use fleetshift_common::engine::ShardEngine;
use fleetshift_tests::postgres::PostgresCluster;
use fleetshift_tests::{binary, fixtures};
use sqlx::AssertSqlSafe;

use super::support::{self, Database, dir};

#[tokio::test]
async fn sqlx_history_is_adopted_and_nothing_is_rerun() {
    let Database {
        cluster: _cluster,
        url,
        admin,
    } = support::database("from_sqlx").await;
    let directory = fixtures::migrations(&[
        ("1_create_users.sql", "CREATE TABLE users (id integer);"),
        ("2_create_orders.sql", "CREATE TABLE orders (id integer);"),
    ]);
    // sqlx's own migrator applies the first two revisions and keeps _sqlx_migrations.
    let migrator = sqlx::migrate::Migrator::new(directory.path())
        .await
        .expect("sqlx migrator");
    migrator
        .run(&admin)
        .await
        .expect("sqlx applies its migrations");
    fixtures::write(
        directory.path(),
        "3_create_invoices.sql",
        "CREATE TABLE invoices (id integer);",
    );

    let refused = binary::run(&url, &["migrate", "up", "--dir", dir(&directory)]);
    support::assert_exit(&refused, 7);
    assert!(binary::printed(&refused).contains("_sqlx_migrations"));

    let adopted = binary::run(
        &url,
        &[
            "migrate",
            "adopt",
            "--dir",
            dir(&directory),
            "--reason",
            "moving to fleetshift",
        ],
    );
    assert!(adopted.status.success(), "{}", binary::printed(&adopted));
    // users and orders exist already: re-running 1 or 2 would fail on CREATE TABLE.
    let up = binary::run(
        &url,
        &[
            "migrate",
            "up",
            "--dir",
            dir(&directory),
            "--output",
            "json",
        ],
    );
    assert!(up.status.success(), "{}", binary::printed(&up));
    let report: serde_json::Value = serde_json::from_slice(&up.stdout).expect("JSON report");
    assert_eq!(report["steps"].as_array().map(Vec::len), Some(1));
    assert_eq!(report["steps"][0]["version"], "3");
    let reason: String =
        sqlx::query_scalar("SELECT reason FROM fleetshift.audit WHERE action = 'adopt'")
            .fetch_one(&admin)
            .await
            .expect("audit");
    assert!(
        reason.contains("imported 2 revision(s) from _sqlx_migrations"),
        "{reason}"
    );
}

#[tokio::test]
async fn sqlx_history_with_an_edited_script_is_refused_as_drift() {
    let Database {
        cluster: _cluster,
        url,
        admin,
    } = support::database("edited").await;
    let directory =
        fixtures::migrations(&[("1_create_users.sql", "CREATE TABLE users (id integer);")]);
    let migrator = sqlx::migrate::Migrator::new(directory.path())
        .await
        .expect("sqlx migrator");
    migrator
        .run(&admin)
        .await
        .expect("sqlx applies its migrations");
    fixtures::write(
        directory.path(),
        "1_create_users.sql",
        "CREATE TABLE users (id bigint);",
    );
    let adopted = binary::run(
        &url,
        &[
            "migrate",
            "adopt",
            "--dir",
            dir(&directory),
            "--reason",
            "switch",
        ],
    );
    support::assert_exit(&adopted, 3);
}

#[tokio::test]
async fn golang_migrate_and_diesel_histories_are_adopted() {
    let cluster = PostgresCluster::start().expect("cluster");
    // golang-migrate keeps one row: the latest version and whether it was left dirty.
    let url = cluster
        .create_database("from_golang")
        .await
        .expect("database");
    let admin = cluster.admin_pool("from_golang").await.expect("admin");
    let directory = fixtures::migrations(&[
        ("1_users.up.sql", "CREATE TABLE users (id integer);"),
        ("1_users.down.sql", "DROP TABLE users;"),
        ("2_orders.up.sql", "CREATE TABLE orders (id integer);"),
        ("3_invoices.up.sql", "CREATE TABLE invoices (id integer);"),
    ]);
    sqlx::raw_sql(
        "CREATE TABLE users (id integer); CREATE TABLE orders (id integer);
         CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL);
         INSERT INTO schema_migrations VALUES (2, true);",
    )
    .execute(&admin)
    .await
    .expect("golang-migrate state");
    let dirty = binary::run(
        &url,
        &[
            "migrate",
            "adopt",
            "--dir",
            dir(&directory),
            "--reason",
            "switch",
        ],
    );
    support::assert_exit(&dirty, 7);
    assert!(binary::printed(&dirty).contains("dirty"));
    sqlx::query("UPDATE schema_migrations SET dirty = false")
        .execute(&admin)
        .await
        .expect("clean");
    let adopted = binary::run(
        &url,
        &[
            "migrate",
            "adopt",
            "--dir",
            dir(&directory),
            "--reason",
            "switch",
        ],
    );
    assert!(adopted.status.success(), "{}", binary::printed(&adopted));
    let up = binary::run(&url, &["migrate", "up", "--dir", dir(&directory)]);
    assert!(up.status.success(), "{}", binary::printed(&up));

    // diesel records versions without their dashes.
    let url = cluster
        .create_database("from_diesel")
        .await
        .expect("database");
    let admin = cluster.admin_pool("from_diesel").await.expect("admin");
    let directory = fixtures::migrations(&[
        (
            "2017-08-31-230457_users/up.sql",
            "CREATE TABLE users (id integer);",
        ),
        (
            "2017-09-01-101010_orders/up.sql",
            "CREATE TABLE orders (id integer);",
        ),
    ]);
    sqlx::raw_sql(AssertSqlSafe(
        "CREATE TABLE users (id integer);
         CREATE TABLE __diesel_schema_migrations (version varchar(50) PRIMARY KEY NOT NULL, run_on timestamp NOT NULL DEFAULT now());
         INSERT INTO __diesel_schema_migrations (version) VALUES ('20170831230457');",
    ))
    .execute(&admin)
    .await
    .expect("diesel state");
    let adopted = binary::run(
        &url,
        &[
            "migrate",
            "adopt",
            "--dir",
            dir(&directory),
            "--reason",
            "switch",
        ],
    );
    assert!(adopted.status.success(), "{}", binary::printed(&adopted));
    let up = binary::run(
        &url,
        &[
            "migrate",
            "up",
            "--dir",
            dir(&directory),
            "--output",
            "json",
        ],
    );
    assert!(up.status.success(), "{}", binary::printed(&up));
    let report: serde_json::Value = serde_json::from_slice(&up.stdout).expect("JSON report");
    assert_eq!(report["steps"][0]["version"], "2017-09-01-101010");
}

#[tokio::test]
async fn flyway_history_with_an_undo_and_dbmate_history_are_adopted() {
    // Flyway: V2 was applied and then undone, so only V1 counts as applied.
    let Database {
        cluster,
        url,
        admin,
    } = support::database("from_flyway").await;
    let directory = fixtures::migrations(&[
        ("V1__users.sql", "CREATE TABLE users (id integer);"),
        ("V2__orders.sql", "CREATE TABLE orders (id integer);"),
        ("U2__orders.sql", "DROP TABLE orders;"),
    ]);
    sqlx::raw_sql(
        "CREATE TABLE users (id integer);
         CREATE TABLE flyway_schema_history (
             installed_rank integer PRIMARY KEY, version varchar(50), description varchar(200) NOT NULL,
             type varchar(20) NOT NULL, script varchar(1000) NOT NULL, checksum integer,
             installed_by varchar(100) NOT NULL, installed_on timestamp NOT NULL DEFAULT now(),
             execution_time integer NOT NULL, success boolean NOT NULL);
         INSERT INTO flyway_schema_history VALUES
             (1, '1', 'users', 'SQL', 'V1__users.sql', 1, 'app', now(), 5, true),
             (2, '2', 'orders', 'SQL', 'V2__orders.sql', 2, 'app', now(), 5, true),
             (3, '2', 'orders', 'UNDO_SQL', 'U2__orders.sql', 3, 'app', now(), 5, true);
         DROP TABLE IF EXISTS orders;",
    )
    .execute(&admin)
    .await
    .expect("flyway state");
    let adopted = binary::run(
        &url,
        &[
            "migrate",
            "adopt",
            "--dir",
            dir(&directory),
            "--reason",
            "switch",
        ],
    );
    support::assert_exit(&adopted, 0);
    let up = binary::run(
        &url,
        &[
            "migrate",
            "up",
            "--dir",
            dir(&directory),
            "--output",
            "json",
        ],
    );
    support::assert_exit(&up, 0);
    let report = support::json(&up);
    assert_eq!(
        report["steps"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );
    assert_eq!(
        report["steps"][0]["version"], "2",
        "the undone revision is applied again"
    );

    // dbmate: one row per applied version.
    let url = cluster
        .create_database("from_dbmate")
        .await
        .expect("database");
    let admin = cluster.admin_pool("from_dbmate").await.expect("admin");
    let directory = fixtures::migrations(&[
        (
            "20200101000000_users.sql",
            "-- migrate:up\nCREATE TABLE users (id integer);\n-- migrate:down\nDROP TABLE users;\n",
        ),
        (
            "20200102000000_orders.sql",
            "-- migrate:up\nCREATE TABLE orders (id integer);\n-- migrate:down\nDROP TABLE orders;\n",
        ),
    ]);
    sqlx::raw_sql(
        "CREATE TABLE users (id integer);
         CREATE TABLE schema_migrations (version varchar(128) PRIMARY KEY);
         INSERT INTO schema_migrations VALUES ('20200101000000');",
    )
    .execute(&admin)
    .await
    .expect("dbmate state");
    let adopted = binary::run(
        &url,
        &[
            "migrate",
            "adopt",
            "--dir",
            dir(&directory),
            "--reason",
            "switch",
        ],
    );
    support::assert_exit(&adopted, 0);
    let up = binary::run(
        &url,
        &[
            "migrate",
            "up",
            "--dir",
            dir(&directory),
            "--output",
            "json",
        ],
    );
    support::assert_exit(&up, 0);
    assert_eq!(support::json(&up)["steps"][0]["version"], "20200102000000");
}

/// popx's `schema_migration` on PostgreSQL (Kratos's test adopts it on SQLite) and Liquibase's
/// `databasechangelog` on SQLite (the Liquibase test adopts it on PostgreSQL): each is read
/// where the other test does not, and nothing is run twice.
#[tokio::test]
async fn pop_history_on_postgres_and_liquibase_history_on_sqlite_are_adopted() {
    let Database {
        cluster: _cluster,
        url,
        admin,
    } = support::database("from_popx").await;
    let pop = fixtures::migrations(&[
        (
            "20240101000000000000_users.postgres.up.sql",
            "CREATE TABLE users (id integer);",
        ),
        (
            "20240101000000000000_users.sqlite3.up.sql",
            "CREATE TABLE users (id integer);",
        ),
        (
            "20240102000000000000_orders.up.sql",
            "CREATE TABLE orders (id integer);",
        ),
    ]);
    sqlx::raw_sql(
        "CREATE TABLE users (id integer);
         CREATE TABLE schema_migration (version varchar(48) NOT NULL, version_self int NOT NULL DEFAULT 0);
         INSERT INTO schema_migration (version) VALUES ('20240101000000000000');",
    )
    .execute(&admin)
    .await
    .expect("popx's state");
    let adopt = binary::run(
        &url,
        &[
            "migrate",
            "adopt",
            "--dir",
            dir(&pop),
            "--reason",
            "from popx",
        ],
    );
    assert!(adopt.status.success(), "{}", binary::printed(&adopt));
    // users exists already: running it again would fail.
    let up = binary::run(&url, &["migrate", "up", "--dir", dir(&pop)]);
    assert!(up.status.success(), "{}", binary::printed(&up));
    let shard = support::postgres(&url).await;
    assert_eq!(shard.read_ledger().await.expect("ledger").len(), 2);

    let liquibase = fixtures::migrations(&[(
        "changelog.sql",
        "--liquibase formatted sql\n--changeset a:users\nCREATE TABLE users (id integer);\n--changeset a:orders\nCREATE TABLE orders (id integer);\n",
    )]);
    let home = tempfile::tempdir().expect("tempdir");
    let database = home.path().join("shard.db");
    let sqlite_url = format!("sqlite:{}", database.display());
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&database)
        .create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(options)
        .await
        .expect("SQLite");
    sqlx::raw_sql(
        "CREATE TABLE users (id integer);
         CREATE TABLE databasechangelog (id varchar(255) NOT NULL, author varchar(255) NOT NULL,
             filename varchar(255) NOT NULL, dateexecuted timestamp NOT NULL,
             orderexecuted int NOT NULL, exectype varchar(10) NOT NULL, md5sum varchar(35));
         INSERT INTO databasechangelog VALUES
             ('users', 'a', 'db/changelog.sql', '2024-01-01', 1, 'EXECUTED', '9:0');",
    )
    .execute(&pool)
    .await
    .expect("Liquibase's state");
    pool.close().await;
    let adopt = binary::run(
        &sqlite_url,
        &[
            "migrate",
            "adopt",
            "--dir",
            dir(&liquibase),
            "--reason",
            "from Liquibase",
        ],
    );
    assert!(adopt.status.success(), "{}", binary::printed(&adopt));
    let up = binary::run(&sqlite_url, &["migrate", "up", "--dir", dir(&liquibase)]);
    assert!(up.status.success(), "{}", binary::printed(&up));
    let shard = support::sqlite(&database).await;
    assert_eq!(shard.read_ledger().await.expect("ledger").len(), 2);
}
