//! What the server processes running a migration's statements hold or await now, for the
//! updates a long statement sends: their locks on tables (the catalog and fleetshift's own
//! ledger left out) and any lock they wait for, waits first, then the strongest.

use super::CountedPool;

const LOCKS: &str = "
    SELECT CASE WHEN l.granted THEN '' ELSE 'waiting for ' END || l.mode || ' on '
           || CASE WHEN l.locktype = 'relation' AND c.oid IS NOT NULL
                   THEN n.nspname || '.' || c.relname
                   WHEN l.locktype = 'relation' THEN 'a table created since'
                   WHEN l.locktype = 'transactionid' THEN 'a transaction'
                   ELSE 'a ' || l.locktype END
    FROM pg_locks l
    LEFT JOIN pg_class c ON c.oid = l.relation
    LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE l.pid = ANY($1)
      AND (NOT l.granted
           OR (l.locktype = 'relation' AND c.relkind IN ('r', 'p', 'm', 'v', 'f')
               AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'fleetshift')))
    ORDER BY l.granted,
             array_position(ARRAY['AccessExclusiveLock', 'ExclusiveLock',
               'ShareRowExclusiveLock', 'ShareLock', 'ShareUpdateExclusiveLock',
               'RowExclusiveLock', 'RowShareLock', 'AccessShareLock'], l.mode::text),
             1
    LIMIT 8";

/// The locks of server processes `pids`, as `AccessExclusiveLock on public.items` or
/// `waiting for ShareLock on a transaction`.
pub(super) async fn of(pool: &CountedPool, pids: &[i32]) -> Result<Vec<String>, sqlx::Error> {
    if pids.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_scalar(LOCKS).bind(pids).fetch_all(pool).await
}
