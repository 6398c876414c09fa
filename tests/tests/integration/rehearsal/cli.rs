//! `fleetshift migrate rehearse` on a real server: a sampled copy, the hazard reported with
//! exit 11, the database itself untouched and no scratch database left behind.

use fleetshift_tests::{binary, fixtures};
use sqlx::PgPool;

use crate::integration::support::{self, assert_exit};

const EVENTS: &str = "
CREATE TABLE events (id bigint PRIMARY KEY, kind text, payload text);
INSERT INTO events SELECT g, 'k' || (g % 7), repeat('x', 60) FROM generate_series(1, 100000) g;
CREATE TABLE settings (name text PRIMARY KEY, value text);
INSERT INTO settings VALUES ('mode', 'live'), ('region', 'eu');
";

/// Everything a rehearsal must not change: relations and their storage, constraints, the
/// ledger's rows.
async fn snapshot(admin: &PgPool) -> String {
    sqlx::query_scalar(
        "SELECT concat_ws(' | ',
            (SELECT string_agg(relname || ':' || relfilenode, ',' ORDER BY relname)
             FROM pg_class WHERE relnamespace = 'public'::regnamespace),
            (SELECT string_agg(conname || ':' || convalidated, ',' ORDER BY conname)
             FROM pg_constraint WHERE connamespace = 'public'::regnamespace),
            (SELECT string_agg(version || ':' || status, ',' ORDER BY version)
             FROM fleetshift.history),
            (SELECT count(*) FROM events)::text)",
    )
    .fetch_one(admin)
    .await
    .expect("snapshot")
}

/// The scratch databases on `admin`'s server.
pub(super) async fn scratch_databases(admin: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT datname::text FROM pg_database WHERE datname LIKE 'fleetshift\\_rehearsal\\_%'",
    )
    .fetch_all(admin)
    .await
    .expect("databases")
}

fn table<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["rehearsal"]["sample"]["tables"]
        .as_array()
        .and_then(|tables| tables.iter().find(|table| table["table"] == name))
        .unwrap_or_else(|| panic!("{name} in the sample: {report:#}"))
}

#[tokio::test]
async fn a_sampled_rehearsal_reports_the_hazard_and_leaves_the_database_as_it_was() {
    let database = support::database("shop").await;
    let directory = fixtures::migrations(&[
        ("1_events.sql", EVENTS),
        (
            "2_payload_present.sql",
            "ALTER TABLE events ADD CONSTRAINT payload_present CHECK (payload IS NOT NULL);",
        ),
    ]);
    let dir = support::dir(&directory);
    let pg_dump = database.cluster.binaries().join("pg_dump");
    let pg_restore = database.cluster.binaries().join("pg_restore");
    let tools = [
        "--pg-dump",
        pg_dump.to_str().expect("utf-8"),
        "--pg-restore",
        pg_restore.to_str().expect("utf-8"),
    ];
    let applied = binary::run(&database.url, &["migrate", "up", "--dir", dir, "--to", "1"]);
    assert_exit(&applied, 0);
    let before = snapshot(&database.admin).await;

    let mut arguments = vec!["migrate", "rehearse", "--dir", dir, "--sample", "10%"];
    arguments.extend(tools);
    arguments.extend(["--output", "json"]);
    let rehearsed = binary::run(&database.url, &arguments);
    assert_exit(&rehearsed, 11);
    let report = support::json(&rehearsed);
    assert_eq!(report["passed"], false);
    let events = table(&report, "public.events");
    let sampled = events["rows_sampled"].as_u64().expect("rows");
    assert!(
        (2_000..=30_000).contains(&sampled),
        "about a tenth of 100000 rows: {events}"
    );
    assert_eq!(events["whole"], false);
    let disk = report["rehearsal"]["sample"]["disk"]
        .as_str()
        .unwrap_or_default();
    assert!(
        disk.contains("MiB free in"),
        "the superuser's server is on this host: {disk}"
    );
    let settings = table(&report, "public.settings");
    assert_eq!(settings["whole"], true);
    assert_eq!(settings["rows_sampled"], 2);
    let e1 = report["rehearsal"]["findings"]
        .as_array()
        .and_then(|findings| findings.iter().find(|finding| finding["hint"] == "E1"))
        .unwrap_or_else(|| panic!("E1 reported: {report:#}"));
    assert_eq!(e1["revision"], "2");
    assert_eq!(e1["lock_mode"], "AccessExclusiveLock");
    assert!(
        e1["place"]
            .as_str()
            .is_some_and(|place| place.ends_with("2_payload_present.sql:1")),
        "{e1}"
    );

    let estimate = report["rehearsal"]["estimates"]
        .as_array()
        .and_then(|estimates| {
            estimates
                .iter()
                .find(|estimate| estimate["place"] == e1["place"])
        })
        .unwrap_or_else(|| panic!("the validation scan is estimated: {report:#}"));
    assert_eq!(estimate["table"], "public.events");
    let factor = estimate["factor"].as_f64().expect("factor");
    assert!(
        (3.0..=50.0).contains(&factor),
        "about 10 shard rows per sampled row: {estimate}"
    );
    assert!(
        e1["estimated_hold_us"].as_u64() > e1["held_us"].as_u64(),
        "the lock is held longer on the whole table: {e1}"
    );

    let mut capped = vec![
        "migrate",
        "rehearse",
        "--dir",
        dir,
        "--sample",
        "100",
        "--max-rows-per-table",
        "500",
    ];
    capped.extend(tools);
    let human = binary::run(&database.url, &capped);
    assert_exit(&human, 11);
    let printed = binary::printed(&human);
    assert!(printed.contains("public.events"), "{printed}");
    assert!(
        printed.contains("       500 of ~"),
        "capped at 500 rows: {printed}"
    );
    assert!(printed.contains("E1 "), "{printed}");

    assert_eq!(
        snapshot(&database.admin).await,
        before,
        "the database is untouched"
    );
    assert_eq!(
        scratch_databases(&database.admin).await,
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn a_rehearsal_refuses_what_it_cannot_do_before_touching_anything() {
    let database = support::database("refusals").await;
    let directory = fixtures::migrations(&[("1_t.sql", "CREATE TABLE t (id integer);")]);
    let dir = support::dir(&directory);
    let zero = binary::run(
        &database.url,
        &["migrate", "rehearse", "--dir", dir, "--sample", "0%"],
    );
    assert_exit(&zero, 2);
    assert!(binary::printed(&zero).contains("outside (0%, 100%]"));
    let sqlite = binary::run(
        "sqlite:/tmp/fleetshift-rehearsal-refused.db",
        &["migrate", "rehearse", "--dir", dir],
    );
    assert_exit(&sqlite, 2);
    assert!(
        binary::printed(&sqlite).contains("rehearsals need PostgreSQL"),
        "{}",
        binary::printed(&sqlite)
    );
    assert_eq!(
        scratch_databases(&database.admin).await,
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn a_killed_rehearsal_leaves_the_database_untouched_and_its_scratch_copy_goes_next_time() {
    let database = support::database("killed").await;
    let base = ("1_events.sql", EVENTS);
    let directory = fixtures::migrations(&[
        base,
        (
            "2_slow.sql",
            "ALTER TABLE events ADD COLUMN seen boolean;\nSELECT pg_sleep(60);",
        ),
    ]);
    let quick = fixtures::migrations(&[base]);
    let applied = binary::run(
        &database.url,
        &[
            "migrate",
            "up",
            "--dir",
            support::dir(&directory),
            "--to",
            "1",
        ],
    );
    assert_exit(&applied, 0);
    let before = snapshot(&database.admin).await;
    let pg_dump = database.cluster.binaries().join("pg_dump");
    let pg_restore = database.cluster.binaries().join("pg_restore");
    let mut child = std::process::Command::new(binary::fleetshift())
        .args(["migrate", "rehearse", "--dir", support::dir(&directory)])
        .arg("--pg-dump")
        .arg(&pg_dump)
        .arg("--pg-restore")
        .arg(&pg_restore)
        .env("FLEETSHIFT_DATABASE_URL", &database.url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("rehearse");
    let sleeping = fleetshift_tests::wait::wait_until(std::time::Duration::from_secs(60), || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT FROM pg_stat_activity
                            WHERE datname LIKE 'fleetshift\\_rehearsal\\_%' AND query LIKE '%pg_sleep%')",
        )
        .fetch_one(&database.admin)
        .await
        .unwrap_or(false)
    })
    .await;
    assert!(sleeping, "the rehearsal reached its slow statement");
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let left = scratch_databases(&database.admin).await;
    assert_eq!(
        left.len(),
        1,
        "a killed rehearsal cannot drop its copy: {left:?}"
    );

    let mut arguments = vec!["migrate", "rehearse", "--dir", support::dir(&quick)];
    let tools = [
        pg_dump.to_str().expect("utf-8"),
        pg_restore.to_str().expect("utf-8"),
    ];
    arguments.extend(["--pg-dump", tools[0], "--pg-restore", tools[1]]);
    let again = binary::run(&database.url, &arguments);
    assert_exit(&again, 0);
    assert_eq!(
        scratch_databases(&database.admin).await,
        Vec::<String>::new()
    );
    assert_eq!(
        snapshot(&database.admin).await,
        before,
        "the database is untouched"
    );
}

/// With `--staging-url` the scratch copy lives on another server: while the rehearsal runs it
/// is there and not beside the database, and it is gone from both at the end.
#[tokio::test]
async fn a_rehearsal_on_a_staging_server_leaves_the_databases_server_alone() {
    let database = support::database("staged").await;
    let staging = fleetshift_tests::postgres::PostgresCluster::start().expect("staging server");
    let staging_admin = staging.admin_pool("postgres").await.expect("staging pool");
    let directory = fixtures::migrations(&[
        ("1_events.sql", EVENTS),
        (
            "2_payload_present.sql",
            "ALTER TABLE events ADD CONSTRAINT payload_present CHECK (payload IS NOT NULL);\n\
             SELECT pg_sleep(2);",
        ),
    ]);
    let dir = support::dir(&directory);
    assert_exit(
        &binary::run(&database.url, &["migrate", "up", "--dir", dir, "--to", "1"]),
        0,
    );
    let before = snapshot(&database.admin).await;
    let pg_dump = database.cluster.binaries().join("pg_dump");
    let pg_restore = database.cluster.binaries().join("pg_restore");
    let child = tokio::process::Command::new(binary::fleetshift())
        .args(["migrate", "rehearse", "--dir", dir, "--output", "json"])
        .arg("--pg-dump")
        .arg(&pg_dump)
        .arg("--pg-restore")
        .arg(&pg_restore)
        .env("FLEETSHIFT_DATABASE_URL", &database.url)
        .env("FLEETSHIFT_STAGING_URL", staging.admin_url("postgres"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("rehearse");
    let on_staging =
        fleetshift_tests::wait::wait_until(std::time::Duration::from_secs(60), || async {
            !scratch_databases(&staging_admin).await.is_empty()
        })
        .await;
    assert!(on_staging, "the scratch copy appears on the staging server");
    assert_eq!(
        scratch_databases(&database.admin).await,
        Vec::<String>::new(),
        "nothing is built beside the database"
    );
    let output = child.wait_with_output().await.expect("rehearsal ended");
    assert_exit(&output, 11);
    let report = support::json(&output);
    let e1 = report["rehearsal"]["findings"]
        .as_array()
        .and_then(|findings| findings.iter().find(|finding| finding["hint"] == "E1"));
    assert!(e1.is_some(), "{report:#}");
    assert!(table(&report, "public.events")["rows_sampled"].as_u64() > Some(0));
    assert_eq!(
        scratch_databases(&staging_admin).await,
        Vec::<String>::new()
    );
    assert_eq!(
        scratch_databases(&database.admin).await,
        Vec::<String>::new()
    );
    assert_eq!(
        snapshot(&database.admin).await,
        before,
        "the database is untouched"
    );
}

/// `--baselines`: the queries are timed on the sample before and after the revisions; a
/// revision that drops the index a query needs makes it slower there (exit 11, named), and one
/// that leaves it alone passes.
#[tokio::test]
async fn a_baseline_that_gets_slower_on_the_sample_fails_the_rehearsal() {
    let database = support::database("timed").await;
    let directory = fixtures::migrations(&[
        ("1_events.sql", EVENTS),
        ("2_note.sql", "ALTER TABLE events ADD COLUMN note text;"),
        (
            "3_no_key.sql",
            "ALTER TABLE events DROP CONSTRAINT events_pkey;",
        ),
    ]);
    let dir = support::dir(&directory);
    assert_exit(
        &binary::run(&database.url, &["migrate", "up", "--dir", dir, "--to", "1"]),
        0,
    );
    let queries = tempfile::NamedTempFile::new().expect("baselines file");
    std::fs::write(
        queries.path(),
        "-- name: by_id\nSELECT payload FROM events WHERE id = 4242;\n",
    )
    .expect("write");
    let pg_dump = database.cluster.binaries().join("pg_dump");
    let pg_restore = database.cluster.binaries().join("pg_restore");
    let rehearse = |to: &'static str| {
        let arguments = [
            "migrate",
            "rehearse",
            "--dir",
            dir,
            "--to",
            to,
            "--sample",
            "100",
            "--baselines",
            queries.path().to_str().expect("utf-8"),
            "--pg-dump",
            pg_dump.to_str().expect("utf-8"),
            "--pg-restore",
            pg_restore.to_str().expect("utf-8"),
            "--output",
            "json",
        ];
        binary::run(&database.url, &arguments)
    };

    let harmless = rehearse("2");
    assert_exit(&harmless, 0);
    let report = support::json(&harmless);
    assert_eq!(report["rehearsal"]["baselines"][0]["query"], "by_id");
    assert_eq!(report["rehearsal"]["baselines"][0]["degraded"], false);

    let keyless = rehearse("3");
    assert_exit(&keyless, 11);
    let report = support::json(&keyless);
    assert_eq!(
        report["rehearsal"]["baselines"][0]["degraded"], true,
        "{report:#}"
    );
    assert!(
        report["rehearsal"]["degradation"]
            .as_str()
            .is_some_and(|degradation| degradation.contains("baseline by_id median")),
        "{report:#}"
    );
    assert_eq!(
        scratch_databases(&database.admin).await,
        Vec::<String>::new()
    );
}
