//! A script's transaction mode as the tools that run files as they are would give it, when
//! the script says nothing: Flyway and golang-migrate run a script of statements PostgreSQL
//! refuses inside a transaction (`CREATE INDEX CONCURRENTLY`…) without one.

use super::{Script, SourceProblem};

/// Why a script mixing both kinds is refused, for Flyway.
pub const FLYWAY_MIXED: &str = "Flyway refuses such a script (unless `mixed` is on) and so does fleetshift; move it to a script of its own, or set executeInTransaction=false in the script's .sql.conf";

/// Why a script mixing both kinds is refused, for sqlx and golang-migrate.
pub const UP_DOWN_MIXED: &str = "golang-migrate sends a file as one multi-statement query, which PostgreSQL runs as one transaction block, and sqlx wraps it in a transaction: it fails with either; move it to a script of its own (or make the script `-- no-transaction`)";

/// `Some(true)`: run in a transaction; `Some(false)`: every statement is refused in one, so
/// run without; `None`: both kinds, reported as a problem on the first refused statement.
pub fn detected(up: &Script, mixed: &str, problems: &mut Vec<SourceProblem>) -> Option<bool> {
    let statements = up.statements();
    let refused: Vec<_> = statements
        .iter()
        .filter(|statement| statement.refused_in_transaction())
        .collect();
    match refused.first() {
        None => Some(true),
        Some(_) if refused.len() == statements.len() => Some(false),
        Some(first) => {
            problems.push(SourceProblem::at_line(
                &up.path,
                up.file_line(first.line),
                format!("this statement cannot run inside a transaction and the script has others that can: {mixed}"),
            ));
            None
        }
    }
}
