//! The agent's host duties on real PostgreSQL with real `pg_dump` and `pg_restore`: a verified
//! backup is recorded before the first DDL, its restore test finds every table's rows as they
//! were at the dump (while writes go on), and retention removes the oldest; a `pg_dump`
//! killed mid-way stops the shard before any DDL, and its credentials were never in its
//! arguments, its environment or the agent's log; a long transaction on a touched table makes
//! pre-flight wait, then fail naming its pid, with nothing run; so does a streaming replica
//! whose replay is paused, until the plan's lag threshold admits it. A SQLite shard is copied online
//! (`VACUUM INTO`) and checked before its first DDL.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleetshift_agent::assignment;
use fleetshift_agent::config::{AgentConfig, ShardConfig};
use fleetshift_agent::duties::backup::{self, BackupSettings};
use fleetshift_agent::metrics::AgentMetrics;
use fleetshift_agent::stop::StopSignal;
use fleetshift_common::proto::v1::progress_event::Event;
use fleetshift_common::proto::v1::{
    Assignment, AssignmentResult, Direction, ErrorKind, HostDuties, PreflightPolicy, ProgressEvent,
};
use fleetshift_common::secrets::DatabaseUrl;
use fleetshift_testkit::postgres::Shutdown;
use fleetshift_tests::fixtures;
use fleetshift_tests::postgres::PostgresCluster;
use fleetshift_tests::wait::wait_until;
use prometheus_client::registry::Registry;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::instrument::WithSubscriber;

const SCHEMA: &str = "
    CREATE TABLE accounts (id bigint PRIMARY KEY, owner text NOT NULL);
    INSERT INTO accounts SELECT g, 'owner ' || g FROM generate_series(1, 2000) g;
    CREATE TABLE notes (id bigint PRIMARY KEY, body text);";

const CANARY: &str = "canary-Zq8v-do-not-leak";

/// A database with `SCHEMA`, reachable as a superuser whose password is the canary.
pub(super) struct Shard {
    pub(super) cluster: PostgresCluster,
    pub(super) admin: sqlx::PgPool,
    url: String,
    home: tempfile::TempDir,
}

pub(super) async fn shard(name: &str) -> Shard {
    let cluster = PostgresCluster::start().expect("cluster");
    let admin_url = cluster.create_database(name).await.expect("database");
    let admin = cluster.admin_pool(name).await.expect("admin pool");
    sqlx::raw_sql(SCHEMA).execute(&admin).await.expect("schema");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE ROLE canary_owner LOGIN SUPERUSER PASSWORD '{CANARY}'"
    )))
    .execute(&admin)
    .await
    .expect("canary role");
    let (_, location) = admin_url.split_once('@').expect("user@host in the URL");
    Shard {
        cluster,
        admin,
        url: format!("postgres://canary_owner:{CANARY}@{location}"),
        home: tempfile::tempdir().expect("home"),
    }
}

impl Shard {
    pub(super) fn settings(&self, keep: usize) -> BackupSettings {
        BackupSettings {
            directory: self.home.path().join("backups"),
            keep,
            max_age: None,
            pg_dump: self.cluster.binaries().join("pg_dump"),
            pg_restore: self.cluster.binaries().join("pg_restore"),
            psql: self.cluster.binaries().join("psql"),
            lock_wait_timeout: Duration::from_secs(60),
        }
    }

    pub(super) fn config(&self, settings: BackupSettings) -> AgentConfig {
        AgentConfig {
            agent_id: "db-host-1".to_owned(),
            coordinator: None,
            shards: vec![ShardConfig {
                id: "accounts-1".to_owned(),
                labels: Default::default(),
                lifecycle: fleetshift_common::proto::v1::ShardLifecycle::Active,
                database_url: DatabaseUrl::new(self.url.clone()),
                throttle_replicas: Vec::new(),
                scope: fleetshift_common::engine::ShardScope::Database,
            }],
            tenant_databases: Vec::new(),
            backups: Some(settings),
            rehearsals: Default::default(),
            telemetry_listen: None,
            database_outage_wait: fleetshift_agent::outage::DEFAULT_OUTAGE_WAIT,
        }
    }

    /// A transaction holding `notes` in ACCESS EXCLUSIVE mode: `pg_dump` waits for it.
    async fn hold_notes(&self) -> sqlx::Transaction<'static, sqlx::Postgres> {
        let mut holder = self.admin.begin().await.expect("transaction");
        sqlx::raw_sql("LOCK TABLE notes IN ACCESS EXCLUSIVE MODE")
            .execute(&mut *holder)
            .await
            .expect("lock");
        holder
    }

    pub(super) async fn has_note_column(&self) -> bool {
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT FROM information_schema.columns
                            WHERE table_name = 'accounts' AND column_name = 'note')",
        )
        .fetch_one(&self.admin)
        .await
        .expect("catalog")
    }
}

pub(super) fn assignment(id: &str, set_dir: &Path, duties: HostDuties) -> Assignment {
    Assignment {
        assignment_id: id.to_owned(),
        plan_id: format!("plan-{id}"),
        shard_id: "accounts-1".to_owned(),
        fence_token: 1,
        direction: Direction::Up.into(),
        migration_set: Some(fixtures::shipped(set_dir)),
        duties: Some(duties),
        ..Assignment::default()
    }
}

fn migrations() -> tempfile::TempDir {
    fixtures::migrations(&[(
        "1_account_notes.sql",
        "ALTER TABLE accounts ADD COLUMN note text;",
    )])
}

/// Runs `assignment` in this process; its result and every progress event it sent.
pub(super) async fn execute(
    config: &AgentConfig,
    assignment: Assignment,
) -> (AssignmentResult, Vec<Event>) {
    let (progress, mut received) = mpsc::unbounded_channel::<ProgressEvent>();
    let metrics = AgentMetrics::register(&mut Registry::default());
    let sets = assignment::UnpackedSets::default();
    let host = assignment::Host {
        config,
        metrics: &metrics,
        throttles: assignment::FleetThrottles {
            list: tokio::sync::watch::channel(std::sync::Arc::from([])).1,
            attributes: None,
        },
        sets: &sets,
    };
    let result = assignment::execute(
        host,
        assignment,
        Duration::from_secs(30),
        StopSignal::child_of(&CancellationToken::new()),
        progress,
    )
    .await;
    let mut events = Vec::new();
    while let Ok(event) = received.try_recv() {
        events.extend(event.event);
    }
    (result, events)
}

pub(super) fn step(event: &Event) -> String {
    match event {
        Event::PreflightCheck(check) => format!("preflight {} {}", check.name, check.passed),
        Event::BackupFinished(_) => "backup".to_owned(),
        Event::RevisionStarted(started) => format!("revision {}", started.version),
        Event::RevisionFinished(finished) => format!("finished {}", finished.version),
        Event::StatementRunning(_) | Event::StatementFinished(_) | Event::LockRetry(_) => {
            "statement".to_owned()
        }
        Event::BaselineMeasured(measured) => format!("baselines {:?}", measured.phase()),
        Event::RollbackStarted(started) => format!("rollback to {}", started.target_version),
        Event::DatabaseOutage(outage) => format!("outage recovered {}", outage.recovered),
        Event::Throttled(throttled) => format!("throttled resumed {}", throttled.resumed),
        Event::BackfillProgress(progress) => format!("backfill batch {}", progress.batches),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_backup_is_recorded_before_the_first_ddl_and_retention_keeps_the_newest() {
    let shard = shard("backed_up").await;
    let config = shard.config(shard.settings(2));
    let set = migrations();
    let duties = HostDuties {
        require_backup: true,
        preflight: None,
        ..HostDuties::default()
    };
    // Rows keep arriving while the first backup is taken and restore-tested: the counts it
    // compares must be those of the dump's own snapshot.
    let writing = CancellationToken::new();
    let writer = tokio::spawn({
        let (admin, writing) = (shard.admin.clone(), writing.clone());
        async move {
            let mut id = 1_000_000_i64;
            while !writing.is_cancelled() {
                id += 1;
                sqlx::query("INSERT INTO notes (id, body) VALUES ($1, 'meanwhile')")
                    .bind(id)
                    .execute(&admin)
                    .await
                    .expect("insert");
            }
            id - 1_000_000
        }
    });
    let restore_tested = HostDuties {
        restore_test: true,
        ..duties.clone()
    };
    let (result, events) = execute(&config, assignment("a1", set.path(), restore_tested)).await;
    writing.cancel();
    let inserted = writer.await.expect("writer");
    assert!(inserted > 0);
    assert!(result.succeeded, "{:?}", result.error);
    assert!(shard.has_note_column().await);
    let steps: Vec<String> = events.iter().map(step).collect();
    assert_eq!(
        steps[..7],
        [
            "preflight server true",
            "preflight connections true",
            "preflight replication true",
            "preflight disk true",
            "preflight blockers true",
            "backup",
            "revision 1",
        ],
        "{steps:?}"
    );

    let record = result.backup.expect("a backup record in the result");
    let dump = std::fs::read(&record.location).expect("the dump is where the record says");
    assert_eq!(record.size_bytes, dump.len() as u64);
    assert_eq!(record.sha256, hex::encode(Sha256::digest(&dump)));
    assert!(record.verified_entries >= 2, "{record:?}");
    assert!(record.database_bytes > 0);
    assert_eq!(record.restored_tables, 2, "accounts and notes: {record:?}");
    let scratch: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_database WHERE datname LIKE 'fleetshift_restore_%'",
    )
    .fetch_one(&shard.admin)
    .await
    .expect("pg_database");
    assert_eq!(scratch, 0, "the scratch database is dropped");
    assert!(dump.starts_with(b"PGDMP"), "a custom-format dump");
    // The dump holds the rows as they were before the revision: no `note` column yet.
    let listed = std::process::Command::new(shard.cluster.binaries().join("pg_restore"))
        .args([
            "--schema-only",
            "--table=accounts",
            "--file=-",
            &record.location,
        ])
        .output()
        .expect("pg_restore");
    let restored = String::from_utf8_lossy(&listed.stdout);
    assert!(restored.contains("owner text NOT NULL"), "{restored}");
    assert!(!restored.contains("note text"), "{restored}");

    // Two more runs (each takes a backup first); only the newest two are kept.
    for id in ["a2", "a3"] {
        let (result, _) = execute(&config, assignment(id, set.path(), duties.clone())).await;
        assert!(result.succeeded, "{:?}", result.error);
    }
    let directory = backup::shard_directory(&shard.settings(2), "accounts-1");
    let kept = backup::list(&directory).expect("list");
    let plans: Vec<&str> = kept.iter().map(|kept| kept.plan_id.as_str()).collect();
    assert_eq!(plans, ["plan-a3", "plan-a2"]);
    assert!(
        !Path::new(&record.location).exists(),
        "the oldest dump is gone"
    );
    let files = std::fs::read_dir(&directory).expect("dir").count();
    assert_eq!(files, 4, "two dumps and their manifests");
}

/// The pid of the `pg_dump` whose arguments mention `database`, once it runs.
fn pg_dump_of(database: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.find_map(|entry| {
        let entry = entry.ok()?;
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let arguments = std::fs::read(entry.path().join("cmdline")).ok()?;
        let arguments = String::from_utf8_lossy(&arguments);
        (arguments.contains("pg_dump") && arguments.contains(&format!("dbname='{database}'")))
            .then_some(pid)
    })
}

#[derive(Clone, Default)]
struct CapturedLog(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLog {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut log) = self.0.lock() {
            log.extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backup_stops_the_shard_before_any_ddl_and_never_exposes_the_password() {
    let shard = shard("killed_dump").await;
    let config = Arc::new(shard.config(shard.settings(5)));
    let set = migrations();
    // pg_dump queues behind this lock, so it is still running when the test kills it.
    let holder = shard.hold_notes().await;
    let log = CapturedLog::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer({
            let log = log.clone();
            move || log.clone()
        })
        .finish();
    let run = tokio::spawn({
        let config = Arc::clone(&config);
        let assignment = assignment(
            "k1",
            set.path(),
            HostDuties {
                require_backup: true,
                preflight: None,
                ..HostDuties::default()
            },
        );
        async move { execute(&config, assignment).await }.with_subscriber(subscriber)
    });

    assert!(
        wait_until(Duration::from_secs(30), || async {
            pg_dump_of("killed_dump").is_some()
        })
        .await,
        "pg_dump never ran"
    );
    let pid = pg_dump_of("killed_dump").expect("found");
    let proc_file = |name: &str| {
        std::fs::read(format!("/proc/{pid}/{name}"))
            .unwrap_or_else(|error| panic!("{name}: {error}"))
    };
    let arguments = String::from_utf8_lossy(&proc_file("cmdline")).replace('\0', " ");
    let environment = String::from_utf8_lossy(&proc_file("environ")).replace('\0', "\n");
    assert!(!arguments.contains(CANARY), "{arguments}");
    assert!(!environment.contains(CANARY), "{environment}");
    assert!(!environment.contains("PGPASSWORD"), "{environment}");
    let passfile: PathBuf = environment
        .lines()
        .find_map(|line| line.strip_prefix("PGPASSFILE="))
        .expect("the password goes through a passfile")
        .into();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&passfile)
            .expect("passfile")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        std::fs::read_to_string(&passfile)
            .expect("passfile")
            .contains(CANARY)
    );

    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let (result, events) = run.await.expect("the run ends");
    holder.rollback().await.expect("release");

    assert!(!result.succeeded);
    let error = result.error.expect("why it failed");
    assert_eq!(error.kind, i32::from(ErrorKind::Precondition), "{error:?}");
    assert!(
        error.message.contains("killed by signal 9") && error.message.contains("accounts-1"),
        "{}",
        error.message
    );
    assert!(result.backup.is_none());
    assert!(
        !events
            .iter()
            .any(|event| matches!(event, Event::RevisionStarted(_))),
        "no revision may start: {:?}",
        events.iter().map(step).collect::<Vec<_>>()
    );
    assert!(!shard.has_note_column().await, "no DDL ran");
    assert!(!passfile.exists(), "the passfile is removed");
    let directory = backup::shard_directory(&shard.settings(5), "accounts-1");
    let left: Vec<_> = std::fs::read_dir(&directory)
        .expect("dir")
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    assert!(left.is_empty(), "nothing half-written is kept: {left:?}");
    let log = String::from_utf8_lossy(&log.0.lock().expect("log")).into_owned();
    assert!(
        log.contains("pre-flight check passed"),
        "the log was captured: {log}"
    );
    assert!(!log.contains(CANARY), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_during_the_backup_is_ridden_out() {
    let shard = shard("restarted_dump").await;
    let config = Arc::new(shard.config(shard.settings(5)));
    let set = migrations();
    // pg_dump queues behind this lock, so the restart catches it half-way.
    let holder = shard.hold_notes().await;
    let run = tokio::spawn({
        let config = Arc::clone(&config);
        let assignment = assignment(
            "r1",
            set.path(),
            HostDuties {
                require_backup: true,
                ..HostDuties::default()
            },
        );
        async move { execute(&config, assignment).await }
    });
    assert!(
        wait_until(Duration::from_secs(30), || async {
            pg_dump_of("restarted_dump").is_some()
        })
        .await,
        "pg_dump never ran"
    );
    // A fast restart ends every session: pg_dump's, and the lock holder's.
    shard.cluster.restart(Shutdown::Fast).expect("restart");
    drop(holder);
    let (result, events) = run.await.expect("the run ends");

    assert!(result.succeeded, "{:?}", result.error);
    let backup = result.backup.expect("the backup taken after the restart");
    assert!(backup.verified_entries > 0, "{backup:?}");
    assert!(
        shard.has_note_column().await,
        "the revision ran after the backup"
    );
    let checks = events
        .iter()
        .filter(|event| matches!(event, Event::PreflightCheck(check) if check.name == "server"))
        .count();
    assert_eq!(
        checks, 2,
        "the pre-flight ran again on the restarted server"
    );
    let directory = backup::shard_directory(&shard.settings(5), "accounts-1");
    let mut left: Vec<String> = std::fs::read_dir(&directory)
        .expect("dir")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            format!("{}.dump", backup.backup_id),
            format!("{}.json", backup.backup_id)
        ],
        "one verified backup, nothing half-written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_shard_is_copied_online_and_checked_before_its_first_ddl() {
    let home = tempfile::tempdir().expect("home");
    let database = home.path().join("accounts.db");
    let url = format!("sqlite://{}", database.display());
    {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&database)
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options)
            .await
            .expect("sqlite");
        sqlx::raw_sql(
            "CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT NOT NULL);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100)
             INSERT INTO accounts SELECT i, 'owner ' || i FROM n;",
        )
        .execute(&pool)
        .await
        .expect("schema");
        pool.close().await;
    }
    let config = AgentConfig {
        agent_id: "db-host-1".to_owned(),
        coordinator: None,
        shards: vec![ShardConfig {
            id: "accounts-1".to_owned(),
            labels: Default::default(),
            lifecycle: fleetshift_common::proto::v1::ShardLifecycle::Active,
            database_url: DatabaseUrl::new(url),
            throttle_replicas: Vec::new(),
            scope: fleetshift_common::engine::ShardScope::Database,
        }],
        tenant_databases: Vec::new(),
        backups: Some(BackupSettings {
            directory: home.path().join("backups"),
            keep: 5,
            max_age: None,
            pg_dump: PathBuf::from("pg_dump"),
            pg_restore: PathBuf::from("pg_restore"),
            psql: PathBuf::from("psql"),
            lock_wait_timeout: Duration::from_secs(30),
        }),
        rehearsals: Default::default(),
        telemetry_listen: None,
        database_outage_wait: fleetshift_agent::outage::DEFAULT_OUTAGE_WAIT,
    };
    let set = migrations();
    let duties = HostDuties {
        require_backup: true,
        ..HostDuties::default()
    };
    let (result, events) = execute(&config, assignment("s1", set.path(), duties)).await;
    assert!(result.succeeded, "{:?}", result.error);
    let steps: Vec<String> = events.iter().map(step).collect();
    assert_eq!(steps[..2], ["backup", "revision 1"], "{steps:?}");

    let record = result.backup.expect("a backup record");
    assert!(record.location.ends_with(".sqlite"), "{record:?}");
    let copy = std::fs::read(&record.location).expect("the copy is where the record says");
    assert_eq!(record.size_bytes, copy.len() as u64);
    assert_eq!(record.sha256, hex::encode(Sha256::digest(&copy)));
    assert!(record.verified_entries >= 1);
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&record.location)
        .read_only(true);
    let pool = sqlx::SqlitePool::connect_with(options)
        .await
        .expect("open the copy");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(rows, 100);
    let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info('accounts')")
        .fetch_all(&pool)
        .await
        .expect("columns");
    assert_eq!(
        columns,
        ["id", "owner"],
        "the copy is from before the revision"
    );
}

mod preflight;
mod throttle;
