//! What rendering refuses or reports, on small Alembic projects written by each test: a
//! downgrade that raises, a revision that reads data, several heads, a missing Alembic.

use std::path::Path;

use fleetshift_tests::{alembic, fixtures};

use crate::integration::support::{self, Database, assert_exit, json};

const INI: &str =
    "[alembic]\nscript_location = %(here)s/alembic\nsqlalchemy.url = postgresql://localhost/app\n";

/// Alembic's own `env.py` for offline runs, as `alembic init` writes its core.
const ENV: &str = r#"from alembic import context

config = context.config
context.configure(
    url=config.get_main_option("sqlalchemy.url"),
    literal_binds=True,
    dialect_opts={"paramstyle": "named"},
)
with context.begin_transaction():
    context.run_migrations()
"#;

/// A revision file: `upgrade` and `downgrade` bodies, indented by the caller.
fn revision(id: &str, down: &str, upgrade: &str, downgrade: &str) -> String {
    format!(
        "\"\"\"step {id}\"\"\"\nfrom alembic import op\nimport sqlalchemy as sa\n\nrevision = '{id}'\ndown_revision = {down}\n\n\ndef upgrade():\n{upgrade}\n\n\ndef downgrade():\n{downgrade}\n"
    )
}

/// The first revision of the small projects: an `account` table.
fn accounts() -> (&'static str, String) {
    (
        "a1_accounts",
        revision(
            "a1",
            "None",
            "    op.create_table('account', sa.Column('id', sa.Integer, primary_key=True))",
            "    op.drop_table('account')",
        ),
    )
}

/// An Alembic project: `alembic.ini`, `alembic/env.py` and the given revision files.
fn project(revisions: &[(&str, String)]) -> tempfile::TempDir {
    let mut files = vec![
        ("alembic.ini".to_owned(), INI.to_owned()),
        ("alembic/env.py".to_owned(), ENV.to_owned()),
    ];
    for (name, text) in revisions {
        files.push((format!("alembic/versions/{name}.py"), text.clone()));
    }
    let borrowed: Vec<(&str, &str)> = files
        .iter()
        .map(|(name, text)| (name.as_str(), text.as_str()))
        .collect();
    fixtures::migrations(&borrowed)
}

fn lint(cache: &Path, project: &Path, extra: &[&str]) -> std::process::Output {
    let mut arguments = vec![
        "lint",
        project.to_str().expect("UTF-8 path"),
        "--output",
        "json",
        "--fail-on",
        "never",
    ];
    arguments.extend_from_slice(extra);
    alembic::fleetshift(cache)
        .args(arguments)
        .output()
        .expect("lint")
}

#[test]
fn a_downgrade_that_raises_makes_its_revision_irreversible_and_rendering_goes_on_below() {
    let cache = tempfile::tempdir().expect("cache");
    let raises = "    raise NotImplementedError('the notes cannot be taken back')";
    let project = project(&[
        accounts(),
        (
            "b2_notes",
            revision(
                "b2",
                "'a1'",
                "    op.add_column('account', sa.Column('note', sa.Text))",
                raises,
            ),
        ),
        (
            "c3_flag",
            revision(
                "c3",
                "'b2'",
                "    op.add_column('account', sa.Column('flag', sa.Boolean))",
                "    op.drop_column('account', 'flag')",
            ),
        ),
    ]);
    let linted = lint(cache.path(), project.path(), &[]);
    assert_exit(&linted, 0);
    let report = json(&linted);
    assert_eq!(report["revisions"], 3, "{report}");
    let irreversible: Vec<(&str, &str)> = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|finding| finding["rule"] == "irreversible-revision")
        .filter_map(|finding| Some((finding["file"].as_str()?, finding["message"].as_str()?)))
        .collect();
    assert_eq!(irreversible.len(), 1, "{report}");
    let (file, message) = irreversible[0];
    assert_eq!(file, "revisions/b2.up.sql");
    assert!(
        message.contains("Alembic could not render the downgrade of alembic/versions/b2_notes.py offline: NotImplementedError: the notes cannot be taken back"),
        "{message}"
    );
    let manifest = std::fs::read_dir(cache.path().join("alembic"))
        .expect("cache")
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("fleetshift-alembic.toml"))
        .find(|path| path.is_file())
        .expect("a rendered set");
    let manifest = std::fs::read_to_string(manifest).expect("manifest");
    assert!(
        manifest.contains("irreversible = \"NotImplementedError: the notes cannot be taken back\""),
        "{manifest}"
    );
    // Below the revision that raised, a1's downgrade was rendered all the same.
    assert!(manifest.matches("irreversible").count() == 1, "{manifest}");
}

#[tokio::test]
async fn a_revision_that_reads_data_offline_is_named_with_its_file_and_nothing_runs() {
    let cache = tempfile::tempdir().expect("cache");
    let reads = "    count = op.get_bind().execute(sa.text('SELECT count(*) FROM account')).scalar()\n    op.execute(f'ALTER TABLE account ADD COLUMN seen_{count} int')";
    let project = project(&[
        accounts(),
        ("b2_reads", revision("b2", "'a1'", reads, "    pass")),
    ]);
    let Database {
        cluster: _cluster,
        url,
        admin,
    } = support::database("reads_data").await;
    let path = project.path().to_str().expect("UTF-8 path");
    let up = alembic::run(cache.path(), &url, &["migrate", "up", "--dir", path]);
    assert_exit(&up, 2);
    let printed = String::from_utf8_lossy(&up.stderr).into_owned();
    assert!(
        printed.contains(
            "revision b2 (alembic/versions/b2_reads.py:10) cannot be rendered to SQL offline"
        ),
        "{printed}"
    );
    assert!(
        printed.contains("Error"),
        "Alembic's own error is quoted: {printed}"
    );
    let touched: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            .fetch_one(&admin)
            .await
            .expect("catalog");
    assert_eq!(touched, 0, "nothing ran, not even the revision before");
}

#[test]
fn several_heads_a_missing_alembic_and_a_broken_import_are_named() {
    let cache = tempfile::tempdir().expect("cache");
    let create = |table: &str| {
        format!("    op.create_table('{table}', sa.Column('id', sa.Integer, primary_key=True))")
    };
    let drop = |table: &str| format!("    op.drop_table('{table}')");
    let two_heads = project(&[
        ("a1_base", revision("a1", "None", &create("a"), &drop("a"))),
        ("b2_left", revision("b2", "'a1'", &create("b"), &drop("b"))),
        ("c3_right", revision("c3", "'a1'", &create("c"), &drop("c"))),
    ]);
    let linted = lint(cache.path(), two_heads.path(), &[]);
    let printed = String::from_utf8_lossy(&linted.stdout).into_owned();
    assert!(
        printed.contains("the project has 2 heads (b2, c3)")
            && printed.contains("alembic merge heads"),
        "{printed}"
    );

    let missing = lint(
        cache.path(),
        two_heads.path(),
        &["--alembic-command", "no-such-alembic -c alembic.ini"],
    );
    let printed = String::from_utf8_lossy(&missing.stdout).into_owned();
    assert!(
        printed.contains("cannot run the Alembic command `no-such-alembic -c alembic.ini`")
            && printed.contains("pip install alembic"),
        "{printed}"
    );

    let broken = project(&[(
        "a1_base",
        format!(
            "import geoalchemy_not_installed\n{}",
            revision("a1", "None", &create("a"), &drop("a"))
        ),
    )]);
    let linted = lint(cache.path(), broken.path(), &[]);
    let printed = String::from_utf8_lossy(&linted.stdout).into_owned();
    assert!(
        printed.contains("alembic/versions/a1_base.py:1")
            && printed.contains("No module named 'geoalchemy_not_installed'"),
        "{printed}"
    );
}
