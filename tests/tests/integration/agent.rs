//! The sidecar binary against the shards of a host: one PostgreSQL, one SQLite, one down.

use std::process::Command;

use fleetshift_tests::postgres::PostgresCluster;
use fleetshift_tests::{binary, fixtures};

use super::support;

#[tokio::test]
async fn agent_check_reports_every_shard_and_flags_the_unreachable_one() {
    let cluster = PostgresCluster::start().expect("cluster");
    let url = cluster.create_database("orders").await.expect("database");
    let directory = fixtures::migrations(&[("1_orders.sql", "CREATE TABLE orders (id integer);")]);
    let dir = directory.path().to_str().expect("utf-8 path");
    let up = binary::run(&url, &["migrate", "up", "--dir", dir, "--fence-token", "3"]);
    assert!(up.status.success(), "{}", binary::printed(&up));

    let host = tempfile::tempdir().expect("host directory");
    std::fs::write(host.path().join("orders.url"), &url).expect("secret file");
    let sqlite = host.path().join("cache.db");
    let closed = format!(
        "postgres://app:hunter2@127.0.0.1:{}/gone",
        cluster.port.wrapping_add(1)
    );
    let config = format!(
        "agent_id = \"host-1\"\n\
         [[shards]]\nid = \"orders\"\nlabels = {{ env = \"test\" }}\ndatabase_url_file = \"orders.url\"\n\
         [[shards]]\nid = \"cache\"\ndatabase_url = \"sqlite:{}\"\n\
         [[shards]]\nid = \"gone\"\ndatabase_url = \"{closed}\"\n",
        sqlite.display()
    );
    let config_path = host.path().join("agent.toml");
    std::fs::write(&config_path, config).expect("agent config");

    let output = Command::new(binary::agent())
        .args([
            "--config",
            config_path.to_str().expect("path"),
            "check",
            "--output",
            "json",
        ])
        .output()
        .expect("run the agent");
    support::assert_exit(&output, 6);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let shards = report["shards"].as_array().expect("shards");
    assert_eq!(shards[0]["id"], "orders");
    assert_eq!(shards[0]["applied"], 1);
    assert_eq!(shards[0]["fence_token"], 3);
    let tables = shards[0]["tables"].as_array().expect("catalog facts");
    assert_eq!(
        tables
            .iter()
            .map(|table| table["table"].as_str().unwrap_or_default())
            .collect::<Vec<_>>(),
        ["orders"],
        "the shard's own tables, not fleetshift's ledger"
    );
    assert_eq!(shards[1]["reachable"], true);
    assert_eq!(shards[2]["reachable"], false);
    assert!(
        !binary::printed(&output).contains("hunter2"),
        "secrets stay masked"
    );
}
