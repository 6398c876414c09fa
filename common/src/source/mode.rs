//! A script's transaction mode as the tools that run files as they are would give it, when
//! the script says nothing: Flyway and golang-migrate run a script of statements PostgreSQL
//! refuses inside a transaction (`CREATE INDEX CONCURRENTLY`…) without one. A script mixing
//! both kinds stays transactional, and lint's `non-transactional-in-transaction` rule names
//! the statement that would fail (as it fails with either tool).

use super::Script;

/// Whether `up` runs in a transaction: not when every statement is refused in one.
pub fn detected(up: &Script) -> bool {
    let statements = up.statements();
    statements.is_empty()
        || !statements
            .iter()
            .all(|statement| statement.refused_in_transaction())
}
