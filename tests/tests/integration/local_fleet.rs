//! `deploy/local/fleet-up` and `fleet-down`, as the README tells an operator to use them: a
//! whole fleet on loopback (etcd, 3 coordinators, 2 PostgreSQL clusters with 2 shard
//! databases each, one agent per cluster, certificates from `fleetshift certs`), driven with
//! the CLI through the environment file it writes, then stopped by the PIDs it recorded.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fleetshift_tests::binary::{self, printed};
use fleetshift_tests::fixtures;
use fleetshift_tests::scrape::{metrics, sample, status};
use serde_json::Value;

use super::support::assert_exit;

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/local")
        .join(name)
}

/// Runs `fleet-down --purge` if the test ends before it does.
struct Running {
    dir: PathBuf,
    stopped: bool,
}

impl Running {
    fn down(&mut self) -> Output {
        self.stopped = true;
        Command::new(script("fleet-down"))
            .args(["--dir", self.dir.to_str().expect("path"), "--purge"])
            .output()
            .expect("fleet-down")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = self.down();
        }
    }
}

/// The `export K=V` lines of the environment file.
fn environment(file: &Path) -> HashMap<String, String> {
    std::fs::read_to_string(file)
        .expect("env file")
        .lines()
        .filter_map(|line| line.strip_prefix("export "))
        .filter_map(|line| line.split_once('='))
        .filter(|(key, _)| key.starts_with("FLEETSHIFT_"))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

async fn fleetshift(environment: &HashMap<String, String>, arguments: &[&str]) -> Output {
    let mut command = Command::new(binary::fleetshift());
    command.args(arguments).envs(environment);
    tokio::task::spawn_blocking(move || command.output().expect("fleetshift"))
        .await
        .expect("finished")
}

/// Running (a zombie nobody reaped yet has stopped).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, fields)| !fields.starts_with('Z'))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_fleet_script_starts_a_fleet_that_rolls_out_and_stops_it_by_pid() {
    let home = tempfile::tempdir().expect("home");
    let dir = home.path().join("fleet");
    // Below the ephemeral range the other tests' servers take their ports from.
    let base = 20_000 + (std::process::id() % 100) * 100;
    let bin_dir = binary::fleetshift()
        .parent()
        .expect("target dir")
        .to_path_buf();
    // Named relative to where fleet-up runs, as an operator types it.
    std::os::unix::fs::symlink(&bin_dir, home.path().join("bin")).expect("link");
    let mut running = Running {
        dir: dir.clone(),
        stopped: false,
    };
    let up = Command::new(script("fleet-up"))
        .current_dir(home.path())
        .args([
            "--dir",
            dir.to_str().expect("path"),
            "--clusters",
            "2",
            "--shards-per-cluster",
            "2",
            "--base-port",
            &base.to_string(),
            "--bin-dir",
            "bin",
        ])
        .output()
        .expect("fleet-up");
    assert!(up.status.success(), "{}", printed(&up));
    assert!(
        String::from_utf8_lossy(&up.stdout).contains("4 shards on 2 hosts"),
        "{}",
        printed(&up)
    );

    // Driven through the environment file, as the script says; its PATH holds from anywhere.
    let written = std::fs::read_to_string(dir.join("env")).expect("env file");
    let absolute = format!("export PATH={}:", home.path().join("bin").display());
    assert!(written.contains(&absolute), "{written}");
    let environment = environment(&dir.join("env"));
    let listed = fleetshift(&environment, &["shards", "--output", "json"]).await;
    assert_exit(&listed, 0);
    let shards: Value = serde_json::from_slice(&listed.stdout).expect("JSON");
    assert_eq!(
        shards["shards"].as_array().map(Vec::len),
        Some(4),
        "{shards}"
    );
    let migrations = fixtures::migrations(&[
        (
            "1_notes.up.sql",
            "CREATE TABLE notes (id bigint PRIMARY KEY);",
        ),
        ("1_notes.down.sql", "DROP TABLE notes;"),
    ]);
    let planned = fleetshift(
        &environment,
        &[
            "plan",
            migrations.path().to_str().expect("path"),
            "--require-backup",
            "--output",
            "json",
        ],
    )
    .await;
    assert_exit(&planned, 0);
    let plan = super::cli_fleet::summary(&planned)["plan"]
        .as_str()
        .expect("plan id")
        .to_owned();
    assert_exit(
        &fleetshift(&environment, &["approve", &plan, "--output", "json"]).await,
        0,
    );
    let applied = fleetshift(
        &environment,
        &["apply", &plan, "--watch", "--output", "json"],
    )
    .await;
    assert_exit(&applied, 0);

    // Every process serves its probes; one coordinator leads.
    let mut leaders = 0.0;
    for replica in 0..3 {
        let address = format!("127.0.0.1:{}", base + 20 + replica);
        assert_eq!(status(&address, "/health/readiness"), 200, "{address}");
        leaders += sample(&metrics(&address), "fleetshift_leader").unwrap_or_default();
    }
    assert_eq!(leaders, 1.0);
    for host in 1..=2 {
        let address = format!("127.0.0.1:{}", base + 39 + host);
        assert_eq!(status(&address, "/health/readiness"), 200, "{address}");
        assert!(
            sample(
                &metrics(&address),
                "fleetshift_agent_revisions_total{outcome=\"applied\"}"
            )
            .is_some_and(|applied| applied >= 2.0)
        );
    }

    // Every replica serves the web console, to alice, with the plan.
    for replica in 0..3 {
        let port = u16::try_from(base + 13 + replica).expect("port");
        let (status, body) = super::console::get(
            &dir.join("pki"),
            Some("operator-alice"),
            port,
            &format!("/api/v1/plans/{plan}"),
            &[],
        )
        .await
        .expect("console");
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("PLAN_STATE_SUCCEEDED"), "{body}");
    }
    assert!(
        String::from_utf8_lossy(&up.stdout)
            .contains(&format!("console: https://127.0.0.1:{}", base + 13)),
        "{}",
        printed(&up)
    );

    // Stopped by the PIDs it recorded: etcd, 3 coordinators, 2 postmasters, 2 agents.
    let pids: Vec<u32> = std::fs::read_to_string(dir.join("pids"))
        .expect("pids")
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1)?.parse().ok())
        .collect();
    assert_eq!(pids.len(), 8, "{pids:?}");
    assert!(pids.iter().all(|pid| alive(*pid)), "{pids:?}");
    let down = running.down();
    assert!(down.status.success(), "{}", printed(&down));
    let stopped = pids.iter().all(|pid| !alive(*pid));
    assert!(stopped, "{pids:?} still running:\n{}", printed(&down));
    assert!(!dir.exists(), "--purge removes the fleet's directory");
}
