//! Replicas a shard's agent is told to watch besides those its server lists in
//! `pg_stat_replication` (cascading ones, ones fed from an archive): the agent's
//! `throttle_replicas`. Each is read on its own connection; its lag is how far its replay is
//! behind (`now() - pg_last_xact_replay_timestamp()`), or zero once it has replayed all it
//! received, so an idle primary does not read as lag.

use std::str::FromStr;
use std::time::Duration;

use fleetshift_common::engine::DatabaseMessage;
use fleetshift_common::secrets::DatabaseUrl;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// How long reading a replica may wait for its connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One watched replica.
#[derive(Debug)]
pub(super) struct Watched {
    /// `host:port`, for messages.
    pub(super) server: String,
    url: DatabaseUrl,
    pool: PgPool,
}

impl Watched {
    /// A replica at `url`, connected when first read.
    pub(super) fn lazy(url: &DatabaseUrl) -> Result<Self, String> {
        let options = PgConnectOptions::from_str(url.expose())
            .map_err(|error| {
                format!(
                    "throttle replica {}: invalid URL: {}",
                    url.server(),
                    url.scrub(&error.to_string())
                )
            })?
            .application_name("fleetshift-throttle");
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_lazy_with(options);
        Ok(Self {
            server: url.server(),
            url: url.clone(),
            pool,
        })
    }

    /// How far the replica's replay is behind; an error when it cannot be read or is not a
    /// replica at all.
    pub(super) async fn lag(&self) -> Result<Duration, String> {
        let (in_recovery, lag): (bool, Option<f64>) = sqlx::query_as(
            "SELECT pg_is_in_recovery(),
                    CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
                         ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())
                    END::float8",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(|error| {
            format!(
                "cannot read throttle replica {}: {}",
                self.server,
                self.url.scrub(&DatabaseMessage(&error).to_string())
            )
        })?;
        if !in_recovery {
            return Err(format!(
                "throttle replica {} is not a replica (it is not in recovery); fix \
                 throttle_replicas in the agent's configuration",
                self.server
            ));
        }
        Ok(Duration::try_from_secs_f64(lag.unwrap_or_default().max(0.0)).unwrap_or(Duration::MAX))
    }
}

/// The most lagging of `replicas` that can be read, with its server; a replica that cannot be
/// read now holds nothing up (it was read once before the revisions).
pub(super) async fn most_behind(replicas: &[Watched]) -> Option<(&str, Duration)> {
    let mut worst: Option<(&str, Duration)> = None;
    for replica in replicas {
        match replica.lag().await {
            Ok(lag) if worst.is_none_or(|(_, most)| lag > most) => {
                worst = Some((&replica.server, lag));
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "cannot sample a throttle replica; going on"),
        }
    }
    worst
}
