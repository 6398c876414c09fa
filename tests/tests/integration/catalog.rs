//! What a shard's catalog says about its tables, on real PostgreSQL: sizes from `reltuples` and
//! every kind of dependent on a schema built for the test (a view on a column, a materialized
//! view, foreign keys both ways, an index, a trigger, a function whose body names the table, a
//! policy, a publication), and per column the views, foreign keys and functions that use it.

use fleetshift_common::engine::catalog;

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
    let facts = catalog::table_facts(&admin).await.expect("catalog");
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
}
