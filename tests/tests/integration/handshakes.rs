//! Refused TLS handshakes with a coordinator, told as such: the real CLI and a real agent
//! process against a coordinator replica over mutual TLS, each given a certificate or a trust
//! bundle from another CA, a certificate past its validity, or the wrong server name. Each
//! says which side refused whose certificate, why, and which of its settings to check, instead
//! of "transport error".

use std::path::{Path, PathBuf};
use std::time::Duration;

use fleetshift_common::tls::identity::{Role, SpiffeId};
use fleetshift_common::tls::pki::{self, LeafRequest, Validity};
use fleetshift_coordinator::authz::{OperatorRole, Roles};
use fleetshift_tests::binary;
use fleetshift_tests::fleet::{
    InProcessCoordinator, Process, TRUST_DOMAIN, agent_config_text, init_pki, issue,
};
use fleetshift_tests::wait::wait_until;

/// `fleetshift shards` as an operator with these files (and `extra` arguments).
fn shards(
    coordinator: &str,
    certificate: &Path,
    key: &Path,
    trust_bundle: &Path,
    extra: &[&str],
) -> std::process::Output {
    std::process::Command::new(binary::fleetshift())
        .arg("shards")
        .args(extra)
        .env("FLEETSHIFT_COORDINATOR", coordinator)
        .env("FLEETSHIFT_TLS_CERT", certificate)
        .env("FLEETSHIFT_TLS_KEY", key)
        .env("FLEETSHIFT_TLS_CA", trust_bundle)
        .output()
        .expect("run fleetshift")
}

fn holder(pki: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        pki.join(format!("{name}.pem")),
        pki.join(format!("{name}.key")),
    )
}

/// An operator certificate of the fleet's CA that expired yesterday.
fn expired_operator(pki: &Path) {
    let now = time::OffsetDateTime::now_utc();
    let request = LeafRequest {
        identity: SpiffeId::new(TRUST_DOMAIN, Role::Operator, "former").expect("identity"),
        dns_names: Vec::new(),
        ip_addresses: Vec::new(),
        validity: Validity {
            not_before: now - time::Duration::days(30),
            not_after: now - time::Duration::days(1),
        },
    };
    pki::issue(pki, &request, false).expect("expired certificate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cli_told_no_says_which_side_refused_and_which_setting_to_check() {
    let mut roles = Roles::default();
    roles.grant("alice", OperatorRole::Viewer);
    roles.grant("former", OperatorRole::Viewer);
    let fleet = InProcessCoordinator::start(roles, &[], &["alice"]).await;
    let pki = fleet.pki();
    expired_operator(&pki);
    let stranger = tempfile::tempdir().expect("another CA");
    init_pki(stranger.path());
    issue(stranger.path(), Role::Operator, "alice", &[]);
    let address = format!("https://localhost:{}", fleet.address.port());
    let ca = pki.join(pki::CA_CERTIFICATE);
    let (certificate, key) = holder(&pki, "operator-alice");

    let fine = shards(&address, &certificate, &key, &ca, &[]);
    assert_eq!(fine.status.code(), Some(0), "{}", binary::printed(&fine));

    let cases: Vec<(&str, std::process::Output, Vec<&str>)> = vec![
        (
            "a trust bundle of another CA",
            shards(
                &address,
                &certificate,
                &key,
                &stranger.path().join(pki::CA_CERTIFICATE),
                &[],
            ),
            vec![
                "this side refused the coordinator's certificate",
                "unknown issuer",
                "FLEETSHIFT_TLS_CA",
            ],
        ),
        (
            "a certificate of another CA",
            {
                let (certificate, key) = holder(stranger.path(), "operator-alice");
                shards(&address, &certificate, &key, &ca, &[])
            },
            vec![
                "the coordinator refused this side's certificate",
                "FLEETSHIFT_TLS_CERT",
            ],
        ),
        (
            "an expired certificate",
            {
                let (certificate, key) = holder(&pki, "operator-former");
                shards(&address, &certificate, &key, &ca, &[])
            },
            vec![
                "refused this side's certificate: it has expired",
                "FLEETSHIFT_TLS_CERT",
            ],
        ),
        (
            "the wrong server name",
            shards(
                &address,
                &certificate,
                &key,
                &ca,
                &["--server-name", "elsewhere.example"],
            ),
            vec!["not valid for the name elsewhere.example", "--server-name"],
        ),
    ];
    for (case, output, expected) in cases {
        let printed = binary::printed(&output);
        assert_eq!(output.status.code(), Some(6), "{case}: {printed}");
        for words in expected {
            assert!(printed.contains(words), "{case}: {words:?} in {printed}");
        }
        assert!(!printed.contains("transport error"), "{case}: {printed}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_with_another_cas_bundle_logs_why_it_cannot_connect() {
    let fleet = InProcessCoordinator::start(Roles::default(), &["db-host-1"], &[]).await;
    let home = fleet.home.path();
    let stranger = home.join("stranger");
    init_pki(&stranger);
    let shard = format!(
        "[[shards]]\nid = \"cache\"\ndatabase_url = \"sqlite:{}\"\n",
        home.join("cache.db").display()
    );
    let config = agent_config_text("db-host-1", &[fleet.address.port()], &shard)
        .replace("pki/ca.pem", "stranger/ca.pem");
    let config_path = home.join("agent.toml");
    std::fs::write(&config_path, config).expect("agent config");
    let log = home.join("agent.log");
    let _agent = Process::spawn(
        &binary::agent(),
        &["--config", config_path.to_str().expect("path"), "run"],
        &log,
    );
    let explained = wait_until(Duration::from_secs(20), || async {
        std::fs::read_to_string(&log).is_ok_and(|text| {
            text.contains("unknown issuer") && text.contains("[tls] trust_bundle")
        })
    })
    .await;
    assert!(
        explained,
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}
