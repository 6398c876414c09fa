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
