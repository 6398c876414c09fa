//! Schema fingerprints on real PostgreSQL and SQLite: the same schema built in another
//! statement order (columns added in another order, objects created in another order, read
//! through another `search_path`) has the same fingerprint, and the ledger and an extension's
//! own objects are not part of it; every object kind, altered, changes the fingerprint and the
//! diff names the object and what changed.

use fleetshift_common::schema::{self, Snapshot};
use sqlx::{AssertSqlSafe, Connection, PgConnection, SqliteConnection};

use fleetshift_tests::{binary, fixtures};

use super::support;

/// A schema with every object kind, in one order.
const FORWARD: &str = "
    CREATE EXTENSION citext VERSION '1.5';
    CREATE SCHEMA app;
    CREATE TYPE app.mood AS ENUM ('calm', 'busy');
    CREATE TABLE app.users (id bigserial PRIMARY KEY, email citext NOT NULL, mood app.mood);
    ALTER TABLE app.users ADD COLUMN created_at timestamptz DEFAULT now();
    ALTER TABLE app.users ADD COLUMN note varchar(200);
    CREATE UNIQUE INDEX users_email_idx ON app.users (email);
    CREATE TABLE app.orders (id bigint PRIMARY KEY, user_id bigint REFERENCES app.users (id),
                             total numeric(10, 2) CHECK (total >= 0));
    CREATE SEQUENCE app.invoice_numbers START 1000 INCREMENT 5;
    CREATE VIEW app.busy_users AS SELECT id, email FROM app.users WHERE mood = 'busy';
    CREATE FUNCTION app.touch() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN NEW.note := coalesce(NEW.note, ''); RETURN NEW; END $$;
    CREATE TRIGGER users_touch BEFORE INSERT ON app.users FOR EACH ROW EXECUTE FUNCTION app.touch();";

/// The same schema in another order, with its columns added in another order.
const BACKWARD: &str = "
    CREATE SCHEMA app;
    CREATE FUNCTION app.touch() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN NEW.note := coalesce(NEW.note, ''); RETURN NEW; END $$;
    CREATE SEQUENCE app.invoice_numbers START 1000 INCREMENT 5;
    CREATE TYPE app.mood AS ENUM ('calm', 'busy');
    CREATE EXTENSION citext VERSION '1.5';
    CREATE TABLE app.users (id bigserial PRIMARY KEY);
    ALTER TABLE app.users ADD COLUMN note varchar(200);
    ALTER TABLE app.users ADD COLUMN mood app.mood;
    ALTER TABLE app.users ADD COLUMN created_at timestamptz DEFAULT now();
    ALTER TABLE app.users ADD COLUMN email citext NOT NULL;
    CREATE TRIGGER users_touch BEFORE INSERT ON app.users FOR EACH ROW EXECUTE FUNCTION app.touch();
    CREATE TABLE app.orders (id bigint PRIMARY KEY, user_id bigint REFERENCES app.users (id),
                             total numeric(10, 2) CHECK (total >= 0));
    CREATE VIEW app.busy_users AS SELECT id, email FROM app.users WHERE mood = 'busy';
    CREATE UNIQUE INDEX users_email_idx ON app.users (email);
    CREATE SCHEMA fleetshift;
    CREATE TABLE fleetshift.history (version text);";

/// Two snapshots of one schema: no difference, one fingerprint, and the text holds each of
/// `expected`.
fn assert_same_schema(one: &Snapshot, other: &Snapshot, expected: &[&str]) {
    assert_eq!(one.diff(other), [], "{}", one.canonical());
    assert_eq!(one.fingerprint(), other.fingerprint());
    let text = one.canonical();
    for expected in expected {
        assert!(text.contains(expected), "{expected:?} in\n{text}");
    }
}

/// `changed` differs from `reference` in a line starting with `expected`.
fn assert_change_shows(changed: &Snapshot, reference: &Snapshot, alteration: &str, expected: &str) {
    assert_ne!(
        changed.fingerprint(),
        reference.fingerprint(),
        "{alteration}"
    );
    let lines: Vec<String> = changed
        .diff(reference)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        lines.iter().any(|line| line.starts_with(expected)),
        "{alteration}: {expected:?} in {lines:#?}"
    );
}

async fn snapshot_of(url: &str) -> Snapshot {
    let mut connection = PgConnection::connect(url).await.expect("connect");
    let snapshot = schema::postgres::read(&mut connection)
        .await
        .expect("snapshot");
    connection.close().await.expect("close");
    snapshot
}

#[tokio::test]
async fn a_postgres_schema_has_one_fingerprint_whatever_the_order_and_each_change_shows() {
    let database = support::database("schema_forward").await;
    let cluster = &database.cluster;
    sqlx::raw_sql(FORWARD)
        .execute(&database.admin)
        .await
        .expect("forward");
    let backward = cluster
        .create_database("schema_backward")
        .await
        .expect("db");
    let admin = cluster.admin_pool("schema_backward").await.expect("pool");
    sqlx::raw_sql(BACKWARD)
        .execute(&admin)
        .await
        .expect("backward");
    admin.close().await;

    let forward = snapshot_of(&database.url).await;
    let reversed = snapshot_of(&backward).await;
    assert_same_schema(
        &forward,
        &reversed,
        &[
            "extension citext\n  schema: public\n  version: 1.5\n",
            "enum app.mood\n  labels: 'calm', 'busy'\n",
            "column app.users.mood\n  type: app.mood\n",
            "column app.users.id\n  default: nextval('app.users_id_seq'::regclass)\n  not_null: true\n  type: bigint\n",
            "sequence app.users_id_seq\n",
            "  owned_by: app.users.id\n",
        ],
    );
    let text = forward.canonical();
    assert!(
        !text.contains("citext(") && !text.contains("fleetshift"),
        "{text}"
    );
    assert_eq!(Snapshot::parse(&text), Ok(forward.clone()));

    // Through a connection whose search_path names the schema, the text is the same.
    let mut through_path = PgConnection::connect(&format!(
        "{}?options=-csearch_path%3Dapp,public",
        database.url
    ))
    .await
    .expect("connect");
    let read = schema::postgres::read(&mut through_path)
        .await
        .expect("snapshot");
    through_path.close().await.expect("close");
    assert_eq!(read.fingerprint(), forward.fingerprint());

    every_change_shows(&database, &forward).await;
}

/// Each alteration, made on a copy of the forward database, and a line its diff must hold.
async fn every_change_shows(database: &support::Database, forward: &Snapshot) {
    let changes = [
        (
            "ALTER EXTENSION citext UPDATE TO '1.6'",
            "extension citext: version 1.6 vs 1.5",
        ),
        ("CREATE SCHEMA audit", "schema audit: extra"),
        (
            "ALTER TYPE app.mood ADD VALUE 'away'",
            "enum app.mood: labels 'calm', 'busy', 'away' vs 'calm', 'busy'",
        ),
        (
            "ALTER SEQUENCE app.invoice_numbers INCREMENT 10",
            "sequence app.invoice_numbers: increment 10 vs 5",
        ),
        (
            "ALTER TABLE app.orders SET UNLOGGED",
            "table app.orders: unlogged true vs (none)",
        ),
        (
            "ALTER TABLE app.users ALTER COLUMN note TYPE text",
            "column app.users.note: type text vs character varying(200)",
        ),
        (
            "ALTER TABLE app.users ALTER COLUMN created_at DROP DEFAULT",
            "column app.users.created_at: default (none) vs now()",
        ),
        (
            "ALTER TABLE app.users ALTER COLUMN email DROP NOT NULL",
            "column app.users.email: not_null (none) vs true",
        ),
        (
            "ALTER TABLE app.orders ADD CONSTRAINT positive_id CHECK (id > 0) NOT VALID",
            "constraint app.orders.positive_id: extra",
        ),
        (
            "DROP INDEX app.users_email_idx",
            "index app.users_email_idx: missing",
        ),
        (
            "UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'app.users_email_idx'::regclass",
            "index app.users_email_idx: invalid true vs (none)",
        ),
        (
            "CREATE OR REPLACE VIEW app.busy_users AS SELECT id, email FROM app.users WHERE mood <> 'calm'",
            "view app.busy_users: definition",
        ),
        (
            "CREATE OR REPLACE FUNCTION app.touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$",
            "function app.touch(): definition",
        ),
        (
            "ALTER TABLE app.users DISABLE TRIGGER users_touch",
            "trigger app.users.users_touch: enabled disabled vs (none)",
        ),
    ];
    // A template may have no other connections while it is copied.
    database.admin.close().await;
    let postgres = database.cluster.admin_pool("postgres").await.expect("pool");
    for (index, (alteration, expected)) in changes.into_iter().enumerate() {
        let name = format!("schema_change_{index}");
        sqlx::query(AssertSqlSafe(format!(
            "CREATE DATABASE {name} TEMPLATE schema_forward"
        )))
        .execute(&postgres)
        .await
        .expect("copy");
        let admin = database.cluster.admin_pool(&name).await.expect("pool");
        sqlx::raw_sql(alteration)
            .execute(&admin)
            .await
            .expect(alteration);
        admin.close().await;
        let changed = snapshot_of(&database.cluster.admin_url(&name)).await;
        assert_change_shows(&changed, forward, alteration, expected);
    }
}

async fn sqlite_snapshot(sql: &str) -> Snapshot {
    let mut connection = SqliteConnection::connect("sqlite::memory:")
        .await
        .expect("sqlite");
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
        .execute(&mut connection)
        .await
        .expect(sql);
    schema::sqlite::read(&mut connection)
        .await
        .expect("snapshot")
}

#[tokio::test]
async fn a_sqlite_schema_has_one_fingerprint_whatever_the_order_and_each_change_shows() {
    let forward = "
        CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE);
        ALTER TABLE users ADD COLUMN note TEXT DEFAULT '';
        CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users (id) ON DELETE CASCADE,
                             total REAL CHECK (total >= 0));
        CREATE INDEX orders_user ON orders (user_id);
        CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 100;
        CREATE TRIGGER users_note AFTER INSERT ON users BEGIN UPDATE users SET note = 'new' WHERE id = NEW.id; END;";
    let backward = "
        CREATE TABLE fleetshift_history (version TEXT);
        CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users (id) ON DELETE CASCADE,
                             total REAL CHECK (total >= 0));
        CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE, note TEXT DEFAULT '');
        CREATE TRIGGER users_note AFTER INSERT ON users BEGIN UPDATE users SET note = 'new' WHERE id = NEW.id; END;
        CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 100;
        CREATE INDEX orders_user ON orders (user_id);";
    let reference = sqlite_snapshot(forward).await;
    let reversed = sqlite_snapshot(backward).await;
    assert_same_schema(
        &reference,
        &reversed,
        &[
            "constraint orders.check (total >= 0)\n",
            "constraint orders.foreign key (user_id)\n  definition: FOREIGN KEY (user_id) REFERENCES users(id) ON UPDATE NO ACTION ON DELETE CASCADE\n",
            "constraint users.unique (email)\n",
            "column users.id\n  primary_key: 1\n  type: integer\n",
        ],
    );

    for (alteration, expected) in [
        (
            "ALTER TABLE users ADD COLUMN age INTEGER",
            "column users.age: extra",
        ),
        ("DROP INDEX orders_user", "index orders_user: missing"),
        ("DROP TRIGGER users_note", "trigger users_note: missing"),
        (
            "DROP VIEW big_orders; CREATE VIEW big_orders AS SELECT * FROM orders",
            "view big_orders: definition",
        ),
    ] {
        let changed = sqlite_snapshot(&format!("{forward}\n{alteration};")).await;
        assert_change_shows(&changed, &reference, alteration, expected);
    }
}

/// The run's report as `migrate … --output json` prints it.
fn run_json(url: &str, arguments: &[&str]) -> serde_json::Value {
    let output = binary::run(url, arguments);
    support::assert_exit(&output, 0);
    support::json(&output)
}

#[tokio::test]
async fn a_run_records_the_schema_it_left_and_going_back_restores_the_first_one() {
    let database = support::database("schema_runs").await;
    let sqlite = tempfile::tempdir().expect("directory");
    let sqlite_url = format!("sqlite:{}", sqlite.path().join("shard.db").display());
    let migrations = fixtures::migrations(&[
        (
            "1_users.up.sql",
            "CREATE TABLE users (id bigint PRIMARY KEY, email text);",
        ),
        ("1_users.down.sql", "DROP TABLE users;"),
        (
            "2_email.up.sql",
            "CREATE INDEX users_email ON users (email);",
        ),
        ("2_email.down.sql", "DROP INDEX users_email;"),
    ]);
    let dir = support::dir(&migrations);
    for url in [database.url.as_str(), sqlite_url.as_str()] {
        let up = run_json(url, &["migrate", "up", "--dir", dir, "--output", "json"]);
        let (before, after) = (&up["schema"]["before"], &up["schema"]["after"]);
        assert_ne!(before, after, "{up:#}");
        // PostgreSQL: the table, its two columns, its primary key and that key's index, and
        // the new index; SQLite keeps the primary key with its column.
        let changed = if url.starts_with("sqlite:") { 4 } else { 6 };
        assert_eq!(up["schema"]["objects_changed"], changed, "{up:#}");
        assert_eq!(
            recorded(url).await,
            [("2".to_owned(), after.as_str().expect("hex").to_owned())]
        );
        assert_eq!(&current_fingerprint(url).await, after);

        let again = run_json(url, &["migrate", "up", "--dir", dir, "--output", "json"]);
        assert_eq!(
            again.get("schema"),
            None,
            "nothing ran, nothing read: {again:#}"
        );

        let down = run_json(
            url,
            &[
                "migrate", "down", "--dir", dir, "--to", "base", "--output", "json",
            ],
        );
        assert_eq!(&down["schema"]["before"], after, "{down:#}");
        assert_eq!(
            &down["schema"]["after"], before,
            "back at base, the first schema: {down:#}"
        );
    }
}

/// The ledger's fingerprints, version by version.
async fn recorded(url: &str) -> Vec<(String, String)> {
    let table = if url.starts_with("sqlite:") {
        "fleetshift_fingerprints"
    } else {
        "fleetshift.fingerprints"
    };
    let query = AssertSqlSafe(format!(
        "SELECT version, fingerprint FROM {table} ORDER BY version"
    ));
    if url.starts_with("sqlite:") {
        let mut connection = SqliteConnection::connect(url).await.expect("sqlite");
        sqlx::query_as(query).fetch_all(&mut connection).await
    } else {
        let mut connection = PgConnection::connect(url).await.expect("postgres");
        sqlx::query_as(query).fetch_all(&mut connection).await
    }
    .expect("fingerprints")
}

/// The fingerprint of the schema as it stands.
async fn current_fingerprint(url: &str) -> serde_json::Value {
    let snapshot = if url.starts_with("sqlite:") {
        let mut connection = SqliteConnection::connect(url).await.expect("sqlite");
        schema::sqlite::read(&mut connection)
            .await
            .expect("snapshot")
    } else {
        snapshot_of(url).await
    };
    serde_json::Value::String(snapshot.fingerprint().to_string())
}
