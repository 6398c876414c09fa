//! Alembic and Flask-Migrate projects rolled out as they are: rendered by the project's own
//! Alembic (from `.tools/alembic`, which `scripts/test` installs) and run as SQL.

mod adoption;
mod fleet;
mod offline;

use fleetshift_tests::alembic;
use fleetshift_tests::binary;

use super::support::{self, Database, assert_exit, json};

/// The flask_shop fixture's revisions in the order Alembic applies them: the branch after
/// `f4e5d6c7b810` is applied refunds first, as Alembic orders it.
const FLASK_SHOP_ORDER: [&str; 22] = [
    "3f1c2a9b7d01",
    "8e4d0b6a2c02",
    "a7b3e5c1f403",
    "c2d9f8e7a604",
    "5b6a4c3d2e05",
    "e9f0a1b2c306",
    "0d1e2f3a4b07",
    "6c7d8e9f0a08",
    "b1c2d3e4f509",
    "f4e5d6c7b810",
    "9f8e7d6c5b12",
    "1a2b3c4d5e11",
    "2b3c4d5e6f13",
    "7e6d5c4b3a14",
    "d3c2b1a0f915",
    "4a5b6c7d8e16",
    "8b9c0d1e2f17",
    "c5d6e7f8a918",
    "0e1f2a3b4c19",
    "5f6a7b8c9d20",
    "a9b8c7d6e521",
    "e3f4a5b6c722",
];

async fn tables(admin: &sqlx::PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'
         AND tablename NOT LIKE 'fleetshift%' ORDER BY 1",
    )
    .fetch_all(admin)
    .await
    .expect("catalog")
}

#[tokio::test]
async fn a_flask_migrate_project_goes_up_and_down_on_postgres_as_rendered_sql() {
    let cache = tempfile::tempdir().expect("cache");
    let Database {
        cluster: _cluster,
        url,
        admin,
    } = support::database("flask_shop").await;
    let project = alembic::flask_shop();
    let dir = project.to_str().expect("UTF-8 path");

    // What would run, printed before anything does: Alembic's SQL without its bookkeeping.
    let dry = alembic::run(
        cache.path(),
        &url,
        &[
            "migrate",
            "up",
            "--dir",
            dir,
            "--dry-run",
            "--output",
            "json",
        ],
    );
    assert_exit(&dry, 0);
    let planned = json(&dry);
    let versions: Vec<&str> = planned["revisions"]
        .as_array()
        .expect("revisions")
        .iter()
        .filter_map(|revision| revision["version"].as_str())
        .collect();
    assert_eq!(versions, FLASK_SHOP_ORDER);
    let index = &planned["revisions"][4];
    assert_eq!(index["name"], "index_orders_by_customer_concurrently");
    assert_eq!(index["transactional"], false, "{index}");
    assert_eq!(
        index["statements"][0],
        "CREATE INDEX CONCURRENTLY ix_orders_customer_id ON orders (customer_id)"
    );
    let printed = dry.stdout.clone();
    let printed = String::from_utf8_lossy(&printed);
    assert!(!printed.contains("alembic_version"), "{printed}");
    assert!(tables(&admin).await.is_empty(), "a dry run changes nothing");

    let up = alembic::run(
        cache.path(),
        &url,
        &["migrate", "up", "--dir", dir, "--output", "json"],
    );
    assert_exit(&up, 0);
    assert!(
        String::from_utf8_lossy(&up.stderr).contains("cached=true"),
        "the dry run rendered the project; up found it in the cache"
    );
    assert_eq!(json(&up)["steps"].as_array().map(Vec::len), Some(22));
    assert_eq!(
        tables(&admin).await,
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
    let valid: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
         WHERE i.indisvalid AND c.relname IN ('ix_orders_customer_id', 'ix_order_line_product_id')
         ORDER BY 1",
    )
    .fetch_all(&admin)
    .await
    .expect("indexes");
    assert_eq!(valid, ["ix_order_line_product_id", "ix_orders_customer_id"]);
    let seeded: Vec<String> = sqlx::query_scalar("SELECT name FROM product ORDER BY sku")
        .fetch_all(&admin)
        .await
        .expect("catalogue");
    assert_eq!(seeded, ["Mug; large", "Green tea", "Builder's tea"]);
    let state: String = sqlx::query_scalar(
        "SELECT udt_name::text FROM information_schema.columns
         WHERE table_name = 'orders' AND column_name = 'state'",
    )
    .fetch_one(&admin)
    .await
    .expect("state column");
    assert_eq!(state, "order_state");

    let down = alembic::run(
        cache.path(),
        &url,
        &[
            "migrate", "down", "--dir", dir, "--to", "base", "--output", "json",
        ],
    );
    assert_exit(&down, 0);
    assert_eq!(json(&down)["steps"].as_array().map(Vec::len), Some(22));
    assert!(tables(&admin).await.is_empty());
    let types: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_type WHERE typname = 'order_state'")
            .fetch_one(&admin)
            .await
            .expect("types");
    assert_eq!(types, 0);
    // Without the virtualenv, `flask` cannot be found: the error says what to install.
    let status = alembic::fleetshift(cache.path())
        .env_remove("FLEETSHIFT_ALEMBIC_VENV")
        .env("PATH", "/usr/bin:/bin")
        .env("FLEETSHIFT_DATABASE_URL", &url)
        .args(["migrate", "status", "--dir", dir])
        .output()
        .expect("status");
    assert_exit(&status, 2);
    assert!(
        binary::printed(&status).contains("install Flask-Migrate"),
        "{}",
        binary::printed(&status)
    );
}
