//! A PostgreSQL revision's statements travel with its bookkeeping (the opening call with the
//! first, the records and COMMIT with the last): a failure is still named by its own file and
//! line, whether the server refuses it while parsing the batch or while running it, and
//! nothing of the revision stays.

use fleetshift_common::error::ExecError;
use fleetshift_common::executor::Request;
use fleetshift_common::source::MigrationSet;
use fleetshift_tests::fixtures;

use super::support::{self, Database};

async fn count(admin: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM items")
        .fetch_one(admin)
        .await
        .expect("count items")
}

fn failure_location(error: ExecError) -> (String, String) {
    match error {
        ExecError::StatementFailed(failure) => (failure.location, failure.message),
        other => panic!("expected a statement failure, got {other}"),
    }
}

/// Revision 1 applied; `more` as revision 2, applied: the statement failure it meets.
async fn apply_more(
    shard: &fleetshift_common::engine::PostgresShard,
    directory: &tempfile::TempDir,
    more: &str,
) -> Result<usize, (String, String)> {
    fixtures::write(directory.path(), "2_more.sql", more);
    let set = MigrationSet::load(directory.path(), None).expect("set");
    support::executor(shard, "agent", Some(1))
        .up(&set, &Request::default())
        .await
        .map(|report| report.steps.len())
        .map_err(failure_location)
}

fn items_history() -> tempfile::TempDir {
    fixtures::migrations(&[(
        "1_items.sql",
        // The last statement ends in a line comment and travels with the records: the batch
        // must not lose the semicolon after it.
        "CREATE TABLE items (id integer);\nINSERT INTO items VALUES (1) -- the first item\n;\n",
    )])
}

#[tokio::test]
async fn a_syntax_error_is_named_by_its_line_wherever_it_travels() {
    let Database {
        cluster: _cluster,
        url,
        admin,
    } = support::database("parsed").await;
    let directory = items_history();
    let shard = support::postgres(&url).await;
    // The first statement travels with BEGIN and the opening call: the server refuses the
    // whole batch while parsing it, and the error's position names the statement.
    let (location, message) = apply_more(
        &shard,
        &directory,
        "INSERT INTO items VALUES (2;\nINSERT INTO items VALUES (3);\n",
    )
    .await
    .expect_err("a syntax error in the first statement");
    assert!(location.ends_with("2_more.sql:1"), "{location}: {message}");
    assert!(message.contains("syntax error"), "{message}");
    assert_eq!(count(&admin).await, 1, "revision 1 only");
    // The last statement travels with the records and COMMIT.
    let (location, message) = apply_more(
        &shard,
        &directory,
        "INSERT INTO items VALUES (2);\nINSERT INTO items VALUES (3);\n\nINSERT INTO items VALUES (4;\n",
    )
    .await
    .expect_err("a syntax error in the last statement");
    assert!(location.ends_with("2_more.sql:4"), "{location}: {message}");
    assert_eq!(count(&admin).await, 1, "revision 2 rolled back whole");
}

#[tokio::test]
async fn a_statement_refused_while_running_is_named_and_the_fixed_revision_applies() {
    let Database {
        cluster: _cluster,
        url,
        admin,
    } = support::database("run").await;
    let directory = items_history();
    let shard = support::postgres(&url).await;
    let (location, message) = apply_more(
        &shard,
        &directory,
        "INSERT INTO items VALUES (2);\nINSERT INTO missing VALUES (3);\nINSERT INTO items VALUES (4);\n",
    )
    .await
    .expect_err("revision 2 names a missing table");
    assert!(location.ends_with("2_more.sql:2"), "{location}: {message}");
    assert!(message.contains("missing"), "{message}");
    assert_eq!(count(&admin).await, 1);
    let applied = apply_more(
        &shard,
        &directory,
        "INSERT INTO items VALUES (2);\nINSERT INTO items VALUES (3);\n",
    )
    .await
    .expect("the fixed revision applies");
    assert_eq!(applied, 1);
    assert_eq!(count(&admin).await, 3);
    let set = MigrationSet::load(directory.path(), None).expect("set");
    support::assert_sound_ledger(&shard, &set, None).await;
}

#[tokio::test]
async fn a_ledger_from_before_the_opening_function_gets_it() {
    let Database {
        cluster: _cluster,
        url,
        admin,
    } = support::database("older_ledger").await;
    let directory = fixtures::migrations(&[
        ("1_items.sql", "CREATE TABLE items (id integer);"),
        ("2_more.sql", "INSERT INTO items VALUES (1);"),
    ]);
    let shard = support::postgres(&url).await;
    let set = MigrationSet::load(directory.path(), None).expect("set");
    support::executor(&shard, "agent", Some(1))
        .up(
            &set,
            &Request {
                target: Some("1".to_owned()),
                allow_drift: None,
            },
        )
        .await
        .expect("revision 1");
    // What an earlier release's ledger looks like: the tables without the function.
    sqlx::query(
        "DROP FUNCTION fleetshift.open_revision_v1(bigint, text[], text[], text, text, text)",
    )
    .execute(&admin)
    .await
    .expect("drop the function");
    let fresh = support::postgres(&url).await;
    support::executor(&fresh, "agent", Some(2))
        .up(&set, &Request::default())
        .await
        .expect("the ledger is brought up to date and revision 2 applies");
    assert_eq!(count(&admin).await, 1);
    support::assert_sound_ledger(&fresh, &set, None).await;
}
