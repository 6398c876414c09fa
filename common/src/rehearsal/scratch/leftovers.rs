//! Scratch databases a stopped rehearsal left behind: each is named after its owner and the
//! process that built it, so the owner's next start drops those whose process is gone.

use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, ConnectOptions as _, Connection as _};

use super::SCRATCH_PREFIX;
use crate::engine::{DatabaseMessage, quote_identifier};
use crate::rehearsal::RehearsalError;
use crate::secrets::DatabaseUrl;

/// `fleetshift_rehearsal_<owner>_`: the owner's letters and digits, at most 16.
pub(super) fn owner_prefix(owner: &str) -> String {
    let tag: String = owner
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|letter| letter.to_ascii_lowercase())
        .take(16)
        .collect();
    format!("{SCRATCH_PREFIX}{tag}_")
}

/// Drops the scratch databases `owner` left on the shard's server whose process is no longer
/// running on this host (killed mid-rehearsal); their names.
pub async fn drop_leftovers(
    shard: &DatabaseUrl,
    owner: &str,
) -> Result<Vec<String>, RehearsalError> {
    let options: PgConnectOptions = shard
        .expose()
        .parse()
        .map_err(|error| RehearsalError::build(shard, "reading the database URL", &error))?;
    let failed = |error: sqlx::Error| {
        RehearsalError::build(
            shard,
            "dropping leftover scratch databases",
            &DatabaseMessage(&error),
        )
    };
    let mut server = options.connect().await.map_err(failed)?;
    let prefix = owner_prefix(owner);
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT datname::text FROM pg_database WHERE starts_with(datname, $1) ORDER BY 1",
    )
    .bind(&prefix)
    .fetch_all(&mut server)
    .await
    .map_err(failed)?;
    let mut dropped = Vec::new();
    for name in names {
        let pid = name[prefix.len()..]
            .split('_')
            .next()
            .and_then(|pid| pid.parse::<u32>().ok());
        if pid.is_some_and(running) {
            continue;
        }
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_identifier(&name)
        )))
        .execute(&mut server)
        .await
        .map_err(failed)?;
        tracing::info!(database = %name, "dropped a scratch database a stopped rehearsal left");
        dropped.push(name);
    }
    let _ = server.close().await;
    Ok(dropped)
}

/// Whether process `pid` runs on this host.
fn running(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}
