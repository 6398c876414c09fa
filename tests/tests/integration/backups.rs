//! `fleetshift backups list|verify|restore` across real processes: etcd, a coordinator replica
//! and an agent whose shard is real PostgreSQL, backed up by real `pg_dump` and restored by real
//! `pg_restore` and `psql`.
//!
//! Two plans with `--require-backup` leave two backups. Listing shows both; verifying finds the
//! good one intact and a damaged one damaged. A restore is refused to an operator without the
//! approver role and without `--yes`; it gives up after its lock timeout when a session holds a
//! lock, changing nothing. A restore that waits for a lock holds the shard: a rollout started
//! meanwhile does not touch the shard until the restore has finished, and a second restore is
//! refused naming the holder. The restore puts the
//! backup's schema, rows and ledger back, drops what the backup lacks, leaves the fence at its
//! claim's token with an audit entry, and keeps the shard as it was in a safety backup.

use std::time::Duration;

use fleetshift_coordinator::store::Store;
use fleetshift_tests::fixtures;
use fleetshift_tests::wait::wait_until;
use serde_json::Value;
use sqlx::{Connection, PgPool};

use super::cli_fleet::{CliFleet, summary};
use super::support::assert_exit;

const ACCOUNTS: &str = "CREATE TABLE accounts (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO accounts VALUES (1, 'ada'), (2, 'grace');";

fn json(output: &std::process::Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "not JSON ({error}): {}",
            fleetshift_tests::binary::printed(output)
        )
    })
}

async fn count(admin: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(admin)
        .await
        .expect(sql)
}

async fn exists(admin: &PgPool, relation: &str) -> bool {
    sqlx::query_scalar::<_, bool>("SELECT to_regclass($1) IS NOT NULL")
        .bind(relation)
        .fetch_one(admin)
        .await
        .expect("to_regclass")
}

async fn has_email(admin: &PgPool) -> bool {
    count(
        admin,
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'accounts' AND column_name = 'email'",
    )
    .await
        == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_are_listed_verified_and_restored_under_a_claim_that_keeps_rollouts_away() {
    let fleet = CliFleet::start("restored", ACCOUNTS, |database| {
        let binaries = database.cluster.binaries();
        format!(
            "[backups]\ndirectory = \"backups\"\npg_dump = \"{}\"\npg_restore = \"{}\"\npsql = \"{}\"\n",
            binaries.join("pg_dump").display(),
            binaries.join("pg_restore").display(),
            binaries.join("psql").display()
        )
    })
    .await;
    let (admin, cli, shard) = (&fleet.database.admin, &fleet.cli, fleet.shard.as_str());
    let migrations = fixtures::migrations(&[
        (
            "1_orders.up.sql",
            "CREATE TABLE orders (id int PRIMARY KEY);",
        ),
        ("1_orders.down.sql", "DROP TABLE orders;"),
        (
            "2_email.up.sql",
            "ALTER TABLE accounts ADD COLUMN email text;",
        ),
        (
            "2_email.down.sql",
            "ALTER TABLE accounts DROP COLUMN email;",
        ),
        (
            "3_audit_log.up.sql",
            "CREATE TABLE audit_log (at timestamptz);",
        ),
        ("3_audit_log.down.sql", "DROP TABLE audit_log;"),
    ]);
    let directory = migrations.path().to_str().expect("path");

    // Two plans, each backed up first: the older backup before revision 1 (no ledger yet),
    // the newer at revision 1 with a third account.
    let (_, applied) = cli
        .planned_and_applied(&[directory, "--target", "1", "--require-backup"])
        .await;
    assert_exit(&applied, 0);
    sqlx::raw_sql("INSERT INTO accounts VALUES (3, 'barbara')")
        .execute(admin)
        .await
        .expect("third account");
    let (_, applied) = cli
        .planned_and_applied(&[directory, "--target", "2", "--require-backup"])
        .await;
    assert_exit(&applied, 0);
    assert!(has_email(admin).await);
    // After the newer backup: a fourth account and a table no revision made.
    sqlx::raw_sql("INSERT INTO accounts VALUES (4, 'edsger'); CREATE TABLE scratch (x int);")
        .execute(admin)
        .await
        .expect("later changes");

    let listed = cli
        .alice(&["backups", "list", "--shard", shard, "--output", "json"])
        .await;
    assert_exit(&listed, 0);
    let listed = json(&listed);
    assert_eq!(listed["agent"], "a");
    let backups = listed["backups"].as_array().expect("backups");
    assert_eq!(backups.len(), 2, "{listed}");
    let newer = backups[0]["backup_id"].as_str().expect("id").to_owned();
    let older = backups[1]["backup_id"].as_str().expect("id").to_owned();
    assert!(newer > older, "newest first: {listed}");

    // Verify: the newer one is intact; the older one, damaged on disk, is reported damaged.
    let verified = cli
        .alice(&[
            "backups", "verify", "--shard", shard, "--backup", &newer, "--output", "json",
        ])
        .await;
    assert_exit(&verified, 0);
    assert!(json(&verified)["entries"].as_u64() > Some(0));
    let older_file = backups[1]["location"].as_str().expect("location");
    let mut bytes = std::fs::read(older_file).expect("older dump");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(older_file, bytes).expect("damage");
    let damaged = cli
        .alice(&["backups", "verify", "--shard", shard, "--backup", &older])
        .await;
    assert_exit(&damaged, 1);
    let said = String::from_utf8_lossy(&damaged.stderr);
    assert!(
        said.contains("is damaged") && said.contains("SHA-256"),
        "{said}"
    );
    let unknown = cli
        .alice(&["backups", "verify", "--shard", shard, "--backup", "nope"])
        .await;
    assert_exit(&unknown, 2);

    // Restores: approvers only, and only with --yes.
    let restore = ["backups", "restore", "--shard", shard, "--backup", &newer];
    assert_exit(&cli.alice(&[&restore[..], &["--yes"]].concat()).await, 9);
    assert_exit(&cli.bob(&restore).await, 2);

    // A session holding a lock on accounts: a restore with a short lock timeout gives up and
    // changes nothing.
    let mut blocker = sqlx::PgConnection::connect(&fleet.database.url)
        .await
        .expect("blocker");
    sqlx::raw_sql("BEGIN; LOCK TABLE accounts IN ACCESS SHARE MODE;")
        .execute(&mut blocker)
        .await
        .expect("lock");
    let timed_out = cli
        .bob(&[&restore[..], &["--yes", "--lock-timeout", "1s"]].concat())
        .await;
    assert_exit(&timed_out, 5);
    assert!(has_email(admin).await && exists(admin, "public.scratch").await);
    assert_eq!(count(admin, "SELECT count(*) FROM accounts").await, 4);

    // The same restore, patient this time, waits for the lock while holding the shard.
    let restoring = {
        let arguments: Vec<String> = [
            &restore[..],
            &["--yes", "--lock-timeout", "2m", "--output", "json"],
        ]
        .concat()
        .into_iter()
        .map(str::to_owned)
        .collect();
        let (address, pki) = cli.endpoint();
        tokio::spawn(async move {
            let arguments: Vec<&str> = arguments.iter().map(String::as_str).collect();
            fleetshift_tests::fleet::fleetshift_as(&address, &pki, "operator-bob", &arguments).await
        })
    };
    let claimed = wait_until(Duration::from_secs(60), || async {
        fleet
            .store
            .claim_of(shard)
            .await
            .ok()
            .flatten()
            .is_some_and(|claim| claim.holder.starts_with("restore requested by"))
    })
    .await;
    assert!(
        claimed,
        "the restore never claimed the shard\n{}",
        fleet.diagnose()
    );
    let restore_token = fleet
        .store
        .claim_of(shard)
        .await
        .expect("claim")
        .expect("held")
        .token
        .get();
    // A rollout to revision 3 started now does not touch the shard while the restore holds it.
    let planned = cli
        .alice(&["plan", directory, "--target", "3", "--output", "json"])
        .await;
    assert_exit(&planned, 0);
    let plan_id = summary(&planned)["plan"].as_str().expect("id").to_owned();
    assert_exit(&cli.bob(&["approve", &plan_id]).await, 0);
    assert_exit(&cli.alice(&["apply", &plan_id]).await, 0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = cli.alice(&["status", &plan_id, "--output", "json"]).await;
    assert_exit(&status, 0);
    let status = summary(&status);
    assert_eq!(status["shards"][0]["state"], "pending", "{status}");
    assert!(
        !exists(admin, "public.audit_log").await,
        "the rollout waited"
    );
    assert!(!restoring.is_finished(), "the restore waits for the lock");
    // A second restore meanwhile is told who holds the shard, and changes nothing.
    let second = cli.bob(&[&restore[..], &["--yes"]].concat()).await;
    assert_exit(&second, 10);
    assert!(
        fleetshift_tests::binary::printed(&second)
            .contains("is held by restore requested by spiffe://fleet.example/operator/bob"),
        "{}",
        fleetshift_tests::binary::printed(&second)
    );

    // The lock goes: the restore runs, then the rollout.
    sqlx::raw_sql("COMMIT")
        .execute(&mut blocker)
        .await
        .expect("commit");
    let restored = restoring.await.expect("restore finished");
    assert_exit(&restored, 0);
    let restored = json(&restored);
    assert_eq!(restored["current_version"], "1", "{restored}");
    assert_eq!(restored["restored"]["backup_id"], newer.as_str());
    let dropped: Vec<&str> = restored["dropped"]
        .as_array()
        .expect("dropped")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(dropped, ["table public.scratch"]);
    let safety = restored["safety_backup"]["backup_id"]
        .as_str()
        .expect("safety backup")
        .to_owned();
    assert!(safety.ends_with("prerestore"), "{safety}");
    // The restore's own record: the rows as the backup had them, in the shard's audit trail.
    assert_eq!(count(admin, "SELECT count(*) FROM accounts").await, 3);
    assert!(!exists(admin, "public.scratch").await);
    let audited = count(
        admin,
        &format!(
            "SELECT count(*) FROM fleetshift.audit WHERE action = 'restore' AND fence_token = {restore_token} AND reason LIKE '%{newer}%{safety}%'"
        ),
    )
    .await;
    assert_eq!(audited, 1);

    // Then the rollout takes the restored shard from 1 to 3, under a newer token.
    let watched = cli.alice(&["watch", &plan_id, "--output", "json"]).await;
    assert_exit(&watched, 0);
    assert_eq!(summary(&watched)["state"], "succeeded");
    assert!(has_email(admin).await && exists(admin, "public.audit_log").await);
    assert!(
        count(admin, "SELECT token FROM fleetshift.fence").await > restore_token,
        "the rollout ran under a newer claim than the restore's"
    );

    // The safety backup is listed, and restoring it would bring the fourth account back.
    let listed = json(
        &cli.alice(&["backups", "list", "--shard", shard, "--output", "json"])
            .await,
    );
    assert!(
        listed["backups"]
            .as_array()
            .expect("backups")
            .iter()
            .any(|backup| backup["backup_id"] == safety.as_str()),
        "{listed}"
    );
}
