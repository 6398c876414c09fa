//! Public migration histories nobody on this project wrote, taken as they are (files copied
//! unchanged into `tests/fixtures/` with their source and license): loaded, linted, applied
//! to a real PostgreSQL database and recorded. One module per tool; the shared steps here.

mod alembic;
mod dbmate;
mod flyway;
mod golang_migrate;
mod liquibase;
mod pop;

use fleetshift_tests::binary;

use super::support::{self, json};

/// `fleetshift lint PATH --output json --fail-on never`: its report, once it exited `code`.
pub(super) fn lint_report(path: &std::path::Path, code: i32) -> serde_json::Value {
    lint_report_with(std::process::Command::new(binary::fleetshift()), path, code)
}

/// [`lint_report`] with `fleetshift` as `command` prepares it.
pub(super) fn lint_report_with(
    mut command: std::process::Command,
    path: &std::path::Path,
    code: i32,
) -> serde_json::Value {
    let lint = command
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
pub(super) fn adopt_after_refusal(url: &str, path: &str, table: &str) {
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
pub(super) async fn postgres_tables(admin: &sqlx::PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'
         AND tablename NOT LIKE 'fleetshift%' ORDER BY 1",
    )
    .fetch_all(admin)
    .await
    .expect("catalog")
}
