//! PostgreSQL for tests: throwaway clusters (the testkit's [`PostgresCluster`]) and probes
//! of what a fleetshift session is doing.

use sqlx::PgPool;

pub use fleetshift_testkit::postgres::LocalPostgres as PostgresCluster;

/// Whether a fleetshift session is running a statement containing `fragment`.
pub async fn fleetshift_running(admin: &PgPool, fragment: &str) -> Option<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity
         WHERE application_name = 'fleetshift' AND state = 'active' AND query LIKE '%' || $1 || '%'
         LIMIT 1",
    )
    .bind(fragment)
    .fetch_optional(admin)
    .await
    .ok()
    .flatten()
}

/// SIGKILLs `migrator` and waits until the server has ended its backend `pid` (it notices
/// the vanished client within `client_connection_check_interval`); false if it never does.
pub async fn killed(migrator: &mut std::process::Child, admin: &PgPool, pid: i32) -> bool {
    migrator.kill().expect("SIGKILL fleetshift");
    migrator.wait().expect("reap fleetshift");
    crate::wait::wait_until(std::time::Duration::from_secs(15), || async {
        !backend_alive(admin, pid).await
    })
    .await
}

/// Whether the backend `pid` is still alive.
pub async fn backend_alive(admin: &PgPool, pid: i32) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)")
        .bind(pid)
        .fetch_one(admin)
        .await
        .unwrap_or(true)
}
