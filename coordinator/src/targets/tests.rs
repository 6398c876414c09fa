//! Setting targets: the terms checked as a plan's, the version resolved, approvals kept only
//! while the goal stays the same.

use std::collections::HashMap;

use fleetshift_common::proto::v1::{CreatePlanRequest, SetTargetRequest, TargetApproval};
use fleetshift_common::shipped;

use super::*;
use crate::store::MemoryStore;

/// A packed set of `count` revisions (`1_t1.sql` … each creating a table).
pub(super) fn packed(count: usize) -> v1::MigrationSet {
    let directory = tempfile::tempdir().expect("tempdir");
    for index in 1..=count {
        std::fs::write(
            directory.path().join(format!("{index}_t{index}.sql")),
            format!("CREATE TABLE t{index} (id bigint PRIMARY KEY);\n"),
        )
        .expect("write");
    }
    let set = fleetshift_common::source::MigrationSet::load(directory.path(), None).expect("set");
    shipped::pack(&set).expect("pack")
}

/// A request for target `name` over `tier=gold` to `version` of `set`.
pub(super) fn request(name: &str, set: &v1::MigrationSet, version: &str) -> SetTargetRequest {
    SetTargetRequest {
        name: name.to_owned(),
        terms: Some(CreatePlanRequest {
            migration_set: Some(set.clone()),
            target_version: version.to_owned(),
            selector: HashMap::from([("tier".to_owned(), "gold".to_owned())]),
            ..CreatePlanRequest::default()
        }),
    }
}

#[tokio::test]
async fn a_target_is_checked_resolved_and_stored_without_its_files() {
    let store = MemoryStore::new();
    let set = packed(3);
    let target = super::set(&store, request("main", &set, ""), "alice")
        .await
        .expect("set");
    assert_eq!(version(&target), "3", "the set's newest");
    assert_eq!(target.versions, ["1", "2", "3"]);
    assert_eq!(digest(&target), set.digest);
    let stored = load(&store, "main").await.expect("load").expect("stored");
    let shipped = stored.target.terms.and_then(|terms| terms.migration_set);
    assert!(shipped.is_some_and(|set| set.files.is_empty()));
    let saved = records::load_set(&store, &set.digest)
        .await
        .expect("set saved");
    assert_eq!(saved.files.len(), 3);

    let refused = super::set(&store, request("main", &set, "7"), "alice")
        .await
        .expect_err("no version 7");
    assert!(
        refused
            .to_string()
            .contains("target version 7 is not in the migration set"),
        "{refused}"
    );
    for name in ["", "a/b", "x y"] {
        let refused = super::set(&store, request(name, &set, ""), "alice")
            .await
            .expect_err("bad name");
        assert!(refused.to_string().contains("target name"), "{refused}");
    }
}

#[tokio::test]
async fn approvals_carry_over_only_while_the_goal_is_the_same() {
    let store = MemoryStore::new();
    let set = packed(3);
    super::set(&store, request("main", &set, "2"), "alice")
        .await
        .expect("set");
    // As the leader records an approved plan.
    let mut record = load(&store, "main").await.expect("load").expect("stored");
    record.target.approved.push(TargetApproval {
        from_version: String::new(),
        plan_id: "p1".to_owned(),
        approvals: Vec::new(),
    });
    store
        .commit(
            None,
            &[],
            &[Write::put(
                keys::target("main"),
                record.target.encode_to_vec(),
            )],
        )
        .await
        .expect("record");
    let again = super::set(&store, request("main", &set, "2"), "bob")
        .await
        .expect("same goal");
    assert_eq!(again.approved.len(), 1);
    let moved = super::set(&store, request("main", &set, "3"), "bob")
        .await
        .expect("new goal");
    assert!(
        moved.approved.is_empty(),
        "a new version needs approval again"
    );
    assert_eq!(load_all(&store).await.expect("all").len(), 1);
    let removed = remove(&store, "main").await.expect("remove");
    assert_eq!(removed.name, "main");
    let gone = remove(&store, "main").await.expect_err("gone");
    assert!(gone.to_string().contains("no fleet target main"), "{gone}");
}
