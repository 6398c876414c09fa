//! crates.io's real history (285 diesel revisions) on PostgreSQL: up on an empty database,
//! down to the start — through the irreversible revisions and broken down scripts a real
//! history has — and up again, checking the shard's status at every step.

use std::path::{Path, PathBuf};

use fleetshift_common::error::ExecError;
use fleetshift_common::executor::{Request, ShardStatus};
use fleetshift_common::ledger::RevisionStatus;
use fleetshift_common::source::MigrationSet;
use fleetshift_tests::fixtures;
use sqlx::PgPool;

use super::support::{self, Database};

/// Down scripts with no statements: irreversible until an operator decides otherwise.
const IRREVERSIBLE: [&str; 9] = [
    "20140925132250_dumped_migration_8",
    "20140925132253_dumped_migration_11",
    "20140925132254_dumped_migration_12",
    "20140925161625_dumped_migration_17",
    "20141112082527_dumped_migration_89",
    "2017-09-26-200549_users_lowercase_index",
    "2017-10-06-234455_fix_local_dbs_unique_gh_login",
    "20170728002039_fix_keywords",
    "2019-11-11-162609_drop_email_from_user",
];

/// Down scripts that fail on a real walk to the start, newest first, with the operator's
/// fix in `tests/fixtures/crates-io-down-fixes/`.
const BROKEN: [&str; 4] = [
    "2024-10-25-112826_make-unique-version-unique",
    "2024-04-12-144536_remove-downloads-column",
    "20170708133715_ensure_crate_id_foreign_keys_cascade",
    "20170318181441_downloads_need_no_id",
];

/// Down scripts that succeed but restore the schema wrongly, so an OLDER revision's down
/// fails later (a missing foreign key, a table recreated without its columns). Their fixes
/// must be in place before the walk passes them.
const WRONG_BUT_SUCCEEDING: [&str; 2] = [
    "2020-02-14-183929_remove_version_authors_user_id",
    "20140930082104_dumped_migration_36",
];

fn fixes() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/crates-io-down-fixes")
}

/// Copies the corpus so the test can play the operator who edits down scripts.
fn working_copy() -> tempfile::TempDir {
    let copy = tempfile::tempdir().expect("working copy");
    for entry in std::fs::read_dir(fixtures::crates_io()).expect("corpus") {
        let entry = entry.expect("corpus entry");
        let target = copy.path().join(entry.file_name());
        if entry.path().is_dir() {
            std::fs::create_dir(&target).expect("revision directory");
            for file in std::fs::read_dir(entry.path()).expect("revision files") {
                let file = file.expect("revision file");
                std::fs::copy(file.path(), target.join(file.file_name())).expect("copy script");
            }
        } else {
            std::fs::copy(entry.path(), target).expect("copy file");
        }
    }
    copy
}

fn apply_fix(directory: &Path, revision: &str) {
    std::fs::copy(
        fixes().join(revision).join("down.sql"),
        directory.join(revision).join("down.sql"),
    )
    .expect("apply the operator's fix");
}

fn count(status: &ShardStatus, wanted: RevisionStatus) -> usize {
    status
        .revisions
        .iter()
        .filter(|state| state.status == Some(wanted))
        .count()
}

async fn column_exists(pool: &PgPool, table: &str, column: &str) -> bool {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_name = $1 AND column_name = $2)",
    )
    .bind(table)
    .bind(column)
    .fetch_one(pool)
    .await
    .expect("catalog query")
}

#[tokio::test]
async fn crates_io_history_goes_up_down_to_the_start_and_up_again() {
    let Database {
        cluster: _cluster,
        url,
        admin,
    } = support::database("cratesio").await;
    let copy = working_copy();
    let directory = copy.path();
    let shard = support::postgres(&url).await;
    let executor = support::executor(&shard, "crates-io-test", None);
    let to_base = Request {
        target: Some("base".to_owned()),
        allow_drift: None,
    };

    // Up: every revision, in diesel's order.
    let original = MigrationSet::load(directory, None).expect("load the corpus");
    let report = executor
        .up(&original, &Request::default())
        .await
        .expect("up");
    assert_eq!(report.steps.len(), 285);
    let status = executor.status(&original).await.expect("status");
    assert_eq!(count(&status, RevisionStatus::Applied), 285);
    assert_eq!(
        status.current_version.as_deref(),
        Some("2026-07-30-140000-0000")
    );
    assert!(status.drifted.is_empty());

    // Down to the start refuses before running anything: 9 revisions have no down.
    let refused = executor
        .down(&original, &to_base)
        .await
        .expect_err("irreversible revisions");
    let ExecError::MissingDownScripts { revisions, .. } = &refused else {
        panic!("expected missing down scripts, got {refused}");
    };
    assert_eq!(revisions.len(), 9, "{refused}");
    for irreversible in IRREVERSIBLE {
        assert!(refused.to_string().contains(irreversible), "{refused}");
    }
    let status = executor.status(&original).await.expect("status");
    assert_eq!(count(&status, RevisionStatus::Applied), 285, "nothing ran");

    // The operator decides about each irreversible revision; the walk then stops at each
    // broken down script, named with file and line, and the shard stays consistent.
    for revision in IRREVERSIBLE.iter().chain(&WRONG_BUT_SUCCEEDING) {
        apply_fix(directory, revision);
    }
    for (position, broken) in BROKEN.iter().enumerate() {
        let set = MigrationSet::load(directory, None).expect("load the edited copy");
        let before = executor.status(&set).await.expect("status");
        let failure = executor
            .down(&set, &to_base)
            .await
            .expect_err("a broken down script");
        let message = failure.to_string();
        assert!(
            message.contains(&format!("{broken}/down.sql:")),
            "step {position}: the error must name {broken}/down.sql with a line: {message}"
        );
        assert!(message.contains("SQLSTATE"), "{message}");
        let status = executor.status(&set).await.expect("status");
        let state = status
            .revisions
            .iter()
            .find(|state| format!("{}_{}", state.version, state.name) == *broken)
            .expect("broken revision in status");
        assert_eq!(
            state.status,
            Some(RevisionStatus::Applied),
            "{broken} must stay applied"
        );
        assert_eq!(
            status.current_version.as_deref(),
            Some(state.version.as_str())
        );
        assert!(
            count(&status, RevisionStatus::Reverted) > count(&before, RevisionStatus::Reverted),
            "the revisions newer than {broken} were reverted before it failed"
        );
        if *broken == "2024-04-12-144536_remove-downloads-column" {
            // A transactional revert: its first statement re-added crates.downloads before the
            // second failed; the rollback must have taken that back.
            assert!(message.contains("rolled back"), "{message}");
            assert!(
                !column_exists(&admin, "crates", "downloads").await,
                "half a revert was left behind"
            );
        }
        apply_fix(directory, broken);
    }

    let fixed = MigrationSet::load(directory, None).expect("load the fixed copy");
    let report = executor
        .down(&fixed, &to_base)
        .await
        .expect("down to the start");
    assert!(!report.steps.is_empty());
    let status = executor.status(&fixed).await.expect("status");
    assert_eq!(
        count(&status, RevisionStatus::Reverted),
        285,
        "every revision reverted"
    );
    assert_eq!(status.current_version, None);
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'")
            .fetch_all(&admin)
            .await
            .expect("list tables");
    // 20170502181306_drop_schema_migrations drops the table of the tool crates.io used before
    // diesel; its down recreates it, so at the start of the history that table is back.
    assert_eq!(
        tables,
        ["schema_migrations"],
        "down to the start leaves only what the history recreates"
    );

    // Up again: only down scripts changed, so nothing drifted and all 285 apply.
    let report = executor
        .up(&fixed, &Request::default())
        .await
        .expect("up again");
    assert_eq!(report.steps.len(), 285);
    let status = executor.status(&fixed).await.expect("status");
    assert_eq!(count(&status, RevisionStatus::Applied), 285);
    assert!(status.drifted.is_empty());
}
