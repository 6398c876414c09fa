//! Mutual TLS with certificates from `fleetshift certs`, over real TCP handshakes on
//! loopback: the right identity gets in; a wrong CA, an expired certificate, no client
//! certificate, no URI SAN or two of them do not.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use fleetshift_common::tls::identity::{IdentityError, Role, SpiffeId};
use fleetshift_common::tls::mtls::{self, TlsFiles};
use fleetshift_common::tls::pki::{self, LeafRequest, Validity};
use fleetshift_tests::binary;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::ServerName;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::support;

const TRUST_DOMAIN: &str = "fleet.example";

fn certs(directory: &Path, arguments: &[&str]) {
    let output = Command::new(binary::fleetshift())
        .arg("certs")
        .args(arguments)
        .args(["--dir", directory.to_str().expect("utf-8 path")])
        .output()
        .expect("run fleetshift certs");
    assert!(output.status.success(), "{}", binary::printed(&output));
}

/// A CA with a coordinator (serving localhost) and an agent, issued by the real CLI.
fn fleet_pki() -> tempfile::TempDir {
    let directory = tempfile::tempdir().expect("pki directory");
    certs(directory.path(), &["init", "--trust-domain", TRUST_DOMAIN]);
    certs(
        directory.path(),
        &[
            "issue",
            "--coordinator",
            "c1",
            "--dns",
            "localhost",
            "--ip",
            "127.0.0.1",
        ],
    );
    certs(directory.path(), &["issue", "--agent", "db-host-1"]);
    directory
}

fn files(directory: &Path, holder: &str) -> TlsFiles {
    TlsFiles {
        certificate: directory.join(format!("{holder}.pem")),
        private_key: directory.join(format!("{holder}.key")),
        trust_bundle: directory.join(pki::CA_CERTIFICATE),
    }
}

/// One connection: the server's view (the peer identity, or why the handshake or the
/// identity was refused).
async fn connect(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> Result<SpiffeId, String> {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let server_side = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|error| error.to_string())?;
        let mut stream = TlsAcceptor::from(server)
            .accept(tcp)
            .await
            .map_err(|error| format!("handshake refused: {error}"))?;
        let identity = mtls::peer_identity(stream.get_ref().1.peer_certificates())
            .map_err(|error| format!("identity refused: {error}"))?;
        stream
            .write_all(b"ok")
            .await
            .map_err(|error| error.to_string())?;
        Ok::<SpiffeId, String>(identity)
    });
    let tcp = TcpStream::connect(address).await.expect("connect");
    let server_name = ServerName::try_from("localhost").expect("server name");
    if let Ok(mut stream) = TlsConnector::from(client).connect(server_name, tcp).await {
        // TLS 1.3 verifies the client after the client finishes: wait for the server's word.
        let mut reply = [0u8; 2];
        let _ = stream.read_exact(&mut reply).await;
    }
    server_side.await.expect("server task")
}

#[tokio::test]
async fn an_agent_certificate_from_the_fleet_ca_is_accepted_with_its_identity() {
    let pki = fleet_pki();
    let server = mtls::server_config(&files(pki.path(), "coordinator-c1")).expect("server config");
    let client = mtls::client_config(&files(pki.path(), "agent-db-host-1")).expect("client config");
    let identity = connect(server, client).await.expect("accepted");
    assert_eq!(identity.role(), Role::Agent);
    assert_eq!(identity.name(), "db-host-1");
    assert_eq!(identity.trust_domain(), TRUST_DOMAIN);
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let pki = fleet_pki();
    let stranger = tempfile::tempdir().expect("other pki");
    certs(stranger.path(), &["init", "--trust-domain", TRUST_DOMAIN]);
    certs(stranger.path(), &["issue", "--agent", "db-host-1"]);
    let server = mtls::server_config(&files(pki.path(), "coordinator-c1")).expect("server config");
    let mut client_files = files(stranger.path(), "agent-db-host-1");
    client_files.trust_bundle = pki.path().join(pki::CA_CERTIFICATE);
    let client = mtls::client_config(&client_files).expect("client config");
    let refused = connect(server, client)
        .await
        .expect_err("a stranger's certificate");
    // Same CA name, different key: the chain does not verify.
    assert!(
        refused.contains("handshake refused: invalid peer certificate"),
        "{refused}"
    );
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    let pki = fleet_pki();
    let now = time::OffsetDateTime::now_utc();
    let expired = LeafRequest {
        identity: SpiffeId::new(TRUST_DOMAIN, Role::Agent, "old-host").expect("identity"),
        dns_names: Vec::new(),
        ip_addresses: Vec::new(),
        validity: Validity {
            not_before: now - time::Duration::days(30),
            not_after: now - time::Duration::days(1),
        },
    };
    pki::issue(pki.path(), &expired, false).expect("issue an expired certificate");
    let server = mtls::server_config(&files(pki.path(), "coordinator-c1")).expect("server config");
    let client = mtls::client_config(&files(pki.path(), "agent-old-host")).expect("client config");
    let refused = connect(server, client).await.expect_err("expired");
    assert!(refused.contains("certificate expired"), "{refused}");
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let pki = fleet_pki();
    let server = mtls::server_config(&files(pki.path(), "coordinator-c1")).expect("server config");
    mtls::install_crypto_provider();
    let mut roots = RootCertStore::empty();
    let ca = rustls_pki_types::CertificateDer::from_pem_file(pki.path().join(pki::CA_CERTIFICATE))
        .expect("ca");
    roots.add(ca).expect("root");
    let anonymous = Arc::new(
        ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let refused = connect(server, anonymous)
        .await
        .expect_err("no client certificate");
    assert!(refused.contains("handshake refused"), "{refused}");
}

/// Leaf certificates the CLI would never issue, signed by the fleet's own CA.
fn odd_certificate(pki: &Path, name: &str, uris: &[&str]) -> TlsFiles {
    let ca_pem = std::fs::read_to_string(pki.join(pki::CA_CERTIFICATE)).expect("ca");
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(pki.join(pki::CA_KEY)).expect("ca key"))
            .expect("key");
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, &ca_key).expect("issuer");
    let mut params =
        rcgen::CertificateParams::new(vec!["odd.fleet.example".to_owned()]).expect("params");
    for uri in uris {
        params.subject_alt_names.push(rcgen::SanType::URI(
            rcgen::string::Ia5String::try_from(*uri).expect("uri"),
        ));
    }
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = rcgen::KeyPair::generate().expect("key");
    let certificate = params.signed_by(&key, &issuer).expect("sign");
    std::fs::write(pki.join(format!("{name}.pem")), certificate.pem()).expect("write certificate");
    std::fs::write(pki.join(format!("{name}.key")), key.serialize_pem()).expect("write key");
    files(pki, name)
}

#[tokio::test]
async fn a_valid_certificate_without_exactly_one_identity_is_refused() {
    let pki = fleet_pki();
    let server = mtls::server_config(&files(pki.path(), "coordinator-c1")).expect("server config");
    let no_uri = mtls::client_config(&odd_certificate(pki.path(), "no-uri", &[])).expect("client");
    let refused = connect(Arc::clone(&server), no_uri)
        .await
        .expect_err("no URI SAN");
    assert!(
        refused.contains("identity refused") && refused.contains("no URI SAN"),
        "{refused}"
    );
    let two = odd_certificate(
        pki.path(),
        "two-uris",
        &[
            "spiffe://fleet.example/agent/a",
            "spiffe://fleet.example/operator/b",
        ],
    );
    let refused = connect(server, mtls::client_config(&two).expect("client"))
        .await
        .expect_err("two URI SANs");
    assert!(refused.contains("2 URI SANs"), "{refused}");
    let der = rustls_pki_types::CertificateDer::from_pem_file(pki.path().join("no-uri.pem"))
        .expect("der");
    assert_eq!(
        SpiffeId::from_certificate(&der),
        Err(IdentityError::NoUriSan)
    );
}

#[test]
fn issuing_for_another_trust_domain_or_without_a_ca_is_refused() {
    let pki = fleet_pki();
    let foreign = LeafRequest {
        identity: SpiffeId::new("other.example", Role::Agent, "x").expect("identity"),
        dns_names: Vec::new(),
        ip_addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        validity: Validity::days_from_now(1),
    };
    let error = pki::issue(pki.path(), &foreign, false)
        .expect_err("wrong trust domain")
        .to_string();
    assert!(
        error.contains("signs for trust domain fleet.example"),
        "{error}"
    );
    let empty = tempfile::tempdir().expect("empty");
    let output = Command::new(binary::fleetshift())
        .args([
            "certs",
            "issue",
            "--agent",
            "a",
            "--dir",
            empty.path().to_str().expect("path"),
        ])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    assert!(binary::printed(&output).contains("run `fleetshift certs init` first"));
}

#[test]
fn issuing_over_existing_files_changes_nothing_without_force() {
    use std::os::unix::fs::PermissionsExt;
    let pki = fleet_pki();
    let key_path = pki.path().join("agent-db-host-1.key");
    let certificate_path = pki.path().join("agent-db-host-1.pem");
    let key_before = std::fs::read(&key_path).expect("key");
    std::fs::remove_file(&certificate_path).expect("remove the certificate");
    let dir = pki.path().to_str().expect("path");
    let refused = Command::new(binary::fleetshift())
        .args(["certs", "issue", "--agent", "db-host-1", "--dir", dir])
        .output()
        .expect("run");
    support::assert_exit(&refused, 2);
    assert_eq!(
        std::fs::read(&key_path).expect("key"),
        key_before,
        "the key must be untouched"
    );
    assert!(!certificate_path.exists(), "nothing half-written");

    let forced = Command::new(binary::fleetshift())
        .args([
            "certs",
            "issue",
            "--agent",
            "db-host-1",
            "--force",
            "--dir",
            dir,
        ])
        .output()
        .expect("run");
    assert!(forced.status.success(), "{}", binary::printed(&forced));
    assert_ne!(std::fs::read(&key_path).expect("key"), key_before);
    assert!(certificate_path.exists());
    let mode = std::fs::metadata(&key_path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

mod reload {
    use std::time::Duration;

    use fleetshift_common::tls::reload;

    use super::*;

    /// Replaces `target` with `source` atomically (a rename), as a rotation tool would.
    fn replace(source: &Path, target: &Path) {
        let staging = target.with_extension("staging");
        std::fs::copy(source, &staging).expect("stage");
        std::fs::rename(&staging, target).expect("rename");
    }

    /// The server's files rotated to a new CA: new coordinator certificate, new trust bundle.
    fn rotate_server_to(server: &TlsFiles, new_pki: &Path) {
        replace(&new_pki.join("coordinator-c1.pem"), &server.certificate);
        replace(&new_pki.join("coordinator-c1.key"), &server.private_key);
        replace(&new_pki.join(pki::CA_CERTIFICATE), &server.trust_bundle);
    }

    /// Two fleets' PKIs, and server files that currently hold the old one's.
    struct Rotation {
        old: tempfile::TempDir,
        new: tempfile::TempDir,
        _served: tempfile::TempDir,
        server_files: TlsFiles,
    }

    fn serving_the_old_pki() -> Rotation {
        let old = fleet_pki();
        let new = fleet_pki();
        let served = tempfile::tempdir().expect("served files");
        let server_files = TlsFiles {
            certificate: served.path().join("server.pem"),
            private_key: served.path().join("server.key"),
            trust_bundle: served.path().join("bundle.pem"),
        };
        rotate_server_to(&server_files, old.path());
        Rotation {
            old,
            new,
            _served: served,
            server_files,
        }
    }

    async fn changed(receiver: &mut tokio::sync::watch::Receiver<Arc<ServerConfig>>) -> bool {
        tokio::time::timeout(Duration::from_secs(10), receiver.changed())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_rotated_ca_and_certificate_are_served_without_a_restart() {
        let Rotation {
            old,
            new,
            _served,
            server_files,
        } = serving_the_old_pki();
        let mut current = reload::watch_config(
            server_files.clone(),
            mtls::server_config,
            Duration::from_millis(100),
        )
        .await
        .expect("watch");
        let old_agent =
            mtls::client_config(&files(old.path(), "agent-db-host-1")).expect("old agent");
        let server = current.borrow_and_update().clone();
        assert!(
            connect(server, Arc::clone(&old_agent)).await.is_ok(),
            "the old CA's agent before rotation"
        );

        rotate_server_to(&server_files, new.path());
        assert!(
            changed(&mut current).await,
            "the rotation was not picked up"
        );
        let server = current.borrow_and_update().clone();
        let mut stale_agent_files = files(old.path(), "agent-db-host-1");
        stale_agent_files.trust_bundle = new.path().join(pki::CA_CERTIFICATE);
        let stale_agent = mtls::client_config(&stale_agent_files).expect("stale agent");
        assert!(
            connect(Arc::clone(&server), stale_agent).await.is_err(),
            "the old CA is no longer trusted"
        );
        let new_agent =
            mtls::client_config(&files(new.path(), "agent-db-host-1")).expect("new agent");
        assert!(
            connect(server, new_agent).await.is_ok(),
            "the new CA's agent after rotation"
        );
    }

    #[tokio::test]
    async fn a_broken_rotation_keeps_the_previous_configuration_and_a_fix_is_picked_up() {
        let Rotation {
            old,
            new,
            _served,
            server_files,
        } = serving_the_old_pki();
        let mut current = reload::watch_config(
            server_files.clone(),
            mtls::server_config,
            Duration::from_millis(100),
        )
        .await
        .expect("watch");
        current.borrow_and_update();

        std::fs::write(&server_files.certificate, "not a certificate")
            .expect("break the certificate");
        assert!(
            tokio::time::timeout(Duration::from_millis(800), current.changed())
                .await
                .is_err(),
            "a broken configuration must not be published"
        );
        let old_agent =
            mtls::client_config(&files(old.path(), "agent-db-host-1")).expect("old agent");
        assert!(
            connect(current.borrow().clone(), old_agent).await.is_ok(),
            "still serving the previous configuration"
        );

        rotate_server_to(&server_files, new.path());
        assert!(
            changed(&mut current).await,
            "the fixed files were not picked up"
        );
        let new_agent =
            mtls::client_config(&files(new.path(), "agent-db-host-1")).expect("new agent");
        assert!(
            connect(current.borrow_and_update().clone(), new_agent)
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn sighup_reloads_at_once() {
        let Rotation {
            old: _old,
            new,
            _served,
            server_files,
        } = serving_the_old_pki();
        // Polling an hour apart: only the signal can explain a prompt reload.
        let mut current = reload::watch_config(
            server_files.clone(),
            mtls::server_config,
            Duration::from_secs(3600),
        )
        .await
        .expect("watch");
        current.borrow_and_update();
        rotate_server_to(&server_files, new.path());
        let hangup = Command::new("kill")
            .args(["-HUP", &std::process::id().to_string()])
            .status()
            .expect("send SIGHUP");
        assert!(hangup.success());
        assert!(changed(&mut current).await, "SIGHUP did not reload");
    }
}
