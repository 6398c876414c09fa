//! What the checker reads: each shard's tables straight from its database (not through
//! fleetshift's engine), and a plan's events as a watcher sees them, moving to another
//! replica with the last sequence seen whenever its stream breaks.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use fleetshift_common::fence::FenceToken;
use fleetshift_common::ledger::{LedgerEntry, RevisionStatus};
use fleetshift_common::proto::v1::{RolloutEvent, WatchRolloutRequest};
use sqlx::{PgPool, Row};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::checker::ShardRecord;
use crate::fleet::{ChaosFleet, Shard};

/// Reads `shard`'s ledger, witnesses, indexes, fence and audit trail, trying again for a
/// while when its server is away (it may just have been restarted).
pub async fn shard(shard: &Shard) -> anyhow::Result<ShardRecord> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match read(&shard.id, &shard.admin).await {
            Ok(record) => return Ok(record),
            Err(error) if tokio::time::Instant::now() > deadline => {
                return Err(error).with_context(|| format!("reading shard {}", shard.id));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

async fn read(id: &str, pool: &PgPool) -> Result<ShardRecord, sqlx::Error> {
    let ledger = sqlx::query(
        "SELECT version, name, checksum, status, transactional, fence_token, plan_id, agent_id,
                to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') AS started,
                finished_at::text AS finished, duration_ms, statements_run, error
           FROM fleetshift.history",
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|row| {
        Ok(LedgerEntry {
            version: row.try_get("version")?,
            name: row.try_get("name")?,
            checksum: row.try_get("checksum")?,
            status: RevisionStatus::parse(row.try_get("status")?)
                .ok_or_else(|| sqlx::Error::Protocol("an unknown ledger status".to_owned()))?,
            transactional: row.try_get("transactional")?,
            fence_token: FenceToken::from_raw(row.try_get("fence_token")?),
            plan_id: row.try_get("plan_id")?,
            agent_id: row.try_get("agent_id")?,
            started_at: row.try_get("started")?,
            finished_at: row.try_get("finished")?,
            duration_ms: row.try_get("duration_ms")?,
            statements_run: row.try_get("statements_run")?,
            error: row.try_get("error")?,
        })
    })
    .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let witnesses: BTreeMap<u32, u64> =
        sqlx::query_as::<_, (i32, i64)>("SELECT version, count(*) FROM witness GROUP BY version")
            .fetch_all(pool)
            .await?
            .into_iter()
            .filter_map(|(version, count)| {
                Some((u32::try_from(version).ok()?, u64::try_from(count).ok()?))
            })
            .collect();
    let valid_indexes: BTreeSet<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
          WHERE i.indrelid = 'accounts'::regclass AND i.indisvalid AND NOT i.indisprimary",
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect();
    let fence: i64 = sqlx::query_scalar("SELECT token FROM fleetshift.fence")
        .fetch_one(pool)
        .await?;
    let audit_tokens: Vec<i64> = sqlx::query_scalar("SELECT fence_token FROM fleetshift.audit")
        .fetch_all(pool)
        .await?;
    let schema: BTreeSet<String> = sqlx::query_scalar(SCHEMA)
        .fetch_all(pool)
        .await?
        .into_iter()
        .collect();
    Ok(ShardRecord {
        shard: id.to_owned(),
        ledger,
        witnesses,
        valid_indexes,
        fence,
        audit_tokens,
        schema,
    })
}

/// The application's schema, one line per table, column and index, from the catalog.
const SCHEMA: &str = "
SELECT 'table ' || c.relname
  FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
UNION ALL
SELECT 'column ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
       || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
       || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
  FROM pg_class c
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
 WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
UNION ALL
SELECT 'index ' || pg_get_indexdef(i.indexrelid)
       || CASE WHEN i.indisvalid AND i.indisready THEN '' ELSE ' (invalid)' END
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
 WHERE c.relnamespace = 'public'::regnamespace";

/// A plan's events as they happen, kept until the stream ends (the plan ended and no task
/// is active) or the watcher is stopped.
#[derive(Debug)]
pub struct Watcher {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    seen: Arc<Mutex<Vec<RolloutEvent>>>,
}

impl Watcher {
    /// Starts watching `plan_id` from its current state.
    pub fn start(fleet: Arc<ChaosFleet>, plan_id: String) -> Self {
        let (stop, stopped) = watch::channel(false);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(follow(fleet, plan_id, Arc::clone(&seen), stopped));
        Self { stop, task, seen }
    }

    /// Waits up to `limit` for the watcher to see its plan end, then stops it; the events.
    pub async fn finish(self, limit: Duration) -> Vec<RolloutEvent> {
        let Self {
            stop,
            mut task,
            seen,
        } = self;
        if tokio::time::timeout(limit, &mut task).await.is_err() {
            let _ = stop.send(true);
            let _ = task.await;
        }
        std::mem::take(
            &mut *seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

async fn follow(
    fleet: Arc<ChaosFleet>,
    plan_id: String,
    seen: Arc<Mutex<Vec<RolloutEvent>>>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut since = 0;
    loop {
        let request = WatchRolloutRequest {
            plan_id: plan_id.clone(),
            include_statements: false,
            since,
        };
        let opened = tokio::select! {
            _ = stopped.changed() => return,
            opened = fleet.operator("watch", |mut client| {
                let request = request.clone();
                async move { client.watch_rollout(request).await }
            }) => opened,
        };
        let Ok(mut stream) = opened else {
            continue;
        };
        loop {
            let message = tokio::select! {
                _ = stopped.changed() => return,
                message = stream.message() => message,
            };
            match message {
                Ok(Some(event)) => {
                    since = event.sequence;
                    seen.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(event);
                }
                // A replica ends the stream once the plan ended and no task is active.
                Ok(None) => return,
                // The replica went away: continue elsewhere after the last sequence seen.
                Err(_) => break,
            }
        }
    }
}

/// The plan's events after `since`, replayed until the stream ends (the plan has ended).
pub async fn replay(
    fleet: &ChaosFleet,
    plan_id: &str,
    since: u64,
) -> anyhow::Result<Vec<RolloutEvent>> {
    let request = WatchRolloutRequest {
        plan_id: plan_id.to_owned(),
        include_statements: false,
        since,
    };
    let mut stream = fleet
        .operator("replay", |mut client| {
            let request = request.clone();
            async move { client.watch_rollout(request).await }
        })
        .await?;
    let mut events = Vec::new();
    while let Some(event) = tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .context("the replay stalled")??
    {
        events.push(event);
    }
    Ok(events)
}
