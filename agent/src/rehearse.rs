//! Rehearsals on this host: an operator's request (relayed by the coordinator) to run a plan's
//! pending revisions on a sampled copy of one shard ([`fleetshift_common::rehearsal`]). At most
//! `[rehearsals] max_concurrent` run at once; the scratch databases carry this agent's id, so
//! the copies a killed agent left behind are dropped when it starts again
//! ([`drop_leftovers`]).

use std::time::Instant;

use fleetshift_common::executor::{ExecutorSettings, LockRetryPolicy, Request};
use fleetshift_common::proto::v1::{ErrorDetail, ErrorKind, RehearseShard, ShardRehearsal};
use fleetshift_common::rehearsal::scratch::{self, SampleOptions};
use fleetshift_common::rehearsal::wire::{self, Reported};
use fleetshift_common::rehearsal::{self, RehearsalError, RehearsalSettings};
use fleetshift_common::secrets::DatabaseUrl;
use tokio_util::sync::CancellationToken;

use crate::assignment::{exec_failure, plan_timeouts, unpack};
use crate::config::{AgentConfig, ShardConfig};

/// The sample when the request names none.
const DEFAULT_PERCENT: f64 = 10.0;
const DEFAULT_MAX_ROWS: u64 = 1_000_000;

fn failure(kind: ErrorKind, message: String) -> ErrorDetail {
    ErrorDetail {
        kind: kind.into(),
        message,
    }
}

/// Rehearses `order` on `shard`; stops (its copy is dropped at the next start) when `stop`
/// fires.
pub async fn rehearse(
    config: &AgentConfig,
    shard: &ShardConfig,
    order: &RehearseShard,
    stop: &CancellationToken,
) -> Result<ShardRehearsal, ErrorDetail> {
    if !shard.database_url.expose().starts_with("postgres") {
        return Err(failure(
            ErrorKind::BadInput,
            format!(
                "shard {}: rehearsals need PostgreSQL (they trace its locks and catalog)",
                shard.id
            ),
        ));
    }
    let Some(shipped) = order.migration_set.as_ref() else {
        return Err(failure(
            ErrorKind::BadInput,
            "the rehearsal carries no migration set".to_owned(),
        ));
    };
    let set = unpack(shipped).map_err(|error| failure(error.kind(), error.to_string()))?;
    let settings = settings(config, order)?;
    let request = Request {
        target: Some(order.target_version.clone()).filter(|target| !target.is_empty()),
        allow_drift: None,
    };
    let slots = &config.rehearsals.slots;
    let _slot = tokio::select! {
        () = stop.cancelled() => return Err(stopped(shard)),
        slot = slots.acquire() => slot.map_err(|_| stopped(shard))?,
    };
    tracing::info!(shard = %shard.id, plan = %order.plan_id, percent = settings.sample.percent, "rehearsing");
    let started = Instant::now();
    let rehearsed = tokio::select! {
        () = stop.cancelled() => return Err(stopped(shard)),
        rehearsed = rehearsal::rehearse(&shard.database_url, &set, &request, &settings) => rehearsed,
    };
    let rehearsed = rehearsed.map_err(|error| match &error {
        RehearsalError::Exec(error) => exec_failure(error),
        RehearsalError::NoRoom { .. } => failure(ErrorKind::Precondition, error.to_string()),
        _ => failure(ErrorKind::Failed, error.to_string()),
    })?;
    let reported = Reported {
        shard_id: &shard.id,
        agent_id: &config.agent_id,
        duration: started.elapsed(),
    };
    tracing::info!(shard = %shard.id, plan = %order.plan_id, passed = rehearsed.passed(), findings = rehearsed.findings.len(), "rehearsal finished");
    Ok(wire::report(&rehearsed, reported))
}

fn stopped(shard: &ShardConfig) -> ErrorDetail {
    failure(
        ErrorKind::Stopped,
        format!(
            "shard {}: the rehearsal stopped with the agent's session",
            shard.id
        ),
    )
}

/// The request's sample and the plan's lock discipline, with this host's client programs.
fn settings(config: &AgentConfig, order: &RehearseShard) -> Result<RehearsalSettings, ErrorDetail> {
    let limits = order.limits.unwrap_or_default();
    let timeouts = plan_timeouts(&limits);
    timeouts
        .validate()
        .map_err(|message| failure(ErrorKind::BadInput, message))?;
    let percent = if order.sample_percent > 0.0 {
        order.sample_percent
    } else {
        DEFAULT_PERCENT
    };
    if percent > 100.0 {
        return Err(failure(
            ErrorKind::BadInput,
            format!("a sample of {percent}% is more than the whole table"),
        ));
    }
    Ok(RehearsalSettings {
        sample: SampleOptions {
            percent,
            max_rows_per_table: if order.max_rows_per_table > 0 {
                order.max_rows_per_table
            } else {
                DEFAULT_MAX_ROWS
            },
            pg_dump: config.rehearsals.pg_dump.clone(),
            pg_restore: config.rehearsals.pg_restore.clone(),
            owner: config.agent_id.clone(),
            staging: config.rehearsals.staging.clone(),
        },
        timeouts,
        executor: ExecutorSettings {
            lock_retry: LockRetryPolicy {
                max_retries: usize::try_from(limits.lock_retries).unwrap_or(usize::MAX),
                ..LockRetryPolicy::default()
            },
            lock_timeout: timeouts.lock_timeout,
            ..ExecutorSettings::default()
        },
        plan_id: Some(order.plan_id.clone()),
        baselines: order.baselines.clone(),
    })
}

/// Drops the scratch databases an earlier run of this agent left (killed mid-rehearsal): on
/// the staging server when there is one, else on its PostgreSQL shards' servers. A server it
/// cannot reach now is left for the next start.
pub async fn drop_leftovers(config: &AgentConfig) {
    let servers: Vec<(&str, &DatabaseUrl)> = match &config.rehearsals.staging {
        Some(staging) => vec![("staging", staging)],
        None => config
            .shards
            .iter()
            .filter(|shard| shard.database_url.expose().starts_with("postgres"))
            .map(|shard| (shard.id.as_str(), &shard.database_url))
            .collect(),
    };
    for (server, url) in servers {
        match scratch::drop_leftovers(url, &config.agent_id).await {
            Ok(dropped) if !dropped.is_empty() => {
                tracing::warn!(%server, dropped = ?dropped, "dropped scratch databases a stopped rehearsal left");
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%server, %error, "cannot look for scratch databases a stopped rehearsal left; trying again at the next start");
            }
        }
    }
}
