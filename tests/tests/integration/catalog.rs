//! What a shard's catalog says about its tables, on real PostgreSQL: sizes from `reltuples` and
//! every kind of dependent on a schema built for the test (a view on a column, a materialized
//! view, foreign keys both ways, an index, a trigger, a function whose body names the table, a
//! policy, a publication), and per column the views, foreign keys and functions that use it;
//! a session holding a lock on a table shows it in use, and an agent's refreshed facts carry
//! that into a plan made after the agent connected.

use std::time::Duration;

use fleetshift_common::engine::{CountedPool, catalog};
use fleetshift_common::proto::v1::fleet_service_client::FleetServiceClient;
use fleetshift_common::proto::v1::{CreatePlanRequest, Hello};
use fleetshift_coordinator::authz::{OperatorRole, Roles};
use fleetshift_coordinator::store::Store;
use fleetshift_tests::binary;
use fleetshift_tests::fixtures;
use fleetshift_tests::fleet::{InProcessCoordinator, Process, agent_config_text, shard_tables};
use fleetshift_tests::wait::wait_until;
use prost::Message;

use super::support::{self, Database};

const SCHEMA: &str = "
    CREATE TABLE users (id bigint PRIMARY KEY, email text);
    CREATE TABLE orders (id bigint PRIMARY KEY, user_id bigint REFERENCES users (id));
    CREATE VIEW user_emails AS SELECT email FROM users;
    CREATE MATERIALIZED VIEW order_counts AS SELECT user_id, count(*) FROM orders GROUP BY user_id;
    CREATE FUNCTION touch_users() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN UPDATE users SET email = email WHERE false; RETURN NEW; END $$;
    CREATE TRIGGER orders_touch AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION touch_users();
    ALTER TABLE users ENABLE ROW LEVEL SECURITY;
    CREATE POLICY own_rows ON users USING (true);
    CREATE PUBLICATION users_feed FOR TABLE users;
    INSERT INTO users SELECT g, 'user' || g FROM generate_series(1, 5000) g;
    ANALYZE users;";

#[tokio::test]
async fn every_kind_of_dependent_is_found_with_the_tables_size() {
    let Database {
        cluster: _cluster,
        url: _url,
        admin,
    } = support::database("catalog").await;
    sqlx::raw_sql(SCHEMA).execute(&admin).await.expect("schema");
    let (mut holder, holder_pid) = hold_row_lock(&admin).await;
    let facts = catalog::table_facts(&CountedPool::new(admin.clone()))
        .await
        .expect("catalog");
    let table = |name: &str| {
        facts
            .iter()
            .find(|facts| facts.table == name)
            .unwrap_or_else(|| panic!("{name} in {facts:?}"))
    };
    let users = table("users");
    assert_eq!(users.estimated_rows, 5000);
    assert!(users.total_bytes > 0);
    for expected in [
        "view public.user_emails",
        "foreign key orders_user_id_fkey from orders",
        "index users_pkey",
        "function touch_users()",
        "policy own_rows",
        "publication users_feed",
    ] {
        assert!(
            users
                .dependents
                .iter()
                .any(|dependent| dependent == expected),
            "{expected} among {:?}",
            users.dependents
        );
    }
    let orders = table("orders");
    for expected in [
        "materialized view public.order_counts",
        "foreign key orders_user_id_fkey to users",
        "trigger orders_touch",
    ] {
        assert!(
            orders
                .dependents
                .iter()
                .any(|dependent| dependent == expected),
            "{expected} among {:?}",
            orders.dependents
        );
    }
    let email = users
        .columns
        .iter()
        .find(|column| column.column == "email")
        .unwrap_or_else(|| panic!("email's users in {:?}", users.columns));
    for expected in ["view public.user_emails", "function touch_users()"] {
        assert!(
            email
                .dependents
                .iter()
                .any(|dependent| dependent == expected),
            "{expected} uses users.email: {:?}",
            email.dependents
        );
    }
    let user_id = table("orders")
        .columns
        .iter()
        .find(|column| column.column == "user_id")
        .expect("orders.user_id");
    assert!(
        user_id
            .dependents
            .iter()
            .any(|dependent| dependent == "foreign key orders_user_id_fkey"),
        "{:?}",
        user_id.dependents
    );
    assert!(
        facts
            .iter()
            .all(|facts| !facts.table.starts_with("fleetshift.")),
        "fleetshift's own tables are not the shard's"
    );

    // The table is in use: the open transaction holds a row lock on it, and nobody uses orders.
    let lock = users
        .activity
        .iter()
        .find(|activity| activity.pid == holder_pid && activity.mode == "RowExclusiveLock")
        .unwrap_or_else(|| panic!("pid {holder_pid} in {:?}", users.activity));
    assert!(lock.granted);
    assert_eq!(lock.state, "idle in transaction");
    assert!(lock.query.starts_with("UPDATE users"), "{}", lock.query);
    assert!(
        table("orders").activity.is_empty(),
        "{:?}",
        table("orders").activity
    );
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut *holder)
        .await
        .expect("rollback");
}

/// A connection left idle in a transaction that updated a row of `users`, and its pid.
async fn hold_row_lock(pool: &sqlx::PgPool) -> (sqlx::pool::PoolConnection<sqlx::Postgres>, i32) {
    let mut holder = pool.acquire().await.expect("connection");
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *holder)
        .await
        .expect("pid");
    for statement in ["BEGIN", "UPDATE users SET email = email WHERE id = 1"] {
        sqlx::raw_sql(statement)
            .execute(&mut *holder)
            .await
            .expect("hold a row lock");
    }
    (holder, pid)
}

/// The agent sends fresh facts while it idles, so a plan made after a session started to use a
/// table sees it in use: in the shard's analysis and as a risk factor naming the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_sees_a_table_in_use_after_the_agent_connected() {
    let Database {
        cluster: _cluster,
        url,
        admin,
    } = support::database("in_use").await;
    sqlx::raw_sql(SCHEMA).execute(&admin).await.expect("schema");
    let mut roles = Roles::default();
    roles.grant("alice", OperatorRole::Operator);
    let fleet = InProcessCoordinator::start(roles, &["db-host-1"], &["alice"]).await;
    let home = fleet.home.path();
    let config = agent_config_text(
        "db-host-1",
        &[fleet.address.port()],
        &shard_tables(home, "db-host-1", &[url]),
    )
    .replace(
        "[coordinator]\n",
        "[coordinator]\nfacts_refresh = \"500ms\"\n",
    );
    let config_path = home.join("agent.toml");
    std::fs::write(&config_path, config).expect("agent config");
    let _agent = Process::spawn(
        &binary::agent(),
        &["--config", config_path.to_str().expect("path"), "run"],
        &home.join("agent.log"),
    );
    let users_activity = || async {
        let agents = fleet.store.agents().await.expect("agents");
        agents.iter().find_map(|(_, announced)| {
            let hello = Hello::decode(announced.as_slice()).expect("Hello");
            hello.shards.first().and_then(|shard| {
                shard
                    .tables
                    .iter()
                    .find(|facts| facts.table == "users")
                    .map(|facts| facts.activity.clone())
            })
        })
    };
    assert!(
        wait_until(Duration::from_secs(20), || async {
            users_activity().await.is_some()
        })
        .await,
        "the agent never announced its shard"
    );

    // Only now does a session start to use the table; a refresh must carry it.
    let (mut holder, holder_pid) = hold_row_lock(&admin).await;
    assert!(
        wait_until(Duration::from_secs(20), || async {
            users_activity()
                .await
                .is_some_and(|activity| activity.iter().any(|lock| lock.pid == holder_pid))
        })
        .await,
        "no refresh showed pid {holder_pid} using users"
    );
    let migrations = fixtures::migrations(&[(
        "1_users_note.sql",
        "ALTER TABLE users ADD COLUMN note text;",
    )]);
    let mut alice = FleetServiceClient::new(fleet.channel("operator-alice").await);
    let plan = alice
        .create_plan(CreatePlanRequest {
            migration_set: Some(fixtures::shipped(migrations.path())),
            ..CreatePlanRequest::default()
        })
        .await
        .expect("plan")
        .into_inner();
    let analysis = &plan.analyses[0];
    assert!(analysis.observed_at.is_some());
    assert!(
        analysis.tables[0]
            .activity
            .iter()
            .any(|lock| lock.pid == holder_pid),
        "{analysis:?}"
    );
    let risk = plan.risk.expect("assessed");
    assert!(
        risk.factors.iter().any(|factor| factor.name == "in use"
            && factor.points > 0
            && factor
                .explanation
                .contains(&format!("pid {holder_pid} (idle in transaction"))),
        "{risk:?}"
    );
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut *holder)
        .await
        .expect("rollback");
}
