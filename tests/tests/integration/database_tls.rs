//! TLS to the databases, against a real PostgreSQL with `ssl = on` whose `pg_hba.conf` takes
//! only client certificates over TCP (`hostssl … cert`): a rollout with a verified backup and a
//! restore test succeeds on a shard configured with `sslmode = verify-full` and its files (the
//! agent's own connections and `pg_dump`/`pg_restore`/`psql` alike); a wrong CA, a name the
//! server's certificate does not carry, no client certificate, and a missing key each fail
//! naming the shard and what to check; neither the password nor the key's path is ever logged.

use std::path::{Path, PathBuf};
use std::process::Command;

use fleetshift_testkit::postgres::{LocalPostgres, ServerTls};
use fleetshift_tests::{binary, fixtures};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use sqlx::PgPool;

use crate::integration::cli_fleet::CliFleet;
use crate::integration::support::{self, assert_exit};

/// A password in every shard URL: client certificates authenticate, so it is never needed,
/// and it must never be printed.
const CANARY: &str = "canary-7c1e";

/// A certificate authority for the test.
struct Authority {
    pem: String,
    key: KeyPair,
}

impl Authority {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("key");
        let pem = params.self_signed(&key).expect("self-signed").pem();
        Self { pem, key }
    }

    /// A certificate and its key for `common_name`, naming `dns` hosts.
    fn leaf(
        &self,
        common_name: &str,
        dns: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) -> (String, String) {
        let issuer = Issuer::from_ca_cert_pem(&self.pem, &self.key).expect("issuer");
        let mut params = CertificateParams::new(
            dns.iter()
                .map(|name| (*name).to_owned())
                .collect::<Vec<_>>(),
        )
        .expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("key");
        let certificate = params.signed_by(&key, &issuer).expect("sign");
        (certificate.pem(), key.serialize_pem())
    }
}

/// Writes `text` to `directory/name` with `mode`; its path.
fn written(directory: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let path = directory.join(name);
    std::fs::write(&path, text).expect("write");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .expect("chmod");
    path
}

/// The files an agent connects with: the fleet's database CA, another CA, and its client
/// certificate (CN `fleet`, the database user) with its key.
struct AgentFiles {
    _directory: tempfile::TempDir,
    ca: PathBuf,
    other_ca: PathBuf,
    certificate: PathBuf,
    key: PathBuf,
}

/// A `[[shards]]` table for `database` on `host`, with `tls` lines after its URL.
fn shard_table(id: &str, host: &str, port: u16, tls: &str) -> String {
    format!(
        "[[shards]]\nid = \"{id}\"\nlabels = {{ tls = \"on\" }}\ndatabase_url = \"postgres://fleet:{CANARY}@{host}:{port}/orders\"\n{tls}"
    )
}

fn tls_lines(mode: &str, ca: &Path, client: Option<(&Path, &Path)>) -> String {
    let mut lines = format!("sslmode = \"{mode}\"\nsslrootcert = \"{}\"\n", ca.display());
    if let Some((certificate, key)) = client {
        lines.push_str(&format!(
            "sslcert = \"{}\"\nsslkey = \"{}\"\n",
            certificate.display(),
            key.display()
        ));
    }
    lines
}

async fn secure_server() -> (LocalPostgres, AgentFiles) {
    let directory = tempfile::tempdir().expect("dir");
    let ca = Authority::new("fleet databases");
    let (server_certificate, server_key) = ca.leaf(
        "localhost",
        &["localhost"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client_certificate, client_key) =
        ca.leaf("fleet", &[], ExtendedKeyUsagePurpose::ClientAuth);
    let files = AgentFiles {
        ca: written(directory.path(), "ca.pem", &ca.pem, 0o644),
        other_ca: written(
            directory.path(),
            "other-ca.pem",
            &Authority::new("someone else").pem,
            0o644,
        ),
        certificate: written(directory.path(), "agent.pem", &client_certificate, 0o644),
        key: written(directory.path(), "agent.key", &client_key, 0o600),
        _directory: directory,
    };
    let cluster = LocalPostgres::start_with_tls(&ServerTls {
        certificate: server_certificate,
        private_key: server_key,
        client_ca: ca.pem.clone(),
    })
    .expect("a PostgreSQL with TLS");
    let admin = PgPool::connect(&cluster.socket_url("postgres"))
        .await
        .expect("socket");
    for statement in [
        "CREATE ROLE fleet LOGIN SUPERUSER",
        "CREATE DATABASE orders OWNER fleet",
    ] {
        sqlx::raw_sql(statement)
            .execute(&admin)
            .await
            .expect("role and database");
    }
    admin.close().await;
    let orders = PgPool::connect(&cluster.socket_url("orders"))
        .await
        .expect("socket");
    sqlx::raw_sql("CREATE TABLE accounts (id int PRIMARY KEY); INSERT INTO accounts VALUES (1);")
        .execute(&orders)
        .await
        .expect("schema");
    orders.close().await;
    (cluster, files)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_behind_client_certificates_roll_out_with_backups_and_bad_settings_say_why() {
    let (cluster, files) = secure_server().await;
    let binaries = cluster.binaries();
    let sections = format!(
        "[backups]\ndirectory = \"backups\"\npg_dump = \"{}\"\npg_restore = \"{}\"\npsql = \"{}\"\n{}",
        binaries.join("pg_dump").display(),
        binaries.join("pg_restore").display(),
        binaries.join("psql").display(),
        shard_table(
            "secure",
            "localhost",
            cluster.port,
            &tls_lines(
                "verify-full",
                &files.ca,
                Some((&files.certificate, &files.key))
            )
        )
    );
    let fleet = CliFleet::start("tls_neighbour", "SELECT 1", move |_| sections.clone()).await;
    let migrations = fixtures::migrations(&[
        (
            "1_email.up.sql",
            "ALTER TABLE accounts ADD COLUMN email text;",
        ),
        (
            "1_email.down.sql",
            "ALTER TABLE accounts DROP COLUMN email;",
        ),
    ]);
    let (_, applied) = fleet
        .cli
        .planned_and_applied(&[
            support::dir(&migrations),
            "--selector",
            "tls=on",
            "--require-backup",
            "--restore-test",
        ])
        .await;
    assert_exit(&applied, 0);
    let orders = PgPool::connect(&cluster.socket_url("orders"))
        .await
        .expect("socket");
    let email: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT FROM information_schema.columns WHERE table_name = 'accounts' AND column_name = 'email')",
    )
    .fetch_one(&orders)
    .await
    .expect("columns");
    assert!(email, "the revision ran over TLS");

    // Bad settings, each on its own shard: `check` names each and what to look at.
    let home = fleet.home.path();
    let bad = [
        shard_table(
            "wrong-ca",
            "localhost",
            cluster.port,
            &tls_lines(
                "verify-full",
                &files.other_ca,
                Some((&files.certificate, &files.key)),
            ),
        ),
        shard_table(
            "wrong-name",
            "127.0.0.1",
            cluster.port,
            &tls_lines(
                "verify-full",
                &files.ca,
                Some((&files.certificate, &files.key)),
            ),
        ),
        shard_table(
            "no-certificate",
            "localhost",
            cluster.port,
            &tls_lines("verify-full", &files.ca, None),
        ),
    ];
    let config = written(
        home,
        "bad.toml",
        &format!("agent_id = \"bad\"\n{}", bad.concat()),
        0o644,
    );
    let checked = Command::new(binary::agent())
        .args([
            "--config",
            config.to_str().expect("path"),
            "check",
            "--output",
            "json",
        ])
        .output()
        .expect("check");
    assert_exit(&checked, 6);
    let report = support::json(&checked);
    let error = |shard: &str| -> String {
        report["shards"]
            .as_array()
            .and_then(|shards| shards.iter().find(|report| report["id"] == shard))
            .and_then(|report| report["error"].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let port = cluster.port;
    for (shard, says) in [
        (
            format!("shard wrong-ca (localhost:{port})"),
            "TLS: the server's certificate is not signed by a CA in sslrootcert (unknown issuer); check sslrootcert",
        ),
        (
            format!("shard wrong-name (127.0.0.1:{port})"),
            "TLS: the server's certificate does not name the host connected to",
        ),
        (
            format!("shard no-certificate (localhost:{port})"),
            "TLS: the server takes only client certificates: set sslcert and sslkey",
        ),
    ] {
        let id = shard["shard ".len()..]
            .split(' ')
            .next()
            .unwrap_or_default();
        let error = error(id);
        assert!(
            error.starts_with(&shard) && error.contains(says),
            "{id}: {error}"
        );
    }

    // A key that is not there: the configuration is refused, naming the shard.
    let missing = written(
        home,
        "missing.toml",
        &format!(
            "agent_id = \"bad\"\n{}",
            shard_table(
                "keyless",
                "localhost",
                cluster.port,
                &tls_lines(
                    "verify-full",
                    &files.ca,
                    Some((&files.certificate, &home.join("gone.key")))
                )
            )
        ),
        0o644,
    );
    let refused = Command::new(binary::agent())
        .args(["--config", missing.to_str().expect("path"), "check"])
        .output()
        .expect("check");
    let said = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert!(!refused.status.success());
    assert!(
        said.contains("shard \"keyless\": the sslkey file cannot be read"),
        "{said}"
    );

    let printed = [
        std::fs::read_to_string(home.join("agent.log")).unwrap_or_default(),
        std::fs::read_to_string(home.join("replica.log")).unwrap_or_default(),
        String::from_utf8_lossy(&checked.stdout).into_owned(),
        String::from_utf8_lossy(&checked.stderr).into_owned(),
        said,
    ]
    .concat();
    for secret in [CANARY, "agent.key", "gone.key"] {
        assert!(
            !printed.contains(secret),
            "{secret} was printed:\n{printed}"
        );
    }
}
