//! The PostgreSQL ledger's SQL: schema `fleetshift` with `history`, `fence` and `audit`, or,
//! for a shard that is one schema of its database (a tenant), the same in a schema of its
//! own: `fleetshift_<tenant>`. The texts below name the default schema; [`PgLedger::in_schema`]
//! renders them for another.

use std::borrow::Cow;
use std::sync::LazyLock;

use crate::engine::fenced::{Dialect, LedgerSql};

/// The schema the ledger of a whole-database shard lives in.
pub const DEFAULT_SCHEMA: &str = "fleetshift";

/// The ledger's SQL for one schema.
#[derive(Debug)]
pub struct PgLedger {
    /// Creates (or brings up to date) the ledger.
    pub create: String,
    /// The opening function's signature, for `to_regprocedure`.
    pub open_revision: String,
    /// Calls the opening function (`$1`…`$6`).
    pub open_call: String,
    pub select_history: String,
    /// The backfill marks' table: a ledger without it is brought up to date.
    pub backfills_table: String,
    pub sql: LedgerSql,
}

/// The ledger of whole-database shards.
pub static DEFAULT: LazyLock<PgLedger> = LazyLock::new(|| PgLedger::in_schema(DEFAULT_SCHEMA));

impl PgLedger {
    /// The ledger's SQL with its objects in `schema` (a plain identifier: letters, digits and
    /// `_`, checked where scopes are made).
    pub fn in_schema(schema: &str) -> Self {
        let render = |text: &str| {
            text.replace("fleetshift.", &format!("{schema}.")).replace(
                "SCHEMA IF NOT EXISTS fleetshift;",
                &format!("SCHEMA IF NOT EXISTS {schema};"),
            )
        };
        Self {
            create: render(CREATE),
            open_revision: render(OPEN_REVISION),
            open_call: render(
                "SELECT fleetshift.open_revision_v1($1, $2::text[], $3::text[], $4, $5, $6)",
            ),
            select_history: render(SELECT_HISTORY),
            sql: LedgerSql {
                dialect: Dialect::Postgres,
                read_fence: Cow::Owned(render(READ_FENCE)),
                history_table: Cow::Owned(render(HISTORY_TABLE)),
                upsert_history: Cow::Owned(render(UPSERT_HISTORY)),
                insert_audit: Cow::Owned(render(INSERT_AUDIT)),
                upsert_fingerprint: Cow::Owned(render(UPSERT_FINGERPRINT)),
                upsert_backfill: Cow::Owned(render(UPSERT_BACKFILL)),
                select_backfill: Cow::Owned(render(SELECT_BACKFILL)),
            },
            backfills_table: render(BACKFILLS_TABLE),
        }
    }
}

const CREATE: &str = "
CREATE SCHEMA IF NOT EXISTS fleetshift;
CREATE TABLE IF NOT EXISTS fleetshift.fence (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    token bigint NOT NULL
);
INSERT INTO fleetshift.fence (singleton, token) VALUES (true, 0) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS fleetshift.history (
    version text PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    status text NOT NULL CHECK (status IN ('started', 'applied', 'failed', 'reverted')),
    transactional boolean NOT NULL,
    fence_token bigint NOT NULL,
    plan_id text,
    agent_id text NOT NULL,
    started_at timestamptz NOT NULL,
    finished_at timestamptz,
    duration_ms bigint,
    statements_run bigint NOT NULL DEFAULT 0,
    error text
);
CREATE TABLE IF NOT EXISTS fleetshift.fingerprints (
    version text PRIMARY KEY,
    fingerprint text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS fleetshift.backfills (
    version text PRIMARY KEY,
    after_key text,
    rows_done bigint NOT NULL,
    batches bigint NOT NULL,
    fence_token bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS fleetshift.audit (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    action text NOT NULL,
    version text,
    reason text NOT NULL,
    agent_id text NOT NULL,
    fence_token bigint NOT NULL
);
CREATE OR REPLACE FUNCTION fleetshift.open_revision_v1(
    holder bigint, guarded text[], accepted text[],
    lock_wait text, statement_limit text, idle_limit text)
RETURNS void LANGUAGE plpgsql AS $body$
DECLARE
    moved bigint;
    offending text;
BEGIN
    PERFORM set_config('lock_timeout', lock_wait, true),
            set_config('statement_timeout', statement_limit, true),
            set_config('idle_in_transaction_session_timeout', idle_limit, true);
    UPDATE fleetshift.fence SET token = holder WHERE token <= holder RETURNING token INTO moved;
    IF moved IS NULL THEN
        RAISE EXCEPTION 'fleetshift: a newer token holds the fence' USING ERRCODE = 'FS001';
    END IF;
    SELECT g.version INTO offending
      FROM unnest(guarded, accepted) AS g(version, statuses)
      LEFT JOIN fleetshift.history h ON h.version = g.version
     WHERE NOT coalesce(h.status, 'none') = ANY (string_to_array(g.statuses, ','))
     LIMIT 1;
    IF offending IS NOT NULL THEN
        RAISE EXCEPTION 'fleetshift: the ledger guard does not hold for revision %', offending
            USING ERRCODE = 'FS002';
    END IF;
END
$body$;
COMMENT ON FUNCTION fleetshift.open_revision_v1(bigint, text[], text[], text, text, text) IS
    'fleetshift: opens a revision''s transaction (timeouts, fence, guard); see docs/architecture.md';
";

/// The function [`CREATE`] adds; a ledger without it is brought up to date.
const OPEN_REVISION: &str = "fleetshift.open_revision_v1(bigint, text[], text[], text, text, text)";

const SELECT_HISTORY: &str = "
SELECT version, name, checksum, status, transactional, fence_token, plan_id, agent_id,
       to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS started_at,
       to_char(finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS finished_at,
       duration_ms, statements_run, error
FROM fleetshift.history";

const READ_FENCE: &str = "SELECT token FROM fleetshift.fence";

const HISTORY_TABLE: &str = "fleetshift.history";

const UPSERT_HISTORY: &str = "INSERT INTO fleetshift.history AS h
            (version, name, checksum, status, transactional, fence_token, plan_id, agent_id,
             started_at, finished_at, duration_ms, statements_run, error)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now(),
                 CASE WHEN $4 = 'started' THEN NULL ELSE clock_timestamp() END, $9, $10, $11)
         ON CONFLICT (version) DO UPDATE SET
            name = EXCLUDED.name, checksum = EXCLUDED.checksum, status = EXCLUDED.status,
            transactional = EXCLUDED.transactional, fence_token = EXCLUDED.fence_token,
            plan_id = EXCLUDED.plan_id, agent_id = EXCLUDED.agent_id,
            started_at = CASE WHEN $12 THEN h.started_at ELSE EXCLUDED.started_at END,
            finished_at = EXCLUDED.finished_at, duration_ms = EXCLUDED.duration_ms,
            statements_run = EXCLUDED.statements_run, error = EXCLUDED.error";

const INSERT_AUDIT: &str =
    "INSERT INTO fleetshift.audit (action, version, reason, agent_id, fence_token)
         VALUES ($1, $2, $3, $4, $5)";

const UPSERT_FINGERPRINT: &str =
    "INSERT INTO fleetshift.fingerprints (version, fingerprint) VALUES ($1, $2)
         ON CONFLICT (version) DO UPDATE SET fingerprint = EXCLUDED.fingerprint,
            recorded_at = clock_timestamp()";

const BACKFILLS_TABLE: &str = "fleetshift.backfills";

const UPSERT_BACKFILL: &str =
    "INSERT INTO fleetshift.backfills (version, after_key, rows_done, batches, fence_token)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (version) DO UPDATE SET after_key = EXCLUDED.after_key,
            rows_done = EXCLUDED.rows_done, batches = EXCLUDED.batches,
            fence_token = EXCLUDED.fence_token, updated_at = clock_timestamp()";

const SELECT_BACKFILL: &str =
    "SELECT after_key, rows_done, batches FROM fleetshift.backfills WHERE version = $1";
