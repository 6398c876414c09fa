//! Assignments end to end: an in-process coordinator on real etcd dispatches work through its
//! mailbox to a real agent process, which runs the fenced executor on a real PostgreSQL shard
//! under the claim's fencing token.

use std::time::Duration;

use fleetshift_common::proto::v1::progress_event::Event;
use fleetshift_common::proto::v1::{
    self, Assignment, Direction, ErrorKind, HostDuties, RevisionOutcome,
};
use fleetshift_common::source::MigrationSet;
use fleetshift_coordinator::authz::Roles;
use fleetshift_coordinator::mailbox::DispatchError;
use fleetshift_coordinator::store::Store;
use fleetshift_tests::fleet::{InProcessCoordinator, Process, assign, write_agent_config};
use fleetshift_tests::wait::wait_until;
use fleetshift_tests::{binary, fixtures};

use super::support::{self, Database};

/// Assignment `run` of `shard` under `token`, its id as the leader makes them
/// (`<run>~<shard>~<token>`), which the shard's results must name.
fn assignment(
    run: &str,
    shard: &str,
    token: i64,
    direction: Direction,
    target: &str,
    set: v1::MigrationSet,
) -> Assignment {
    Assignment {
        assignment_id: format!("{run}~{shard}~{token}"),
        plan_id: "plan-1".to_owned(),
        shard_id: shard.to_owned(),
        fence_token: token,
        direction: direction.into(),
        target_version: target.to_owned(),
        migration_set: Some(set),
        limits: None,
        duties: None,
        ..Assignment::default()
    }
}

/// Starts agent `db-host-1` serving shard `orders` (its URL in `orders.url`), with
/// `settings` (TOML sections) before its shard, and waits until it is connected; the process
/// and its log.
async fn start_agent(
    fleet: &InProcessCoordinator,
    settings: &str,
) -> (Process, std::path::PathBuf) {
    let home = fleet.home.path();
    write_agent_config(
        home,
        fleet.address.port(),
        "db-host-1",
        &format!("{settings}[[shards]]\nid = \"orders\"\ndatabase_url_file = \"orders.url\"\n"),
    );
    let agent_config = home.join("agent.toml");
    let log = home.join("agent.log");
    let agent = Process::spawn(
        &binary::agent(),
        &["--config", agent_config.to_str().expect("path"), "run"],
        &log,
    );
    // Announced in the store, and its session registered here to take assignments.
    let connected = wait_until(Duration::from_secs(20), || async {
        fleet.store.agents().await.expect("agents").len() == 1
            && fleet.mailbox.session_of("db-host-1").is_some()
    })
    .await;
    assert!(
        connected,
        "agent never connected:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    (agent, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_runs_its_assignment_under_the_claims_fencing_token() {
    let fleet = InProcessCoordinator::start(Roles::default(), &["db-host-1"], &[]).await;
    let (store, mailbox, home) = (&fleet.store, &fleet.mailbox, &fleet.home);
    let Database {
        cluster,
        url,
        admin,
    } = support::database("orders").await;

    std::fs::write(home.path().join("orders.url"), &url).expect("secret");
    let backups = format!(
        "[backups]\ndirectory = \"backups\"\npg_dump = \"{}\"\npg_restore = \"{}\"\n",
        cluster.binaries().join("pg_dump").display(),
        cluster.binaries().join("pg_restore").display()
    );
    let (_agent, log) = start_agent(&fleet, &backups).await;

    let migrations = fixtures::migrations(&[
        ("1_orders.up.sql", "CREATE TABLE orders (id integer);"),
        ("1_orders.down.sql", "DROP TABLE orders;"),
        ("2_items.up.sql", "CREATE TABLE items (id integer);"),
        ("2_items.down.sql", "DROP TABLE items;"),
    ]);
    let set = fixtures::shipped(migrations.path());
    let lease = store
        .grant_lease(Duration::from_secs(30))
        .await
        .expect("lease");
    let claim = store
        .claim("orders", "db-host-1", lease)
        .await
        .expect("claim");
    let wait = Duration::from_secs(30);

    // Up, under the claim's token, after a verified backup, with its progress streamed live.
    let result = assign(
        store.as_ref(),
        mailbox,
        "db-host-1",
        Assignment {
            duties: Some(HostDuties {
                require_backup: true,
                preflight: None,
                ..HostDuties::default()
            }),
            ..assignment(
                "a-1",
                "orders",
                claim.token.get(),
                Direction::Up,
                "",
                set.clone(),
            )
        },
        wait,
    )
    .await
    .expect("dispatched");
    assert!(
        result.succeeded,
        "{result:?}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(result.current_version, "2");
    // The backup's record reached the coordinator; the password reached neither the agent's
    // log nor anything else it printed.
    let backup = result.backup.as_ref().expect("a backup record");
    assert_eq!(backup.sha256.len(), 64, "{backup:?}");
    assert!(std::path::Path::new(&backup.location).starts_with(home.path().join("backups")));
    let password = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .map(|(_, password)| password)
        .filter(|password| password.len() >= 8)
        .expect("a password in the URL");
    let agent_log = std::fs::read_to_string(&log).expect("agent log");
    assert!(
        agent_log.contains("verified backup recorded"),
        "{agent_log}"
    );
    assert!(!agent_log.contains(password), "{agent_log}");
    let mut seen = Vec::new();
    // The run's progress reached the event journal before its result was recorded.
    for event in fleet.journaled().await {
        assert_eq!(
            (event.shard_id.as_str(), event.assignment_id.as_str()),
            (
                "orders",
                format!("a-1~orders~{}", claim.token.get()).as_str()
            )
        );
        seen.push(match event.event.expect("event") {
            Event::RevisionStarted(started) => format!("started {}", started.version),
            Event::RevisionFinished(finished) => {
                format!(
                    "finished {} {:?}",
                    finished.version,
                    RevisionOutcome::try_from(finished.outcome).expect("outcome")
                )
            }
            Event::PreflightCheck(check) => format!("preflight {} {}", check.name, check.passed),
            Event::BackupFinished(_) => "backup".to_owned(),
            Event::StatementRunning(statement) => format!(
                "running {}{}",
                statement.location.rsplit('/').next().unwrap_or_default(),
                if statement.in_transaction {
                    " (uncommitted)"
                } else {
                    ""
                }
            ),
            Event::StatementFinished(statement) => format!(
                "statement {}",
                statement.location.rsplit('/').next().unwrap_or_default()
            ),
            other => format!("{other:?}"),
        });
    }
    assert_eq!(
        seen,
        [
            "preflight server true",
            "preflight connections true",
            "preflight replication true",
            "preflight disk true",
            "preflight blockers true",
            "backup",
            "started 1",
            "running 1_orders.up.sql:1 (uncommitted)",
            "statement 1_orders.up.sql:1",
            "finished 1 Applied",
            "started 2",
            "running 2_items.up.sql:1 (uncommitted)",
            "statement 2_items.up.sql:1",
            "finished 2 Applied"
        ],
        "live progress, in order"
    );
    let rows: Vec<(String, i64, String, Option<String>)> = sqlx::query_as(
        "SELECT version, fence_token, agent_id, plan_id FROM fleetshift.history ORDER BY version",
    )
    .fetch_all(&admin)
    .await
    .expect("history");
    assert_eq!(rows.len(), 2);
    let loaded = MigrationSet::load(migrations.path(), None).expect("set");
    support::assert_sound_ledger(&support::postgres(&url).await, &loaded, None).await;
    assert!(
        rows.iter()
            .all(|(_, token, agent, plan)| *token == claim.token.get()
                && agent == "db-host-1"
                && plan.as_deref() == Some("plan-1")),
        "{rows:?}"
    );

    // A stale assignment (an older token) is fenced out by the shard itself.
    let stale = assign(
        store.as_ref(),
        mailbox,
        "db-host-1",
        assignment(
            "a-2",
            "orders",
            claim.token.get() - 1,
            Direction::Down,
            "1",
            set.clone(),
        ),
        wait,
    )
    .await
    .expect("dispatched");
    assert!(!stale.succeeded);
    assert_eq!(
        stale.error.as_ref().map(|error| error.kind),
        Some(ErrorKind::FencedOut.into()),
        "{stale:?}"
    );
    let items: bool = sqlx::query_scalar("SELECT to_regclass('items') IS NOT NULL")
        .fetch_one(&admin)
        .await
        .expect("catalog");
    assert!(items, "the stale revert changed nothing");

    // A set whose files do not hash to the pinned digest is refused before anything runs.
    let mut tampered = set.clone();
    tampered
        .files
        .iter_mut()
        .filter(|file| file.path == "2_items.down.sql")
        .for_each(|file| file.content = b"DROP TABLE orders;".to_vec());
    let refused = assign(
        store.as_ref(),
        mailbox,
        "db-host-1",
        assignment(
            "a-3",
            "orders",
            claim.token.get(),
            Direction::Down,
            "1",
            tampered,
        ),
        wait,
    )
    .await
    .expect("dispatched");
    assert_eq!(
        refused.error.as_ref().map(|error| error.kind),
        Some(ErrorKind::BadInput.into()),
        "{refused:?}"
    );
    assert!(
        refused
            .error
            .as_ref()
            .is_some_and(|error| error.message.contains("hashes to")),
        "{refused:?}"
    );

    // The coordinator sends an agent only its own shards.
    let foreign = assign(
        store.as_ref(),
        mailbox,
        "db-host-1",
        assignment(
            "a-4",
            "someone-elses",
            claim.token.get(),
            Direction::Up,
            "",
            set,
        ),
        wait,
    )
    .await;
    assert!(
        matches!(foreign, Err(DispatchError::NotTheAgentsShard { .. })),
        "{foreign:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_assignment_for_a_shard_interrupts_the_one_running_there() {
    let fleet = InProcessCoordinator::start(Roles::default(), &["db-host-1"], &[]).await;
    let (store, mailbox, home) = (&fleet.store, &fleet.mailbox, &fleet.home);
    let Database {
        cluster: _cluster,
        url,
        admin,
    } = support::database("orders").await;
    std::fs::write(home.path().join("orders.url"), &url).expect("secret");
    let (_agent, log) = start_agent(&fleet, "").await;
    let agent_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let migrations = fixtures::migrations(&[(
        "1_slow.sql",
        "CREATE TABLE slow (id integer);\nSELECT pg_sleep(3);",
    )]);
    let set = fixtures::shipped(migrations.path());

    // The older claim's run is inside its revision when the newer one's assignment arrives.
    let older = assignment("older", "orders", 5, Direction::Up, "", set.clone());
    mailbox
        .send(
            "db-host-1",
            fleetshift_common::proto::v1::coordinator_message::Body::Assignment(older),
        )
        .await
        .expect("delivered");
    let running = wait_until(Duration::from_secs(30), || async {
        fleetshift_tests::postgres::fleetshift_running(&admin, "pg_sleep")
            .await
            .is_some()
    })
    .await;
    assert!(running, "the older run never started:\n{}", agent_log());
    let newer = assign(
        store.as_ref(),
        mailbox,
        "db-host-1",
        assignment("newer", "orders", 6, Direction::Up, "", set),
        Duration::from_secs(60),
    )
    .await
    .expect("delivered");
    assert!(newer.succeeded, "{:?}\n{}", newer.error, agent_log());

    let older = store
        .read(&fleetshift_coordinator::store::keys::result(
            "older~orders~5",
        ))
        .await
        .expect("read")
        .map(|entry| {
            <v1::AssignmentResult as prost::Message>::decode(entry.value.as_slice())
                .expect("a result")
        })
        .expect("the older run reported");
    let error = older.error.expect("why it ended");
    assert_eq!(error.kind, i32::from(ErrorKind::Interrupted), "{error:?}");
    assert!(
        error.message.contains(
            "superseded by assignment newer~orders~6 under a newer claim (fencing token 6)"
        ),
        "{}",
        error.message
    );
    let shard = support::postgres(&url).await;
    let ledger = fleetshift_common::engine::ShardEngine::read_ledger(&shard)
        .await
        .expect("ledger");
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    assert_eq!(
        ledger[0].fence_token.get(),
        6,
        "applied once, by the newer claim"
    );
}
