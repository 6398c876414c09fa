//! The SQL a restore of a shard wraps around the backup's own script, all in ONE transaction,
//! so the shard ends either fully restored or untouched:
//!
//! - [`prologue`]: bounds every lock wait, takes the migrator lock (no local migrator runs
//!   meanwhile), refuses a shard fenced by a newer token (holding the fence row), then locks
//!   the shard's relations up front, so the script's own drops never wait unbounded;
//! - the backup's script, with the relations the backup does not have dropped before it;
//! - [`epilogue`]: the ledger as the backup had it (created when the backup predates it), the
//!   fence left at the restore's token, and the restore in the audit trail.

use std::time::Duration;

use super::ledger_sql;
use super::migrator_lock::KEY;
use crate::fence::FenceToken;

/// What the prologue raises when the migrator lock is held (matched in the client's error).
pub const MIGRATOR_BUSY: &str =
    "fleetshift: another migrator holds the migrator lock of this shard";

/// What the prologue raises when a newer token fenced the shard.
pub const FENCED_OUT: &str = "fleetshift: fenced out by token";

/// Runs first. `locks` are the shard's relations, already quoted (`"schema"."name"`).
pub fn prologue(token: FenceToken, lock_timeout: Duration, locks: &[String]) -> String {
    let mut sql = format!(
        "SET LOCAL lock_timeout = '{lock_ms}ms';
DO $fleetshift$
DECLARE
    current_token bigint;
BEGIN
    IF NOT pg_try_advisory_xact_lock({KEY}) THEN
        RAISE EXCEPTION '{MIGRATOR_BUSY}';
    END IF;
    IF to_regclass('fleetshift.fence') IS NOT NULL THEN
        EXECUTE 'SELECT token FROM fleetshift.fence FOR UPDATE' INTO current_token;
        IF current_token > {token} THEN
            RAISE EXCEPTION '{FENCED_OUT} %', current_token;
        END IF;
    END IF;
END
$fleetshift$;
",
        lock_ms = lock_timeout.as_millis().max(1),
    );
    if !locks.is_empty() {
        sql.push_str(&format!(
            "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE;\n",
            locks.join(", ")
        ));
    }
    sql
}

/// Runs last: the ledger, the fence at `token`, and an audit entry with `reason`.
pub fn epilogue(token: FenceToken, agent_id: &str, reason: &str) -> String {
    format!(
        "{create}
UPDATE fleetshift.fence SET token = {token};
INSERT INTO fleetshift.audit (action, version, reason, agent_id, fence_token)
    VALUES ('restore', NULL, {reason}, {agent}, {token});
",
        create = ledger_sql::DEFAULT.create,
        reason = literal(reason),
        agent = literal(agent_id),
    )
}

/// `text` as a string literal (standard-conforming strings, as every supported server has).
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prologue_bounds_lock_waits_before_anything_and_locks_what_it_is_given() {
        let sql = prologue(
            FenceToken::from_raw(42),
            Duration::from_secs(3),
            &["\"public\".\"t\"".to_owned()],
        );
        assert!(sql.starts_with("SET LOCAL lock_timeout = '3000ms';"));
        assert!(sql.contains("IF current_token > 42 THEN"));
        assert!(sql.ends_with("LOCK TABLE \"public\".\"t\" IN ACCESS EXCLUSIVE MODE;\n"));
        assert!(!prologue(FenceToken::from_raw(1), Duration::ZERO, &[]).contains("LOCK TABLE"));
    }

    #[test]
    fn the_epilogue_quotes_what_it_records() {
        let sql = epilogue(FenceToken::from_raw(7), "agent-'1", "restored by o'brien");
        assert!(sql.contains("'restored by o''brien', 'agent-''1', 7"));
        assert!(sql.contains("UPDATE fleetshift.fence SET token = 7;"));
    }
}
