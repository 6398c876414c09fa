//! dbmate: Supabase's history (loaded and linted) and Fluidity's (applied).

use fleetshift_common::engine::ShardEngine;
use fleetshift_common::ledger::RevisionStatus;
use fleetshift_common::source::{MigrationSet, SourceFormat};
use fleetshift_tests::{binary, fixtures};

use super::{lint_report, postgres_tables};
use crate::integration::support::{self, Database};

#[test]
fn supabases_dbmate_history_loads_and_lints_as_it_is() {
    let directory = fixtures::supabase();
    let set = MigrationSet::load(&directory, None).expect("Supabase's history loads as it is");
    assert_eq!(set.format, SourceFormat::Dbmate);
    assert_eq!(set.revisions.len(), 30);
    assert_eq!(set.revisions[0].version.as_str(), "10000000000000");
    assert!(
        set.revisions.iter().all(|revision| revision.down.is_none()),
        "every down section is empty"
    );
    let report = lint_report(&directory, 0);
    assert_eq!(report["revisions"], 30, "{report}");
    assert_eq!(
        report["problems"].as_array().map(Vec::len),
        Some(0),
        "{report}"
    );
}

#[tokio::test]
async fn fluiditys_dbmate_history_goes_up_and_its_reversible_revisions_down_on_postgres() {
    let directory = fixtures::fluidity();
    let set = MigrationSet::load(&directory, None).expect("Fluidity's history loads as it is");
    assert_eq!(set.format, SourceFormat::Dbmate);
    assert_eq!(set.revisions.len(), 31);
    let first = &set.revisions[0];
    assert_eq!(
        (first.version.as_str(), first.name.as_str()),
        ("20220701151154", "numeric"),
        "dbmate's version is the leading digits, whatever separates the name"
    );
    // Four down sections only say "there's no good way to remove enum variants".
    let irreversible = set
        .revisions
        .iter()
        .filter(|revision| revision.down.is_none())
        .count();
    assert_eq!(irreversible, 4);
    let report = lint_report(&directory, 0);
    assert_eq!(
        report["problems"].as_array().map(Vec::len),
        Some(0),
        "{report}"
    );
    let path = directory.to_str().expect("UTF-8 path");

    let Database {
        cluster: _cluster,
        url,
        admin,
    } = support::database("fluidity").await;
    let up = binary::run(&url, &["migrate", "up", "--dir", path]);
    assert!(up.status.success(), "{}", binary::printed(&up));
    let shard = support::postgres(&url).await;
    assert_eq!(shard.read_ledger().await.expect("ledger").len(), 31);
    let tables = postgres_tables(&admin).await;
    assert!(
        tables.iter().any(|name| name == "faucet_users"),
        "{tables:?}"
    );

    // Back to the start is refused naming the enum revisions, before anything is reverted;
    // the newest revision goes down with its real down section.
    let refused = binary::run(&url, &["migrate", "down", "--to", "base", "--dir", path]);
    support::assert_exit(&refused, 2);
    assert!(
        binary::printed(&refused).contains("20220704151154_arbitrum-network"),
        "{}",
        binary::printed(&refused)
    );
    let down = binary::run(&url, &["migrate", "down", "--dir", path]);
    assert!(down.status.success(), "{}", binary::printed(&down));
    let ledger = shard.read_ledger().await.expect("ledger");
    let reverted: Vec<&str> = ledger
        .iter()
        .filter(|entry| entry.status == RevisionStatus::Reverted)
        .map(|entry| entry.version.as_str())
        .collect();
    assert_eq!(reverted, ["20240318191548"]);
}
