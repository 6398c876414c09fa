//! Settings every connection fleetshift opens to PostgreSQL gets beyond the startup options.

use sqlx::postgres::PgConnection;

/// PostgreSQL 14 added `client_connection_check_interval` and `idle_session_timeout`.
pub const VERSION_WITH_SESSION_CHECKS: i32 = 140_000;

/// Makes the server notice a vanished client (a SIGKILLed migrator) within a second and
/// abort its transaction, instead of when the running statement next writes to the socket.
/// Returns the server's version number.
pub async fn configure(connection: &mut PgConnection) -> Result<i32, sqlx::Error> {
    let version: i32 = sqlx::query_scalar("SELECT current_setting('server_version_num')::int")
        .fetch_one(&mut *connection)
        .await?;
    if version >= VERSION_WITH_SESSION_CHECKS {
        sqlx::query("SET client_connection_check_interval = '1s'")
            .execute(&mut *connection)
            .await?;
    }
    Ok(version)
}
