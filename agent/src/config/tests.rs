use super::*;

#[test]
fn the_shipped_example_configuration_loads() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/agent/agent.example.toml");
    let config = AgentConfig::load(&example).expect("example config is valid");
    assert_eq!(config.shards.len(), 2);
    assert_eq!(
        config.shards[0].labels.get("env").map(String::as_str),
        Some("production")
    );
    assert!(
        config.shards[0]
            .database_url
            .expose()
            .starts_with("postgres://")
    );
}

#[test]
fn several_coordinator_addresses_are_tried_in_turn() {
    let directory = tempfile::tempdir().expect("tempdir");
    let path = directory.path().join("agent.toml");
    let body = "[tls]\ncertificate = \"a.pem\"\nprivate_key = \"a.key\"\ntrust_bundle = \"ca.pem\"\n\
                [[shards]]\nid = \"s\"\ndatabase_url = \"sqlite::memory:\"\n";
    std::fs::write(
        &path,
        format!(
            "agent_id = \"a\"\n[coordinator]\naddresses = [\"https://c1.example:7443\", \"https://10.0.0.2:7443\"]\n{body}"
        ),
    )
    .expect("write");
    let link = AgentConfig::load(&path)
        .expect("valid")
        .coordinator
        .expect("a coordinator");
    let names: Vec<(&str, &str)> = link
        .endpoints
        .iter()
        .map(|endpoint| (endpoint.address.as_str(), endpoint.server_name.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("https://c1.example:7443", "c1.example"),
            ("https://10.0.0.2:7443", "10.0.0.2")
        ]
    );
    for (coordinator, complaint) in [
        ("addresses = []", "addresses is empty"),
        (
            "address = \"https://a:1\"\naddresses = [\"https://b:1\"]",
            "not both",
        ),
        ("server_name = \"x\"", "needs address"),
        (
            "address = \"https://a:1\"\nfacts_refresh = \"0s\"",
            "longer than zero",
        ),
        (
            "address = \"https://a:1\"\nfacts_refresh = \"soon\"",
            "facts_refresh",
        ),
    ] {
        std::fs::write(
            &path,
            format!("agent_id = \"a\"\n[coordinator]\n{coordinator}\n{body}"),
        )
        .expect("write");
        let error = format!("{:#}", AgentConfig::load(&path).expect_err(coordinator));
        assert!(error.contains(complaint), "{coordinator}: {error}");
    }
}

#[test]
fn the_database_outage_wait_defaults_to_two_minutes_and_is_checked() {
    let directory = tempfile::tempdir().expect("tempdir");
    let path = directory.path().join("agent.toml");
    let shards = "[[shards]]\nid = \"s\"\ndatabase_url = \"sqlite::memory:\"\n";
    std::fs::write(&path, format!("agent_id = \"a\"\n{shards}")).expect("write");
    let config = AgentConfig::load(&path).expect("valid");
    assert_eq!(config.database_outage_wait, Duration::from_secs(120));
    std::fs::write(
        &path,
        format!("agent_id = \"a\"\ndatabase_outage_wait = \"5m\"\n{shards}"),
    )
    .expect("write");
    let config = AgentConfig::load(&path).expect("valid");
    assert_eq!(config.database_outage_wait, Duration::from_secs(300));
    std::fs::write(
        &path,
        format!("agent_id = \"a\"\ndatabase_outage_wait = \"a while\"\n{shards}"),
    )
    .expect("write");
    let error = format!(
        "{:#}",
        AgentConfig::load(&path).expect_err("not a duration")
    );
    assert!(error.contains("database_outage_wait"), "{error}");
}

#[test]
fn mistakes_are_named_with_file_and_line() {
    let directory = tempfile::tempdir().expect("tempdir");
    let path = directory.path().join("agent.toml");
    std::fs::write(
        &path,
        "agent_id = \"a\"\n[[shards]]\nid = \"s\"\ndatabase_ulr = \"x\"\n",
    )
    .expect("write");
    let error = AgentConfig::load(&path).expect_err("typo").to_string();
    assert!(error.contains("agent.toml:4"), "{error}");
    std::fs::write(&path, "agent_id = \"a\"\n[[shards]]\nid = \"s\"\n").expect("write");
    let error = format!("{:#}", AgentConfig::load(&path).expect_err("no url"));
    assert!(
        error.contains("database_url_file (or database_url) is missing"),
        "{error}"
    );
}

#[test]
fn rehearsals_may_build_their_copies_on_a_staging_server_named_in_a_file() {
    let directory = tempfile::tempdir().expect("tempdir");
    let path = directory.path().join("agent.toml");
    std::fs::write(
        directory.path().join("staging.url"),
        "postgres://rehearse:secret@staging:5432/postgres\n",
    )
    .expect("write");
    let shard = "[[shards]]\nid = \"s\"\ndatabase_url = \"sqlite::memory:\"\n";
    std::fs::write(
        &path,
        format!("agent_id = \"a\"\n[rehearsals]\nstaging_url_file = \"staging.url\"\n{shard}"),
    )
    .expect("write");
    let config = AgentConfig::load(&path).expect("loads");
    let staging = config.rehearsals.staging.expect("staging");
    assert_eq!(
        staging.expose(),
        "postgres://rehearse:secret@staging:5432/postgres"
    );
    assert!(!format!("{staging:?}").contains("secret"));
    std::fs::write(
        &path,
        format!("agent_id = \"a\"\n[rehearsals]\nstaging_url = \"mysql://x\"\n{shard}"),
    )
    .expect("write");
    let error = format!("{:#}", AgentConfig::load(&path).expect_err("not postgres"));
    assert!(
        error.contains("staging_url must be a PostgreSQL URL"),
        "{error}"
    );
}

#[test]
fn throttle_replicas_come_inline_or_from_files_and_must_be_postgres() {
    let directory = tempfile::tempdir().expect("tempdir");
    let path = directory.path().join("agent.toml");
    std::fs::write(
        directory.path().join("replica.url"),
        "postgres://watch:secret@replica-2:5432/users\n",
    )
    .expect("write");
    let shard = "[[shards]]\nid = \"s\"\ndatabase_url = \"postgres://app@primary/users\"\n";
    std::fs::write(
        &path,
        format!(
            "agent_id = \"a\"\n{shard}throttle_replicas = [\"postgres://watch@replica-1/users\"]\n\
             throttle_replica_files = [\"replica.url\"]\n"
        ),
    )
    .expect("write");
    let config = AgentConfig::load(&path).expect("loads");
    let servers: Vec<String> = config.shards[0]
        .throttle_replicas
        .iter()
        .map(DatabaseUrl::server)
        .collect();
    assert_eq!(servers, ["replica-1", "replica-2:5432"]);
    std::fs::write(
        &path,
        format!("agent_id = \"a\"\n{shard}throttle_replicas = [\"sqlite:replica.db\"]\n"),
    )
    .expect("write");
    let error = format!("{:#}", AgentConfig::load(&path).expect_err("not postgres"));
    assert!(
        error.contains("throttle replica sqlite:replica.db is not a postgres:// URL"),
        "{error}"
    );
}

#[test]
fn a_shards_tls_settings_join_its_url_and_its_key_must_be_private() {
    use std::os::unix::fs::PermissionsExt;

    let directory = tempfile::tempdir().expect("tempdir");
    let path = directory.path().join("agent.toml");
    for (name, mode) in [
        ("ca.pem", 0o644),
        ("agent.pem", 0o644),
        ("agent.key", 0o600),
    ] {
        let file = directory.path().join(name);
        std::fs::write(&file, "pem").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    std::fs::write(
        directory.path().join("orders.url"),
        "postgres://fleet@db.internal:5432/orders?sslmode=verify-full\n",
    )
    .expect("write");
    std::fs::write(
        &path,
        "agent_id = \"a\"\n[[shards]]\nid = \"orders\"\ndatabase_url_file = \"orders.url\"\n\
         sslrootcert = \"ca.pem\"\nsslcert = \"agent.pem\"\nsslkey = \"agent.key\"\n",
    )
    .expect("write");
    let config = AgentConfig::load(&path).expect("loads");
    let url = config.shards[0].database_url.expose().to_owned();
    let at = |name: &str| directory.path().join(name).display().to_string();
    for expected in [
        "sslmode=verify-full".to_owned(),
        format!("sslrootcert={}", at("ca.pem").replace('/', "%2F")),
        format!("sslkey={}", at("agent.key").replace('/', "%2F")),
    ] {
        assert!(url.contains(&expected), "{expected} in {url}");
    }
    assert!(!config.shards[0].database_url.masked().contains("agent.key"));

    std::fs::set_permissions(
        directory.path().join("agent.key"),
        std::fs::Permissions::from_mode(0o640),
    )
    .expect("chmod");
    let error = format!("{:#}", AgentConfig::load(&path).expect_err("readable key"));
    assert!(
        error.contains("shard \"orders\": the sslkey file has group or world access (mode 0640)")
            && !error.contains("agent.key"),
        "{error}"
    );
}

#[test]
fn a_shards_lifecycle_defaults_to_active_and_a_wrong_one_is_named() {
    let directory = tempfile::tempdir().expect("tempdir");
    let path = directory.path().join("agent.toml");
    let write = |lifecycle: &str| {
        let text = format!(
            "agent_id = \"a\"\n[[shards]]\nid = \"t1\"\ndatabase_url = \"sqlite::memory:\"\n{lifecycle}[[shards]]\nid = \"t2\"\ndatabase_url = \"sqlite::memory:\"\n"
        );
        std::fs::write(&path, text).expect("write");
    };
    write("lifecycle = \"suspended\"\n");
    let config = AgentConfig::load(&path).expect("valid");
    assert_eq!(config.shards[0].lifecycle, ShardLifecycle::Suspended);
    assert_eq!(config.shards[1].lifecycle, ShardLifecycle::Active);
    write("lifecycle = \"paused\"\n");
    let error = format!("{:#}", AgentConfig::load(&path).expect_err("unknown"));
    assert!(
        error.contains("shard \"t1\": \"paused\" is not a shard lifecycle; use one of active, suspended, provisioning, retired"),
        "{error}"
    );
}
