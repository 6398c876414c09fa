//! A statement reports itself while it runs, on a real server behind real lock conflicts: as it
//! starts, then every update interval with how long it has run and what its server process
//! holds or waits for. Inside a revision's transaction it stays uncommitted (no
//! `StatementFinished`) until the revision commits; outside one it reports on its own.

use std::time::Duration;

use fleetshift_common::engine::Timeouts;
use fleetshift_common::executor::{ExecutionEvent, Executor, ExecutorSettings, Request};
use fleetshift_common::source::MigrationSet;
use fleetshift_tests::fixtures;
use tokio::sync::mpsc;

use super::support;

/// Short, so the test sees several updates; not a timing assertion.
const UPDATES: Duration = Duration::from_millis(100);

/// Long enough that a statement waits for the test's blockers instead of retrying.
fn patient() -> Timeouts {
    Timeouts {
        lock_timeout: Duration::from_secs(60),
        statement_timeout: Duration::from_secs(120),
        ..Timeouts::default()
    }
}

/// Collects events into `seen` until one matches `wanted`; whether one did (within a bound).
async fn seen_until(
    reported: &mut mpsc::UnboundedReceiver<ExecutionEvent>,
    seen: &mut Vec<ExecutionEvent>,
    wanted: impl Fn(&ExecutionEvent) -> bool,
) -> bool {
    let looked = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(event) = reported.recv().await {
            let found = wanted(&event);
            seen.push(event);
            if found {
                return true;
            }
        }
        false
    });
    looked.await.unwrap_or(false)
}

/// `1_note.sql:2` of a statement's `path:line`.
fn file_line(location: &str) -> &str {
    location.rsplit('/').next().unwrap_or(location)
}

/// A running update of revision `version` (not its start) whose locks include each of `locks`.
fn running_with(event: &ExecutionEvent, version: &str, locks: &[&str]) -> bool {
    matches!(event, ExecutionEvent::StatementRunning { version: running, elapsed, locks: held, .. }
        if running == version && !elapsed.is_zero()
            && locks.iter().all(|lock| held.iter().any(|held| held == lock)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_statement_shows_its_locks_and_stays_uncommitted_until_its_revision_commits() {
    let database = support::database("running").await;
    let admin = &database.admin;
    sqlx::raw_sql("CREATE TABLE items (id int); CREATE TABLE audit (id int);")
        .execute(admin)
        .await
        .expect("schema");
    let directory = fixtures::migrations(&[
        (
            "1_note.sql",
            "ALTER TABLE items ADD COLUMN note text;\nINSERT INTO audit VALUES (1);",
        ),
        (
            "2_index.sql",
            "-- no-transaction\nCREATE INDEX CONCURRENTLY items_note ON items (note);",
        ),
    ]);
    let set = MigrationSet::load(directory.path(), None).expect("set");
    let migrate = |target: &str, events: mpsc::UnboundedSender<ExecutionEvent>| {
        let (url, set) = (database.url.clone(), set.clone());
        let request = Request {
            target: Some(target.to_owned()),
            allow_drift: None,
        };
        tokio::spawn(async move {
            let shard = support::postgres_with(&url, patient()).await;
            let settings = ExecutorSettings {
                statement_updates: UPDATES,
                ..support::quick_settings()
            };
            Executor::new(&shard, support::identity("migrator", None), settings)
                .report_to(events)
                .up(&set, &request)
                .await
        })
    };

    // Inside a transaction: the INSERT waits for the test's lock on audit, holding the lock
    // its ALTER took on items, and nothing of the revision is reported finished.
    let mut blocker = admin.begin().await.expect("blocker");
    sqlx::query("LOCK TABLE audit IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .expect("lock audit");
    let (events, mut reported) = mpsc::unbounded_channel();
    let migration = migrate("1", events);
    let mut seen = Vec::new();
    let waiting = seen_until(&mut reported, &mut seen, |event| {
        running_with(
            event,
            "1",
            &[
                "waiting for RowExclusiveLock on public.audit",
                "AccessExclusiveLock on public.items",
            ],
        )
    })
    .await;
    assert!(waiting, "no update showed the wait: {seen:#?}");
    let Some(ExecutionEvent::StatementRunning {
        location,
        text,
        in_transaction,
        ..
    }) = seen.last()
    else {
        unreachable!("the last event matched")
    };
    assert!(location.ends_with("/1_note.sql:2"), "{location}");
    assert_eq!(
        (text.as_str(), *in_transaction),
        ("INSERT INTO audit VALUES (1)", true)
    );
    let starts: Vec<(&str, bool)> = seen
        .iter()
        .filter_map(|event| match event {
            ExecutionEvent::StatementRunning {
                location,
                elapsed,
                locks,
                ..
            } if elapsed.is_zero() => Some((file_line(location), locks.is_empty())),
            _ => None,
        })
        .collect();
    assert_eq!(starts, [("1_note.sql:1", true), ("1_note.sql:2", true)]);
    assert!(
        !seen
            .iter()
            .any(|event| matches!(event, ExecutionEvent::StatementFinished { .. })),
        "a statement of an uncommitted revision was reported finished: {seen:#?}"
    );
    blocker.commit().await.expect("release audit");
    migration.await.expect("task").expect("revision 1");
    let mut after = Vec::new();
    while let Ok(event) = reported.try_recv() {
        after.push(event);
    }
    let finished: Vec<&str> = after
        .iter()
        .filter_map(|event| match event {
            ExecutionEvent::StatementFinished { location, .. } => Some(file_line(location)),
            _ => None,
        })
        .collect();
    assert_eq!(finished, ["1_note.sql:1", "1_note.sql:2"], "{after:#?}");

    // Outside a transaction: the index build waits for an open writer's transaction.
    let mut writer = admin.begin().await.expect("writer");
    sqlx::query("INSERT INTO items (id) VALUES (1)")
        .execute(&mut *writer)
        .await
        .expect("write");
    let (events, mut reported) = mpsc::unbounded_channel();
    let migration = migrate("2", events);
    let mut seen = Vec::new();
    let waiting = seen_until(&mut reported, &mut seen, |event| {
        running_with(event, "2", &["waiting for ShareLock on a virtualxid"])
    })
    .await;
    assert!(waiting, "no update showed the wait: {seen:#?}");
    assert!(
        matches!(seen.last(), Some(ExecutionEvent::StatementRunning { in_transaction: false, location, .. }) if file_line(location) == "2_index.sql:2"),
        "{seen:#?}"
    );
    writer.commit().await.expect("release the writer");
    migration.await.expect("task").expect("revision 2");
}
