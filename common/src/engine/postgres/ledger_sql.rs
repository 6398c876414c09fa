//! The PostgreSQL ledger's SQL: schema `fleetshift` with `history`, `fence` and `audit`.

use crate::engine::fenced::LedgerSql;

pub const CREATE: &str = "
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
CREATE TABLE IF NOT EXISTS fleetshift.audit (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    action text NOT NULL,
    version text,
    reason text NOT NULL,
    agent_id text NOT NULL,
    fence_token bigint NOT NULL
);
";

pub const SELECT_HISTORY: &str = "
SELECT version, name, checksum, status, transactional, fence_token, plan_id, agent_id,
       to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS started_at,
       to_char(finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS finished_at,
       duration_ms, statements_run, error
FROM fleetshift.history";

pub const LEDGER: LedgerSql = LedgerSql {
    move_fence: "UPDATE fleetshift.fence SET token = $1 WHERE token <= $1 RETURNING token",
    read_fence: "SELECT token FROM fleetshift.fence",
    history_table: "fleetshift.history",
    upsert_history: "INSERT INTO fleetshift.history AS h
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
            statements_run = EXCLUDED.statements_run, error = EXCLUDED.error",
    insert_audit: "INSERT INTO fleetshift.audit (action, version, reason, agent_id, fence_token)
         VALUES ($1, $2, $3, $4, $5)",
    upsert_fingerprint: "INSERT INTO fleetshift.fingerprints (version, fingerprint) VALUES ($1, $2)
         ON CONFLICT (version) DO UPDATE SET fingerprint = EXCLUDED.fingerprint,
            recorded_at = clock_timestamp()",
};
