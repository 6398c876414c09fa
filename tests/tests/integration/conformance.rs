//! One suite, both engines: the fenced protocol's guarantees hold on PostgreSQL and SQLite.
//! Every contender has its own engine (its own connections), like separate agents.

use fleetshift_common::fence::FenceToken;
use std::future::Future;
use std::sync::Arc;

use fleetshift_common::engine::{
    FencedTransaction, PostgresShard, ShardEngine, SqliteShard, TxError,
};
use fleetshift_common::error::ExecError;
use fleetshift_common::executor::Request;
use fleetshift_common::ledger::{Expect, Guard, LedgerRecord, RevisionStatus, Writer};
use fleetshift_common::source::MigrationSet;
use fleetshift_common::statements::{self, Statement};
use fleetshift_tests::fixtures;
use fleetshift_tests::postgres::PostgresCluster;
use tokio::sync::Barrier;

use super::support;

/// A shard the suite can open many times and count rows in.
pub trait TestShard: Send + Sync + 'static {
    type Engine: ShardEngine + 'static;
    fn open(&self) -> impl Future<Output = Self::Engine> + Send;
    fn count(&self, engine: &Self::Engine, table: &str) -> impl Future<Output = i64> + Send;
}

pub struct Postgres {
    pub url: String,
}

impl TestShard for Postgres {
    type Engine = PostgresShard;
    async fn open(&self) -> PostgresShard {
        support::postgres(&self.url).await
    }
    async fn count(&self, engine: &PostgresShard, table: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(engine.pool())
            .await
            .expect("count rows")
    }
}

pub struct Sqlite {
    pub path: std::path::PathBuf,
}

impl TestShard for Sqlite {
    type Engine = SqliteShard;
    async fn open(&self) -> SqliteShard {
        support::sqlite(&self.path).await
    }
    async fn count(&self, engine: &SqliteShard, table: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(engine.pool())
            .await
            .expect("count rows")
    }
}

fn writer(token: i64) -> Writer {
    Writer {
        fence_token: FenceToken::from_raw(token),
        agent_id: format!("agent-{token}"),
        plan_id: None,
    }
}

fn applied_record(version: &str) -> LedgerRecord {
    LedgerRecord {
        version: version.to_owned(),
        name: "race".to_owned(),
        checksum: "test".to_owned(),
        status: RevisionStatus::Applied,
        transactional: true,
        keep_started_at: false,
        duration_ms: Some(1),
        statements_run: 1,
        error: None,
    }
}

async fn run_sql<E: ShardEngine>(engine: &E, sql: &str) {
    let body: Vec<Statement> = statements::split(sql);
    let work = FencedTransaction {
        body: &body,
        ..FencedTransaction::fence_only()
    };
    engine
        .fenced_transaction(&writer(0), work)
        .await
        .expect("setup SQL");
}

/// How the racing contenders' tokens are chosen.
#[derive(Debug, Clone, Copy)]
pub enum Tokens {
    /// 1..=N: the fence and the guard both separate them.
    Distinct,
    /// One token for all (a claim retried, or handed out twice): only the ledger guard
    /// stands between them and a double apply.
    Shared,
}

/// Contenders race to apply the same revision with no migrator lock at all: the fence and
/// the ledger guard inside the shard let exactly one apply it.
pub async fn racing_contenders_apply_a_revision_once<S: TestShard>(
    shard: Arc<S>,
    contenders: i64,
    tokens: Tokens,
) {
    let setup = shard.open().await;
    setup.ensure_ledger().await.expect("ledger");
    run_sql(
        &setup,
        "CREATE TABLE applications (contender integer NOT NULL)",
    )
    .await;
    let barrier = Arc::new(Barrier::new(usize::try_from(contenders).expect("count")));
    let mut tasks = tokio::task::JoinSet::new();
    for contender in 1..=contenders {
        let token = match tokens {
            Tokens::Distinct => contender,
            Tokens::Shared => 5,
        };
        let shard = Arc::clone(&shard);
        let barrier = Arc::clone(&barrier);
        tasks.spawn(async move {
            let engine = shard.open().await;
            let body = statements::split(&format!(
                "INSERT INTO applications (contender) VALUES ({token})"
            ));
            let guard = Guard::default().require("1", Expect::NotApplied);
            let record = applied_record("1");
            barrier.wait().await;
            let work = FencedTransaction {
                body: &body,
                records: std::slice::from_ref(&record),
                ..FencedTransaction::guarded(&guard)
            };
            (
                contender,
                token,
                engine.fenced_transaction(&writer(token), work).await,
            )
        });
    }
    let mut winners = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (contender, token, result) = joined.expect("contender task");
        match result {
            Ok(_) => winners.push(token),
            Err(TxError::FencedOut { current }) => assert!(current.get() > token),
            Err(TxError::Guard(violation)) => {
                assert_eq!(violation.found, Some(RevisionStatus::Applied))
            }
            Err(other) => panic!("contender {contender} failed unexpectedly: {other:?}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one contender applies: {winners:?}"
    );
    assert_eq!(
        shard.count(&setup, "applications").await,
        1,
        "the body ran exactly once"
    );
    let ledger = setup.read_ledger().await.expect("ledger");
    let entry = ledger
        .iter()
        .find(|entry| entry.version == "1")
        .expect("history row");
    assert_eq!(entry.fence_token.get(), winners[0]);
}

/// A newer claim applies revision 1; the stale holder then tries the rest and is fenced out
/// without changing anything.
pub async fn stale_holder_is_fenced_out<S: TestShard>(shard: &S, set: &MigrationSet) {
    let newer = shard.open().await;
    let stale = shard.open().await;
    support::executor(&newer, "agent-b", Some(7))
        .up(
            set,
            &Request {
                target: Some("1".to_owned()),
                allow_drift: None,
            },
        )
        .await
        .expect("the newer claim applies revision 1");
    let refused = support::executor(&stale, "agent-a", Some(5))
        .up(set, &Request::default())
        .await
        .expect_err("the stale holder must be refused");
    assert!(
        matches!(
            refused,
            ExecError::FencedOut { ours, current, .. }
                if ours.get() == 5 && current.get() == 7
        ),
        "{refused}"
    );
    let status = support::executor(&newer, "reader", None)
        .status(set)
        .await
        .expect("status");
    assert_eq!(status.current_version.as_deref(), Some("1"));
    assert_eq!(
        status.pending().count(),
        set.revisions.len() - 1,
        "the stale holder applied nothing"
    );
    assert_eq!(newer.current_fence().await.expect("fence").get(), 7);
    assert_eq!(
        shard.count(&newer, "fleetshift_probe").await,
        0,
        "revision 2 never ran"
    );
}

/// Several executors run the whole set at once: every revision runs exactly once.
pub async fn concurrent_executors_apply_each_revision_once<S: TestShard>(
    shard: Arc<S>,
    set: Arc<MigrationSet>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for token in 1..=4 {
        let shard = Arc::clone(&shard);
        let set = Arc::clone(&set);
        tasks.spawn(async move {
            let engine = shard.open().await;
            support::executor(&engine, &format!("agent-{token}"), Some(token))
                .up(&set, &Request::default())
                .await
        });
    }
    while let Some(joined) = tasks.join_next().await {
        match joined.expect("executor task") {
            Ok(_) | Err(ExecError::FencedOut { .. }) => {}
            Err(other) => panic!("an executor failed unexpectedly: {other}"),
        }
    }
    let engine = shard.open().await;
    let status = support::executor(&engine, "reader", None)
        .status(&set)
        .await
        .expect("status");
    assert_eq!(status.pending().count(), 0);
    assert_eq!(
        shard.count(&engine, "fleetshift_probe").await,
        1,
        "revision 2's insert ran once"
    );
    assert_eq!(
        shard.count(&engine, "fleetshift_probe_log").await,
        2,
        "revisions 3 and 4 ran once each"
    );
    support::assert_sound_ledger(&engine, &set, None).await;
}

/// A small set that records every execution of its revisions.
pub fn probe_set() -> (tempfile::TempDir, MigrationSet) {
    let directory = fixtures::migrations(&[
        (
            "1_create_probe.sql",
            "CREATE TABLE fleetshift_probe (id integer); CREATE TABLE fleetshift_probe_log (revision integer);",
        ),
        (
            "2_insert_probe.sql",
            "INSERT INTO fleetshift_probe (id) VALUES (2);",
        ),
        (
            "3_log.sql",
            "INSERT INTO fleetshift_probe_log (revision) VALUES (3);",
        ),
        (
            "4_log.sql",
            "INSERT INTO fleetshift_probe_log (revision) VALUES (4);",
        ),
    ]);
    let set = MigrationSet::load(directory.path(), None).expect("probe set");
    (directory, set)
}

async fn postgres_shard(cluster: &PostgresCluster, name: &str) -> Arc<Postgres> {
    let url = cluster.create_database(name).await.expect("database");
    Arc::new(Postgres { url })
}

fn sqlite_shard(directory: &tempfile::TempDir, name: &str) -> Arc<Sqlite> {
    Arc::new(Sqlite {
        path: directory.path().join(format!("{name}.db")),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_racing_contenders_apply_a_revision_once() {
    let cluster = PostgresCluster::start().expect("cluster");
    racing_contenders_apply_a_revision_once(
        postgres_shard(&cluster, "distinct").await,
        8,
        Tokens::Distinct,
    )
    .await;
    racing_contenders_apply_a_revision_once(
        postgres_shard(&cluster, "shared").await,
        8,
        Tokens::Shared,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_racing_contenders_apply_a_revision_once() {
    let directory = tempfile::tempdir().expect("tempdir");
    racing_contenders_apply_a_revision_once(
        sqlite_shard(&directory, "distinct"),
        8,
        Tokens::Distinct,
    )
    .await;
    racing_contenders_apply_a_revision_once(sqlite_shard(&directory, "shared"), 8, Tokens::Shared)
        .await;
}

#[tokio::test]
async fn postgres_stale_holder_is_fenced_out() {
    let cluster = PostgresCluster::start().expect("cluster");
    let (_directory, set) = probe_set();
    stale_holder_is_fenced_out(postgres_shard(&cluster, "stale").await.as_ref(), &set).await;
}

#[tokio::test]
async fn sqlite_stale_holder_is_fenced_out() {
    let directory = tempfile::tempdir().expect("tempdir");
    let (_migrations, set) = probe_set();
    stale_holder_is_fenced_out(sqlite_shard(&directory, "stale").as_ref(), &set).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_concurrent_executors_apply_each_revision_once() {
    let cluster = PostgresCluster::start().expect("cluster");
    let (_directory, set) = probe_set();
    concurrent_executors_apply_each_revision_once(
        postgres_shard(&cluster, "concurrent").await,
        Arc::new(set),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_concurrent_executors_apply_each_revision_once() {
    let directory = tempfile::tempdir().expect("tempdir");
    let (_migrations, set) = probe_set();
    concurrent_executors_apply_each_revision_once(
        sqlite_shard(&directory, "concurrent"),
        Arc::new(set),
    )
    .await;
}
