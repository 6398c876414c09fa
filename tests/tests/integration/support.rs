//! Shared helpers: connecting engines and executors the way the CLI does.

use fleetshift_common::fence::FenceToken;
use std::time::Duration;

use fleetshift_common::engine::ShardEngine;
use fleetshift_common::engine::{PostgresShard, SqliteShard, Timeouts};
use fleetshift_common::executor::{Executor, ExecutorSettings, Identity, LockRetryPolicy};
use fleetshift_common::secrets::DatabaseUrl;

pub async fn postgres(url: &str) -> PostgresShard {
    PostgresShard::connect(&DatabaseUrl::new(url), Timeouts::default())
        .await
        .expect("connect to the test database")
}

pub async fn postgres_with(url: &str, timeouts: Timeouts) -> PostgresShard {
    PostgresShard::connect(&DatabaseUrl::new(url), timeouts)
        .await
        .expect("connect to the test database")
}

pub async fn sqlite(path: &std::path::Path) -> SqliteShard {
    SqliteShard::connect(
        &DatabaseUrl::new(format!("sqlite:{}", path.display())),
        Timeouts::default(),
    )
    .await
    .expect("open the SQLite shard")
}

pub fn identity(agent: &str, fence_token: Option<i64>) -> Identity {
    Identity {
        agent_id: agent.to_owned(),
        plan_id: Some("test-plan".to_owned()),
        fence_token: fence_token.map(FenceToken::from_raw),
    }
}

pub fn executor<'a, E: ShardEngine>(
    engine: &'a E,
    agent: &str,
    fence_token: Option<i64>,
) -> Executor<'a, E> {
    Executor::new(engine, identity(agent, fence_token), quick_settings())
}

/// Short waits so failing paths finish fast.
pub fn quick_settings() -> ExecutorSettings {
    ExecutorSettings {
        lock_retry: LockRetryPolicy {
            max_retries: 3,
            min_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(400),
        },
        migrator_lock_wait: Duration::from_secs(30),
        lock_timeout: Timeouts::default().lock_timeout,
        ..ExecutorSettings::default()
    }
}

/// A temporary migration directory's path, for command lines.
pub fn dir(directory: &tempfile::TempDir) -> &str {
    directory.path().to_str().expect("utf-8 path")
}

/// A command's stdout as one JSON document.
pub fn json(output: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "stdout is not JSON ({error}): {}",
            fleetshift_tests::binary::printed(output)
        )
    })
}

/// The after-fault check: panics listing every violation of the shard's ledger.
pub async fn assert_sound_ledger<E: ShardEngine>(
    engine: &E,
    set: &fleetshift_common::source::MigrationSet,
    target: Option<&str>,
) {
    let ledger = engine.read_ledger().await.expect("read the ledger");
    if let Err(violations) = fleetshift_tests::ledger_check::check(set, &ledger, target) {
        panic!(
            "the ledger of {} is not sound:\n{}",
            engine.shard(),
            violations.join("\n")
        );
    }
}

/// A throwaway PostgreSQL cluster with one database.
pub struct Database {
    /// Keeps the cluster running; it stops when this is dropped.
    pub cluster: fleetshift_tests::postgres::PostgresCluster,
    pub url: String,
    pub admin: sqlx::PgPool,
}

pub async fn database(name: &str) -> Database {
    let cluster = fleetshift_tests::postgres::PostgresCluster::start().expect("cluster");
    let url = cluster.create_database(name).await.expect("database");
    let admin = cluster.admin_pool(name).await.expect("admin pool");
    Database {
        cluster,
        url,
        admin,
    }
}

/// Asserts that a command exited with `code`, showing what it printed otherwise.
pub fn assert_exit(output: &std::process::Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "{}",
        fleetshift_tests::binary::printed(output)
    );
}
