//! golang-migrate histories: Harbor (up scripts only) and Ente (up and down, `BEGIN … COMMIT`
//! blocks, lone concurrent index builds).

use fleetshift_common::engine::ShardEngine;
use fleetshift_common::ledger::RevisionStatus;
use fleetshift_common::source::{MigrationSet, SourceFormat};
use fleetshift_tests::{binary, fixtures};

use super::{lint_report, postgres_tables};
use crate::integration::support::{self, Database};

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
