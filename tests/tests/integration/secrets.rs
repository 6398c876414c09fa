//! Database credentials never leak: not in output, errors or logs at any level.

use std::process::Command;

use fleetshift_tests::postgres::PostgresCluster;
use fleetshift_tests::{binary, fixtures};
use sqlx::AssertSqlSafe;

fn run(url: &str, log_format: &str, arguments: &[&str]) -> String {
    let output = Command::new(binary::fleetshift())
        .args(arguments)
        .args(["--log-format", log_format])
        .env("FLEETSHIFT_DATABASE_URL", url)
        .env("RUST_LOG", "trace")
        .output()
        .expect("run fleetshift");
    binary::printed(&output)
}

#[tokio::test]
async fn a_canary_password_never_appears_in_output_errors_or_logs() {
    let cluster = PostgresCluster::start().expect("cluster");
    cluster.create_database("secrets").await.expect("database");
    let admin = cluster.admin_pool("secrets").await.expect("admin");
    let canary = format!("canary-{}-{}", std::process::id(), cluster.port);
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE ROLE app LOGIN PASSWORD '{canary}'; ALTER DATABASE secrets OWNER TO app;"
    )))
    .execute(&admin)
    .await
    .expect("application role");
    let port = cluster.port;
    let url = format!("postgres://app:{canary}@127.0.0.1:{port}/secrets");
    let query_url = format!("postgres://127.0.0.1:{port}/secrets?user=app&password={canary}");
    let unreachable = format!(
        "postgres://app:{canary}@127.0.0.1:{}/secrets",
        port.wrapping_add(1)
    );
    let wrong_user = format!("postgres://postgres:{canary}@127.0.0.1:{port}/secrets");
    let directory = fixtures::migrations(&[
        ("1_ok.sql", "CREATE TABLE ok (id integer);"),
        ("1_ok.down.sql", "DROP TABLE ok;"),
        ("2_broken.sql", "SELECT * FROM missing_table;"),
    ]);
    let dir = directory.path().to_str().expect("utf-8 path");
    let url_file = directory.path().join("database-url");
    std::fs::write(&url_file, &url).expect("url file");

    let mut printed = Vec::new();
    for log_format in ["text", "json"] {
        for target in [&url, &query_url] {
            printed.push(run(
                target,
                log_format,
                &["migrate", "status", "--dir", dir],
            ));
            printed.push(run(target, log_format, &["migrate", "up", "--dir", dir]));
            printed.push(run(
                target,
                log_format,
                &["migrate", "up", "--dir", dir, "--output", "json"],
            ));
            printed.push(run(
                target,
                log_format,
                &["migrate", "verify", "--dir", dir],
            ));
            printed.push(run(
                target,
                log_format,
                &["migrate", "up", "--dir", dir, "--dry-run"],
            ));
        }
        printed.push(run(
            &unreachable,
            log_format,
            &["migrate", "status", "--dir", dir],
        ));
        printed.push(run(
            &wrong_user,
            log_format,
            &["migrate", "status", "--dir", dir],
        ));
        printed.push(run(
            "",
            log_format,
            &[
                "migrate",
                "status",
                "--dir",
                dir,
                "--database-url-file",
                url_file.to_str().expect("path"),
            ],
        ));
    }
    for (index, text) in printed.iter().enumerate() {
        assert!(
            !text.contains(&canary),
            "run {index} leaked the password:\n{text}"
        );
    }
    assert!(
        printed.iter().any(|text| text.contains("app:****@")),
        "the masked URL is shown instead"
    );
    assert!(
        printed.iter().any(|text| text.contains("password=****")),
        "query-parameter passwords are masked too"
    );
    assert!(
        printed.iter().any(|text| text.contains("missing_table")),
        "the failing run really ran"
    );
}
