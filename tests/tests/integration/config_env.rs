//! Every key of the agent's and the coordinator's configuration files can be set from the
//! environment: each file's keys (as its loader names them when it meets an unknown one) have a
//! variable, every variable is documented, and a real agent runs `check` on a configuration
//! given by the environment alone over an empty file.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use fleetshift_agent::config::{AgentConfig, environment as agent_environment};
use fleetshift_common::config_file::{ConfigError, EnvKey};
use fleetshift_coordinator::config::{CoordinatorConfig, environment as coordinator_environment};
use fleetshift_tests::binary;

/// The keys a section accepts, read from the loader's refusal of an unknown one.
fn accepted_keys(load: &dyn Fn(&Path) -> Result<(), ConfigError>, section: &str) -> Vec<String> {
    let directory = tempfile::tempdir().expect("dir");
    let path = directory.path().join("config.toml");
    let text = if section.is_empty() {
        "zz_unknown = 1\n".to_owned()
    } else {
        format!("[{section}]\nzz_unknown = 1\n")
    };
    std::fs::write(&path, text).expect("write");
    let refused = load(&path).expect_err("an unknown key").to_string();
    let listed = refused
        .split_once("expected one of ")
        .or_else(|| refused.split_once("expected "))
        .unwrap_or_else(|| panic!("no list of keys in {refused}"))
        .1;
    listed
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// Every key path of a file whose tables are `sections`, each with its variable in `keys`.
fn assert_every_key_has_a_variable(
    load: &dyn Fn(&Path) -> Result<(), ConfigError>,
    sections: &[&str],
    keys: &[EnvKey],
) {
    let covered: BTreeSet<Vec<String>> = keys
        .iter()
        .map(|key| key.path.iter().map(|part| (*part).to_owned()).collect())
        .collect();
    for top in accepted_keys(load, "") {
        if sections.contains(&top.as_str()) {
            for inner in accepted_keys(load, &top) {
                let path = vec![top.clone(), inner];
                assert!(covered.contains(&path), "no variable sets {path:?}");
            }
        } else {
            assert!(
                covered.contains(&vec![top.clone()]),
                "no variable sets {top}"
            );
        }
    }
}

#[test]
fn every_key_has_a_variable_and_every_variable_is_documented() {
    let agent = |path: &Path| AgentConfig::load(path).map(drop);
    assert_every_key_has_a_variable(
        &agent,
        &["coordinator", "tls", "backups", "rehearsals"],
        agent_environment::KEYS,
    );
    let coordinator = |path: &Path| CoordinatorConfig::load(path).map(drop);
    assert_every_key_has_a_variable(
        &coordinator,
        &["tls", "store", "roles", "limits"],
        coordinator_environment::KEYS,
    );
    let documented = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md"),
    )
    .expect("docs");
    for key in agent_environment::KEYS
        .iter()
        .chain(coordinator_environment::KEYS)
    {
        assert!(
            documented.contains(&format!("`{}`", key.variable)),
            "{} is not in docs/configuration.md",
            key.variable
        );
    }
}

#[test]
fn an_agent_configured_by_the_environment_alone_checks_its_shard() {
    let home = tempfile::tempdir().expect("home");
    let config = home.path().join("agent.toml");
    std::fs::write(&config, "").expect("an empty file");
    let database = home.path().join("cache.db");
    let output = Command::new(binary::agent())
        .args(["--config", config.to_str().expect("path"), "check", "--output", "json"])
        .env("FLEETSHIFT_AGENT_ID", "env-host")
        .env(
            "FLEETSHIFT_AGENT_SHARDS",
            format!(
                "[{{ id = \"cache\", labels = {{ env = \"test\" }}, database_url = \"sqlite:{}?mode=rwc\" }}]",
                database.display()
            ),
        )
        .env("FLEETSHIFT_AGENT_DATABASE_OUTAGE_WAIT", "10s")
        .output()
        .expect("run the agent");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        binary::printed(&output)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(report["shards"][0]["id"], "cache", "{report:#}");

    let wrong = Command::new(binary::agent())
        .args(["--config", config.to_str().expect("path"), "check"])
        .env("FLEETSHIFT_AGENT_ID", "env-host")
        .env("FLEETSHIFT_AGENT_SHARDS", "[{ id = \"cache\"")
        .output()
        .expect("run the agent");
    assert_eq!(wrong.status.code(), Some(2), "{}", binary::printed(&wrong));
    assert!(
        binary::printed(&wrong).contains("environment FLEETSHIFT_AGENT_SHARDS: not a TOML value"),
        "{}",
        binary::printed(&wrong)
    );
}
