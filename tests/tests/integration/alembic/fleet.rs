//! The Flask-Migrate fixture rolled across a fleet of three PostgreSQL shards through the real
//! CLI, coordinator and agent, then rolled back to base. Every process runs with a `PATH` that
//! holds no Python: only the operator's CLI renders, with the project's virtualenv; the agent
//! receives SQL.

use std::path::Path;

use fleetshift_tests::alembic;

use super::FLASK_SHOP_ORDER;
use crate::integration::cli_fleet::{CliFleet, summary};
use crate::integration::support::assert_exit;

async fn public_tables(url: &str) -> Vec<String> {
    let pool = sqlx::PgPool::connect(url).await.expect("shard");
    let tables = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'
         AND tablename NOT LIKE 'fleetshift%' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .expect("catalog");
    pool.close().await;
    tables
}

/// The `PATH` a process was started with, read from `/proc`.
fn path_of(pid: u32) -> String {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    environ
        .split(|byte| *byte == 0)
        .filter_map(|entry| std::str::from_utf8(entry).ok())
        .find_map(|entry| entry.strip_prefix("PATH="))
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flask_migrate_project_rolls_across_a_fleet_without_python_and_back_to_base() {
    let cache = tempfile::tempdir().expect("cache");
    let no_python = tempfile::tempdir().expect("an empty PATH folder");
    let text = |path: &Path| path.to_str().expect("UTF-8 path").to_owned();
    let environment = vec![
        ("PATH".to_owned(), text(no_python.path())),
        ("FLEETSHIFT_ALEMBIC_VENV".to_owned(), text(&alembic::venv())),
        ("FLEETSHIFT_CACHE_DIR".to_owned(), text(cache.path())),
    ];
    let fleet = CliFleet::start_shards("shop", "", 3, |_| String::new(), environment).await;
    let agent_path = path_of(fleet.agent.id());
    assert!(
        agent_path
            .split(':')
            .all(|folder| !Path::new(folder).join("python3").exists()
                && !Path::new(folder).join("python").exists()),
        "the agent's PATH holds no Python: {agent_path}"
    );

    let project = alembic::flask_shop();
    let dir = project.to_str().expect("UTF-8 path");
    let (plan_id, applied) = fleet.cli.planned_and_applied(&[dir]).await;
    assert_exit(&applied, 0);
    let ended = summary(&applied);
    assert_eq!(ended["state"], "succeeded", "{ended}");
    let shards = ended["shards"].as_array().expect("shards");
    assert_eq!(shards.len(), 3, "{ended}");
    for shard in shards {
        assert_eq!(shard["state"], "succeeded", "{shard}");
        assert_eq!(shard["current_version"], FLASK_SHOP_ORDER[21], "{shard}");
    }
    for url in &fleet.shard_urls {
        assert_eq!(
            public_tables(url).await,
            [
                "audit_log",
                "customer",
                "order_line",
                "orders",
                "product",
                "refund",
                "shipment"
            ]
        );
    }

    let planned = fleet
        .cli
        .alice(&["rollback", &plan_id, "--output", "json"])
        .await;
    assert_exit(&planned, 0);
    let rollback_id = summary(&planned)["plan"].as_str().expect("id").to_owned();
    let rolled_back = fleet.cli.approved_and_applied(&rollback_id).await;
    assert_exit(&rolled_back, 0);
    assert_eq!(summary(&rolled_back)["state"], "succeeded");
    for url in &fleet.shard_urls {
        assert!(public_tables(url).await.is_empty(), "{url} is back at base");
    }
}
