use std::path::Path;

use super::*;
use crate::source::{MigrationSet, SourceFormat};

fn write_set(directory: &Path, manifest: &Manifest, scripts: &[(&str, &str)]) {
    std::fs::create_dir_all(directory.join(SCRIPTS)).expect("scripts folder");
    std::fs::write(
        directory.join(MANIFEST),
        toml::to_string(manifest).expect("manifest"),
    )
    .expect("write manifest");
    for (name, sql) in scripts {
        std::fs::write(directory.join(SCRIPTS).join(name), sql).expect("write script");
    }
}

fn entry(id: &str, parents: &[&str]) -> ManifestRevision {
    ManifestRevision {
        id: id.to_owned(),
        parents: parents.iter().map(|parent| (*parent).to_owned()).collect(),
        name: format!("step_{id}"),
        source: format!("versions/{id}_step.py"),
        transactional: true,
        irreversible: None,
    }
}

/// a → (b, c) → d: a branch and its merge, in the order Alembic applies them.
fn merged() -> Manifest {
    let mut concurrently = entry("b2", &["a1"]);
    concurrently.transactional = false;
    let mut irreversible = entry("c3", &["a1"]);
    irreversible.irreversible = Some("NotImplementedError: cannot undo".to_owned());
    Manifest {
        version_table: "alembic_version".to_owned(),
        keep_version_table: true,
        revisions: vec![
            entry("a1", &[]),
            irreversible,
            concurrently,
            entry("d4", &["b2", "c3"]),
        ],
    }
}

const SCRIPTS_OF_MERGED: [(&str, &str); 7] = [
    ("a1.up.sql", "CREATE TABLE account (id int);\n"),
    ("a1.down.sql", "DROP TABLE account;\n"),
    ("c3.up.sql", "ALTER TABLE account ADD COLUMN note text;\n"),
    (
        "b2.up.sql",
        "CREATE INDEX CONCURRENTLY account_id_idx ON account (id);\n",
    ),
    ("b2.down.sql", "DROP INDEX CONCURRENTLY account_id_idx;\n"),
    ("d4.up.sql", ""),
    ("d4.down.sql", ""),
];

#[test]
fn a_rendered_set_loads_in_alembics_order_with_ids_as_versions() {
    let directory = tempfile::tempdir().expect("tempdir");
    write_set(directory.path(), &merged(), &SCRIPTS_OF_MERGED);
    let set = MigrationSet::load(directory.path(), None).expect("loads");
    assert_eq!(set.format, SourceFormat::Alembic);
    let labels: Vec<String> = set.revisions.iter().map(Revision::label).collect();
    assert_eq!(
        labels,
        ["a1_step_a1", "c3_step_c3", "b2_step_b2", "d4_step_d4"]
    );
    assert!(set.ignored.is_empty(), "{:?}", set.ignored);
    assert!(
        set.revision("c3").expect("c3").down.is_none(),
        "irreversible"
    );
    assert!(!set.revision("b2").expect("b2").transactional);
    // An empty downgrade (`pass`) is a no-op revert, not a missing one.
    assert!(set.revision("d4").expect("d4").down.is_some());
    assert_eq!(set.position("b2"), Some(2));
    assert_eq!(set.position("B2"), None);
    let history = set.alembic.as_ref().expect("history");
    assert_eq!(
        history.applied_below(&["c3".to_owned()]),
        ["a1", "c3"].map(str::to_owned).into()
    );
    assert_eq!(history.heads_of(["a1", "c3", "b2"]), ["b2", "c3"]);
    assert_eq!(history.heads_of(["a1", "c3", "b2", "d4"]), ["d4"]);
}

#[test]
fn the_graph_and_the_version_table_settings_are_in_the_digest() {
    let directory = tempfile::tempdir().expect("tempdir");
    write_set(directory.path(), &merged(), &SCRIPTS_OF_MERGED);
    let digest = MigrationSet::load(directory.path(), None)
        .expect("loads")
        .digest;
    let mut unkept = merged();
    unkept.keep_version_table = false;
    write_set(directory.path(), &unkept, &[]);
    let other = MigrationSet::load(directory.path(), None)
        .expect("loads")
        .digest;
    assert_ne!(digest, other);
}

#[test]
fn a_missing_script_or_a_cut_graph_or_a_bad_manifest_is_named() {
    let directory = tempfile::tempdir().expect("tempdir");
    let mut cut = merged();
    cut.revisions.remove(0);
    write_set(directory.path(), &cut, &SCRIPTS_OF_MERGED[2..]);
    let error = MigrationSet::load(directory.path(), None).expect_err("refused");
    let text = error.to_string();
    assert!(
        text.contains("c3 follows a1, which the set does not hold"),
        "{text}"
    );
    assert!(text.contains("b2 follows a1"), "{text}");

    let directory = tempfile::tempdir().expect("tempdir");
    write_set(directory.path(), &merged(), &SCRIPTS_OF_MERGED[1..]);
    let text = MigrationSet::load(directory.path(), None)
        .expect_err("refused")
        .to_string();
    assert!(text.contains("a1.up.sql: cannot read file"), "{text}");

    std::fs::write(
        directory.path().join(MANIFEST),
        "version_table = \"alembic_version\"\nkeep_version_table = maybe\n",
    )
    .expect("write");
    let text = MigrationSet::load(directory.path(), None)
        .expect_err("refused")
        .to_string();
    assert!(text.contains(&format!("{MANIFEST}:2:")), "{text}");
    assert!(text.contains("render the Alembic project again"), "{text}");
}
