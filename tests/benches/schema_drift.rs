//! `fleetshift schema drift` over a large fleet, from stored fingerprints: a coordinator replica
//! on a real etcd holds the announcements of simulated agents (SHARDS shards, 10 per agent, one
//! in fifty hand-edited, each snapshot of 1,800 objects stored once by fingerprint), and the
//! release CLI asks it over mutual TLS. Against, in the same run, `fleetshift shards` over the
//! same fleet (the listing alone); rounds alternate which goes first.
//!
//! `cargo build --release --bins && cargo bench -p fleetshift-tests --bench schema_drift [--
//! ROUNDS SHARDS]` (default 5 rounds, 1,000 shards). Target: under 1 s.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fleetshift_common::proto::v1::{Hello, ShardFacts};
use fleetshift_common::schema::{ObjectKind, Snapshot, attributes, wire};
use fleetshift_coordinator::authz::{OperatorRole, Roles};
use fleetshift_coordinator::schemas;
use fleetshift_coordinator::store::Store;
use fleetshift_tests::fleet::{InProcessCoordinator, fleetshift_as};
use prost::Message;

const PER_AGENT: usize = 10;

fn main() -> anyhow::Result<()> {
    let [rounds, shards] = fleetshift_tests::bench::numbers(["ROUNDS", "SHARDS"], [5, 1000])?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(measure(rounds, shards))
}

/// A schema of 200 tables with 9 objects each; `drifted` adds one index.
fn schema(drifted: bool) -> Snapshot {
    let mut snapshot = Snapshot::default();
    for table in 0..200 {
        let name = format!("public.t{table}");
        snapshot.insert(
            ObjectKind::Table,
            &name,
            attributes([("kind", "table".to_owned())]),
        );
        for column in ["id", "name", "at", "parent", "note"] {
            snapshot.insert(
                ObjectKind::Column,
                format!("{name}.{column}"),
                attributes([("type", "text".to_owned())]),
            );
        }
        for index in ["pkey", "name", "at"] {
            snapshot.insert(
                ObjectKind::Index,
                format!("public.t{table}_{index}"),
                attributes([(
                    "definition",
                    format!("CREATE INDEX t{table}_{index} ON {name} USING btree ({index})"),
                )]),
            );
        }
    }
    if drifted {
        snapshot.insert(
            ObjectKind::Index,
            "public.t7_hotfix",
            attributes([(
                "definition",
                "CREATE INDEX t7_hotfix ON public.t7 USING btree (note)".to_owned(),
            )]),
        );
    }
    snapshot
}

async fn measure(rounds: usize, shards: usize) -> anyhow::Result<()> {
    let agents: Vec<String> = (0..shards.div_ceil(PER_AGENT))
        .map(|agent| format!("sim-{agent:04}"))
        .collect();
    let mut roles = Roles::default();
    roles.grant("alice", OperatorRole::Viewer);
    let fleet = InProcessCoordinator::start(roles, &[], &["alice"]).await;
    let (calm, edited) = (schema(false), schema(true));
    let (calm_print, edited_print) = (calm.fingerprint(), edited.fingerprint());
    let lease = fleet.store.grant_lease(Duration::from_secs(600)).await?;
    let started = Instant::now();
    for (number, agent) in agents.iter().enumerate() {
        let mut facts: Vec<ShardFacts> = (0..PER_AGENT)
            .map(|index| number * PER_AGENT + index)
            .take_while(|shard| *shard < shards)
            .map(|shard| {
                let (snapshot, fingerprint) = if shard % 50 == 49 {
                    (&edited, &edited_print)
                } else {
                    (&calm, &calm_print)
                };
                ShardFacts {
                    shard_id: format!("users-{shard:05}"),
                    current_version: "42".to_owned(),
                    reachable: true,
                    schema_fingerprint: fingerprint.to_string(),
                    schema_snapshot: wire::pack(snapshot),
                    ..ShardFacts::default()
                }
            })
            .collect();
        // What a replica does with a Hello: keep the snapshots, store the facts.
        schemas::keep(fleet.store.as_ref(), agent, &mut facts).await?;
        let hello = Hello {
            agent_id: agent.clone(),
            shards: facts,
            ..Hello::default()
        };
        fleet
            .store
            .announce_agent(agent, &hello.encode_to_vec(), lease)
            .await?;
    }
    println!(
        "announced {shards} shards from {} simulated agents in {:.1?} ({} objects per schema)",
        agents.len(),
        started.elapsed(),
        calm.len()
    );
    let address = format!("https://localhost:{}", fleet.address.port());
    let pki = fleet.home.path().join("pki");
    let timed = |arguments: &'static [&'static str], expected: i32| {
        let (address, pki) = (address.clone(), pki.clone());
        async move {
            let started = Instant::now();
            let output = fleetshift_as(&address, &pki, "operator-alice", arguments).await;
            let took = started.elapsed();
            if output.status.code() != Some(expected) {
                bail!(
                    "fleetshift {arguments:?} exited {:?}: {}",
                    output.status.code(),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            Ok::<_, anyhow::Error>((took, output.stdout))
        }
    };
    let (mut drifts, mut listings) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let drift = timed(&["schema", "drift", "--output", "json"], 3);
        let listing = timed(&["shards", "--output", "json"], 0);
        let ((drift, report), (listing, _)) = if round % 2 == 0 {
            let drift = drift.await?;
            (drift, listing.await?)
        } else {
            let listing = listing.await?;
            (drift.await?, listing)
        };
        let report: serde_json::Value = serde_json::from_slice(&report).context("drift JSON")?;
        let outliers = report["versions"][0]["outliers"]
            .as_array()
            .map_or(0, Vec::len);
        if outliers != shards / 50 {
            bail!(
                "expected {} drifted shards, the report has {outliers}",
                shards / 50
            );
        }
        println!(
            "round {round}: schema drift {drift:.3?} ({outliers} outliers), shards {listing:.3?}"
        );
        drifts.push(drift);
        listings.push(listing);
    }
    drifts.sort();
    listings.sort();
    let (drift, listing) = (drifts[rounds / 2], listings[rounds / 2]);
    println!(
        "median: schema drift {drift:.3?}, shards {listing:.3?}; drift/shards {:.2}x ({shards} shards)",
        drift.as_secs_f64() / listing.as_secs_f64()
    );
    Ok(())
}
