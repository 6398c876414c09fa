//! Schema baselines on crates.io's real history (285 diesel revisions) and real PostgreSQL,
//! `pg_dump` included: a baseline taken from a shard at the last version verifies (the replayed
//! and the seeded scratch databases both have the recorded fingerprint); a new, empty shard
//! seeded from it is at the target with every revision in its ledger and the schema of the
//! shard it came from; one with an index removed fails verification; a shard with a ledger or
//! with tables is never seeded; and a shard not at the version gives no baseline.

use fleetshift_common::engine::ShardEngine;
use fleetshift_common::error::ExecError;
use fleetshift_common::executor::Request;
use fleetshift_common::ledger::RevisionStatus;
use fleetshift_common::schema_baseline::{self, SchemaBaseline, SchemaBaselineError};
use fleetshift_common::secrets::DatabaseUrl;
use fleetshift_common::source::MigrationSet;
use fleetshift_tests::fixtures;

use super::support::{self, Database};

#[tokio::test]
async fn a_crates_io_baseline_verifies_seeds_a_new_shard_and_a_tampered_one_fails() {
    let Database {
        cluster,
        url,
        admin: _admin,
    } = support::database("baseline_source").await;
    let set = MigrationSet::load(&fixtures::crates_io(), None).expect("crates.io");
    let source = support::postgres(&url).await;
    support::executor(&source, "source", None)
        .up(&set, &Request::default())
        .await
        .expect("up");
    let last = set.revisions.last().expect("revisions").version.to_string();
    let earlier = set.revisions[283].version.to_string();
    let pg_dump = cluster.binaries().join("pg_dump");
    let source_url = DatabaseUrl::new(url.clone());

    let refused = schema_baseline::take(&source_url, &set, &earlier, &pg_dump)
        .await
        .expect_err("not at that version");
    assert!(
        matches!(&refused, SchemaBaselineError::NotAtVersion(message) if message.contains(&format!("is at version {last}, not {earlier}"))),
        "{refused}"
    );
    let baseline = schema_baseline::take(&source_url, &set, &last, &pg_dump)
        .await
        .expect("baseline");
    let source_fingerprint = source
        .schema_snapshot()
        .await
        .expect("schema")
        .fingerprint();
    assert_eq!(baseline.fingerprint, source_fingerprint);
    assert!(
        !baseline.schema_sql.contains("fleetshift."),
        "no ledger in the baseline"
    );

    let server = DatabaseUrl::new(cluster.admin_url("postgres"));
    let verified = schema_baseline::verify(&server, &set, &baseline)
        .await
        .expect("verify");
    assert!(verified.holds(), "{verified:?}");

    // A new, empty shard: one transaction instead of 285 revisions.
    let fresh_url = cluster
        .create_database("baseline_new")
        .await
        .expect("database");
    let fresh = support::postgres(&fresh_url).await;
    let executor = support::executor(&fresh, "agent-new", Some(7));
    let report = executor
        .seed(&set, &baseline, "a new tenant")
        .await
        .expect("seed");
    assert_eq!(report.current_version.as_deref(), Some(last.as_str()));
    let status = executor.status(&set).await.expect("status");
    let applied = status
        .revisions
        .iter()
        .filter(|state| state.status == Some(RevisionStatus::Applied))
        .count();
    assert_eq!((applied, status.drifted.len()), (285, 0));
    let up = executor.up(&set, &Request::default()).await.expect("up");
    assert!(up.steps.is_empty(), "nothing left to run");
    assert_eq!(
        fresh.schema_snapshot().await.expect("schema").fingerprint(),
        source_fingerprint
    );
    let audited: (String, i64) = sqlx::query_as(
        "SELECT action, fence_token FROM fleetshift.audit WHERE action = 'baseline'",
    )
    .fetch_one(fresh.pool())
    .await
    .expect("audit");
    assert_eq!(audited, ("baseline".to_owned(), 7));

    // Never on a shard with something to lose.
    for (engine, why) in [
        (&source, "the ledger has 285"),
        (&fresh, "the ledger has 285"),
    ] {
        let refused = support::executor(engine, "again", None)
            .seed(&set, &baseline, "again")
            .await
            .expect_err("not empty");
        assert!(
            matches!(&refused, ExecError::NeedsOperator { reason, .. } if reason.contains(why)),
            "{refused}"
        );
    }
    let tables_url = cluster
        .create_database("baseline_tables")
        .await
        .expect("database");
    let tables = support::postgres(&tables_url).await;
    sqlx::query("CREATE TABLE kept (id bigint)")
        .execute(tables.pool())
        .await
        .expect("table");
    let refused = support::executor(&tables, "agent", None)
        .seed(&set, &baseline, "tables")
        .await
        .expect_err("tables");
    assert!(
        refused
            .to_string()
            .contains("initialises only an empty database"),
        "{refused}"
    );

    // One index removed: the seeded schema is not the set's.
    let index = baseline
        .schema_sql
        .lines()
        .find(|line| line.starts_with("CREATE INDEX") || line.starts_with("CREATE UNIQUE INDEX"))
        .expect("an index")
        .to_owned();
    let tampered = SchemaBaseline {
        schema_sql: baseline.schema_sql.replacen(&format!("{index}\n"), "", 1),
        ..baseline.clone()
    };
    let verified = schema_baseline::verify(&server, &set, &tampered)
        .await
        .expect("verify");
    assert!(!verified.holds(), "{index}");
    assert_eq!(verified.replayed, verified.recorded);
    assert_ne!(verified.seeded, verified.recorded);
}
