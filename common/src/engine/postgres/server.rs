//! Which server a shard's database lives on: the cluster's system identifier (the same for
//! every database of one cluster, whatever address reaches it) and its version. Plans count
//! the per-host concurrency cap by the identifier.

use super::CountedPool;

/// The cluster's system identifier, in decimal, and its `server_version`. The identifier is
/// empty when the agent's role may not read `pg_control_system()`.
pub async fn identity(pool: &CountedPool) -> Result<(String, String), sqlx::Error> {
    let version: String = sqlx::query_scalar("SELECT current_setting('server_version')")
        .fetch_one(pool)
        .await?;
    let identifier = match sqlx::query_scalar::<_, String>(
        "SELECT system_identifier::text FROM pg_control_system()",
    )
    .fetch_one(pool)
    .await
    {
        Ok(identifier) => identifier,
        Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("42501") => {
            String::new()
        }
        Err(error) => return Err(error),
    };
    Ok((identifier, version))
}

/// The sessions connected to the pool's database, by `application_name`, fleetshift's own
/// left out: what phase gates wait on (an old application version's sessions gone).
pub async fn applications(pool: &CountedPool) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT coalesce(application_name, ''), count(*)
         FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()
           AND backend_type = 'client backend'
           AND coalesce(application_name, '') NOT LIKE 'fleetshift%'
         GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(pool)
    .await
}
