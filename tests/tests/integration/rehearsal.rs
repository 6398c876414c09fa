//! Rehearsals on a real PostgreSQL server: every hazard class is found on the trace of a
//! script that has it, and not on the trace of a safer rewrite of the same change; the CLI
//! rehearses a sampled copy and leaves the database untouched.

use fleetshift_common::engine::Timeouts;
use fleetshift_common::executor::{Executor, Request};
use fleetshift_common::rehearsal::findings::Hint;
use fleetshift_common::rehearsal::scratch::SampleOptions;
use fleetshift_common::rehearsal::{self, Rehearsal, RehearsalSettings};
use fleetshift_common::secrets::DatabaseUrl;
use fleetshift_common::source::MigrationSet;
use fleetshift_tests::fixtures;
use fleetshift_tests::postgres::PostgresCluster;

use super::support;

mod cli;
mod fleet;

/// Revision 1 of every case, applied to the shard before the rehearsal: tables with rows.
const BASE: &str = "
CREATE TABLE authors (id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text,
                      email varchar(50), price integer NOT NULL DEFAULT 0);
INSERT INTO authors (name, email) SELECT 'n' || g, 'e' || g FROM generate_series(1, 3000) g;
CREATE TABLE books (id integer PRIMARY KEY, author_id integer, title text);
INSERT INTO books SELECT g, 1 + g % 3000, 't' || g FROM generate_series(1, 3000) g;
CREATE TABLE tags (name text);
INSERT INTO tags SELECT 'tag' || g FROM generate_series(1, 500) g;
CREATE TABLE labels (name text NOT NULL);
INSERT INTO labels SELECT 'label' || g FROM generate_series(1, 500) g;
";

/// A change as revisions 2, 3, … after [`BASE`].
struct Case {
    name: &'static str,
    hint: Hint,
    revisions: &'static [&'static str],
}

/// Each hazard: the script that has it, and a safer rewrite of the same change.
fn cases() -> Vec<(Case, Case)> {
    let pair = |hint, bad: &'static [&'static str], safe: &'static [&'static str]| {
        (
            Case {
                name: "bad",
                hint,
                revisions: bad,
            },
            Case {
                name: "safe",
                hint,
                revisions: safe,
            },
        )
    };
    vec![
        pair(
            Hint::E1,
            &["ALTER TABLE authors ADD CONSTRAINT name_present CHECK (name IS NOT NULL);"],
            &[
                "ALTER TABLE authors ADD CONSTRAINT name_present CHECK (name IS NOT NULL) NOT VALID;",
                "ALTER TABLE authors VALIDATE CONSTRAINT name_present;",
            ],
        ),
        pair(
            Hint::E2,
            &["ALTER TABLE authors ALTER COLUMN name SET NOT NULL;"],
            &[
                "ALTER TABLE authors ADD CONSTRAINT name_present CHECK (name IS NOT NULL) NOT VALID;",
                "ALTER TABLE authors VALIDATE CONSTRAINT name_present;",
                "ALTER TABLE authors ALTER COLUMN name SET NOT NULL;",
            ],
        ),
        pair(
            Hint::E3,
            &["ALTER TABLE authors ADD COLUMN meta json;"],
            &["ALTER TABLE authors ADD COLUMN meta jsonb;"],
        ),
        pair(
            Hint::E4,
            &[
                "ALTER TABLE authors ADD COLUMN nick text;\nUPDATE books SET title = title WHERE id < 10;",
            ],
            &[
                "ALTER TABLE authors ADD COLUMN nick text;",
                "UPDATE books SET title = title WHERE id < 10;",
            ],
        ),
        pair(
            Hint::E5,
            &["ALTER TABLE authors ALTER COLUMN price TYPE bigint;"],
            &["ALTER TABLE authors ALTER COLUMN email TYPE varchar(100);"],
        ),
        pair(
            Hint::E6,
            &["CREATE INDEX books_title ON books (title);"],
            &["-- no-transaction\nCREATE INDEX CONCURRENTLY books_title ON books (title);"],
        ),
        pair(
            Hint::E7,
            &["ALTER TABLE authors ADD CONSTRAINT authors_email_key UNIQUE (email);"],
            &[
                "-- no-transaction\nCREATE UNIQUE INDEX CONCURRENTLY authors_email_idx ON authors (email);",
                "ALTER TABLE authors ADD CONSTRAINT authors_email_key UNIQUE USING INDEX authors_email_idx;",
            ],
        ),
        pair(
            Hint::E8,
            &["ALTER TABLE authors ADD CONSTRAINT one_email EXCLUDE USING btree (email WITH =);"],
            &[
                "CREATE TABLE rooms (email varchar(50), CONSTRAINT one_email EXCLUDE USING btree (email WITH =));",
            ],
        ),
        pair(
            Hint::E9,
            &["SET LOCAL lock_timeout = 0;\nALTER TABLE authors ADD COLUMN note text;"],
            &["ALTER TABLE authors ADD COLUMN note text;"],
        ),
        pair(
            Hint::E10,
            &["ALTER TABLE authors ADD COLUMN seen timestamptz DEFAULT clock_timestamp();"],
            &["ALTER TABLE authors ADD COLUMN seen timestamptz DEFAULT now();"],
        ),
        pair(
            Hint::E11,
            &[
                "ALTER TABLE authors ADD COLUMN shout text GENERATED ALWAYS AS (upper(name)) STORED;",
            ],
            &["ALTER TABLE authors ADD COLUMN shout text;"],
        ),
        pair(
            Hint::E15,
            &[
                "ALTER TABLE books ADD CONSTRAINT books_author FOREIGN KEY (author_id) REFERENCES authors (id) NOT VALID;",
            ],
            &[
                "-- no-transaction\nCREATE INDEX CONCURRENTLY books_author_id ON books (author_id);",
                "ALTER TABLE books ADD CONSTRAINT books_author FOREIGN KEY (author_id) REFERENCES authors (id) NOT VALID;",
            ],
        ),
        pair(
            Hint::W12,
            &[
                "ALTER TABLE authors ADD COLUMN a integer;\nALTER TABLE authors ADD COLUMN b integer;",
            ],
            &["ALTER TABLE authors ADD COLUMN a integer, ADD COLUMN b integer;"],
        ),
        pair(
            Hint::W13,
            &["CREATE TYPE mood AS ENUM ('calm', 'cross');"],
            &["CREATE TABLE moods (name text PRIMARY KEY);"],
        ),
        pair(
            Hint::W14,
            &[
                "-- no-transaction\nCREATE UNIQUE INDEX CONCURRENTLY tags_name_idx ON tags (name);",
                "ALTER TABLE tags ADD CONSTRAINT tags_pkey PRIMARY KEY USING INDEX tags_name_idx;",
            ],
            &[
                "-- no-transaction\nCREATE UNIQUE INDEX CONCURRENTLY labels_name_idx ON labels (name);",
                "ALTER TABLE labels ADD CONSTRAINT labels_pkey PRIMARY KEY USING INDEX labels_name_idx;",
            ],
        ),
    ]
}

/// The case's revisions after the base, as a sqlx directory.
fn case_set(case: &Case) -> (tempfile::TempDir, MigrationSet) {
    let mut files = vec![("1_base.sql".to_owned(), BASE.to_owned())];
    for (index, sql) in case.revisions.iter().enumerate() {
        files.push((format!("{}_step.sql", index + 2), (*sql).to_owned()));
    }
    let borrowed: Vec<(&str, &str)> = files
        .iter()
        .map(|(name, sql)| (name.as_str(), sql.as_str()))
        .collect();
    let directory = fixtures::migrations(&borrowed);
    let set = MigrationSet::load(directory.path(), None).expect("case set");
    (directory, set)
}

fn settings(cluster: &PostgresCluster, percent: f64) -> RehearsalSettings {
    RehearsalSettings {
        sample: SampleOptions {
            percent,
            pg_dump: cluster.binaries().join("pg_dump"),
            pg_restore: cluster.binaries().join("pg_restore"),
            ..SampleOptions::default()
        },
        timeouts: Timeouts::default(),
        executor: support::quick_settings(),
        plan_id: None,
        baselines: None,
    }
}

/// Applies the base to a fresh database of `cluster` and rehearses the rest of `case`.
async fn rehearse(cluster: &PostgresCluster, database: &str, case: &Case) -> Rehearsal {
    let url = cluster.create_database(database).await.expect("database");
    let (_directory, set) = case_set(case);
    let shard = support::postgres(&url).await;
    let executor = Executor::new(
        &shard,
        support::identity("setup", None),
        support::quick_settings(),
    );
    executor
        .up(
            &set,
            &Request {
                target: Some("1".to_owned()),
                allow_drift: None,
            },
        )
        .await
        .expect("base applied");
    rehearsal::rehearse(
        &DatabaseUrl::new(url),
        &set,
        &Request::default(),
        &settings(cluster, 100.0),
    )
    .await
    .expect("rehearsal ran")
}

#[tokio::test]
async fn every_hazard_is_found_on_its_trace_and_not_on_the_safer_rewrite() {
    let cluster = PostgresCluster::start().expect("cluster");
    for (number, (bad, safe)) in cases().into_iter().enumerate() {
        let hint = bad.hint;
        let found = rehearse(&cluster, &format!("case_{number}_bad"), &bad).await;
        assert!(found.failure.is_none(), "{hint} {}: {found:#?}", bad.name);
        let finding = found
            .findings
            .iter()
            .find(|finding| finding.hint == hint)
            .unwrap_or_else(|| panic!("{hint} not found on its script: {found:#?}"));
        assert!(
            finding.place.contains("_step.sql:"),
            "{hint} names the file and line: {finding:?}"
        );
        let clean = rehearse(&cluster, &format!("case_{number}_safe"), &safe).await;
        assert!(clean.failure.is_none(), "{hint} {}: {clean:#?}", safe.name);
        assert!(
            !clean.findings.iter().any(|finding| finding.hint == hint),
            "{hint} found on the safer rewrite: {clean:#?}"
        );
    }
}

#[tokio::test]
async fn the_trace_shows_the_locks_scans_and_rewrites_the_findings_rest_on() {
    let cluster = PostgresCluster::start().expect("cluster");
    let statement = |rehearsal: &Rehearsal, revision: &str| {
        rehearsal
            .revisions
            .iter()
            .find(|traced| traced.version == revision)
            .and_then(|traced| traced.runs.last())
            .and_then(|run| run.statements.last())
            .cloned()
            .unwrap_or_else(|| panic!("revision {revision} traced: {rehearsal:#?}"))
    };
    // SET NOT NULL scans the table, unless a validated CHECK proves it.
    let (bad, safe) = cases().swap_remove(1);
    let scanned = rehearse(&cluster, "trace_e2_bad", &bad).await;
    let effects = statement(&scanned, "2").effects;
    assert_eq!(effects.not_null_set, ["public.authors.name"]);
    assert_eq!(effects.scanned, ["public.authors"]);
    let proven = rehearse(&cluster, "trace_e2_safe", &safe).await;
    let effects = statement(&proven, "4").effects;
    assert_eq!(effects.not_null_set, ["public.authors.name"]);
    assert!(effects.scanned.is_empty(), "{effects:?}");
    // int → bigint rewrites under ACCESS EXCLUSIVE; a longer varchar does not rewrite.
    let (bad, safe) = cases().swap_remove(4);
    let rewrite = rehearse(&cluster, "trace_e5_bad", &bad).await;
    let effects = statement(&rewrite, "2").effects;
    assert!(
        effects.rewritten.contains(&"public.authors".to_owned()),
        "{effects:?}"
    );
    let e5 = rewrite
        .findings
        .iter()
        .find(|finding| finding.hint == Hint::E5)
        .expect("E5");
    assert_eq!(e5.lock_mode.as_deref(), Some("AccessExclusiveLock"));
    assert!(e5.held_us.is_some_and(|held| held > 0));
    let widened = rehearse(&cluster, "trace_e5_safe", &safe).await;
    let effects = statement(&widened, "2").effects;
    assert_eq!(effects.types_changed.len(), 1, "{effects:?}");
    assert!(effects.rewritten.is_empty(), "{effects:?}");
    // A plain index build holds SHARE on the table; a concurrent one runs outside a transaction.
    let (bad, safe) = cases().swap_remove(5);
    let plain = rehearse(&cluster, "trace_e6_bad", &bad).await;
    let e6 = plain
        .findings
        .iter()
        .find(|finding| finding.hint == Hint::E6)
        .expect("E6");
    assert_eq!(e6.lock_mode.as_deref(), Some("ShareLock"));
    let concurrent = rehearse(&cluster, "trace_e6_safe", &safe).await;
    let built = statement(&concurrent, "2").effects.indexes_built;
    assert_eq!(built.len(), 1);
    assert!(built[0].concurrently, "{built:?}");
}

#[tokio::test]
async fn a_sample_is_closed_under_the_foreign_keys_the_revisions_add() {
    let cluster = PostgresCluster::start().expect("cluster");
    let url = cluster.create_database("closed").await.expect("database");
    let directory = fixtures::migrations(&[
        ("1_base.sql", BASE),
        (
            "2_books_author.sql",
            "ALTER TABLE books ADD CONSTRAINT books_author FOREIGN KEY (author_id) REFERENCES authors;",
        ),
    ]);
    let set = MigrationSet::load(directory.path(), None).expect("set");
    let shard = support::postgres(&url).await;
    Executor::new(
        &shard,
        support::identity("setup", None),
        support::quick_settings(),
    )
    .up(
        &set,
        &Request {
            target: Some("1".to_owned()),
            allow_drift: None,
        },
    )
    .await
    .expect("base applied");
    // The first 100 authors (ids 1–100) and the first 100 books (authors 2–101): one book
    // references an author outside the sample.
    let mut settings = settings(&cluster, 100.0);
    settings.sample.max_rows_per_table = 100;
    let rehearsal =
        rehearsal::rehearse(&DatabaseUrl::new(url), &set, &Request::default(), &settings)
            .await
            .expect("rehearsal ran");
    assert!(rehearsal.failure.is_none(), "{rehearsal:#?}");
    let books = rehearsal
        .sample
        .tables
        .iter()
        .find(|table| table.table == "public.books")
        .expect("books sampled");
    assert_eq!(
        (books.rows_sampled, books.rows_removed),
        (100, 1),
        "{books:?}"
    );
    assert!(
        rehearsal
            .findings
            .iter()
            .any(|finding| finding.hint == Hint::E1 && finding.relation == "public.books"),
        "{rehearsal:#?}"
    );
}
