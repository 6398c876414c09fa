//! Throwaway PostgreSQL clusters on loopback, for `fleetshift demo --postgres` and the test
//! suite: `initdb` into a temporary directory (as the `postgres` OS user when running as root),
//! started on a free port with durability off, stopped and deleted on drop; and hot standbys
//! of them. The superuser's password is random per cluster; connections over the Unix socket
//! need none.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, PgPool};

use crate::ports;

/// A running cluster; stopped (immediately) and deleted on drop.
pub struct LocalPostgres {
    data: tempfile::TempDir,
    binaries: PathBuf,
    pub port: u16,
    run_as_postgres: bool,
    /// The superuser's password, random per cluster.
    password: String,
    /// The server's options (port, socket, settings), for starting it again.
    options: String,
}

/// How `pg_ctl` shuts a server down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Ends every session (SQLSTATE 57P01), then shuts down cleanly.
    Fast,
    /// Kills the server without a clean shutdown; it recovers from its WAL when started.
    Immediate,
}

impl Shutdown {
    fn mode(self) -> &'static str {
        match self {
            Self::Fast => "fast",
            Self::Immediate => "immediate",
        }
    }
}

impl std::fmt::Debug for LocalPostgres {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("LocalPostgres")
            .field("data", &self.data.path())
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// A server's TLS files (PEM) and who may connect: every TCP connection must use TLS and
/// present a client certificate signed by `client_ca` whose CN names the database user
/// (`hostssl … cert`); the Unix socket keeps trust authentication.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub certificate: String,
    pub private_key: String,
    pub client_ca: String,
}

impl LocalPostgres {
    /// initdb + start on a free loopback port.
    pub fn start() -> anyhow::Result<Self> {
        let mut cluster = Self::initialized()?;
        cluster.launch("")?;
        Ok(cluster)
    }

    /// Like [`LocalPostgres::start`], with `ssl = on` and only client certificates over TCP.
    pub fn start_with_tls(tls: &ServerTls) -> anyhow::Result<Self> {
        let mut cluster = Self::initialized()?;
        let cluster_dir = cluster.cluster_dir();
        for (name, text) in [
            ("server.crt", &tls.certificate),
            ("server.key", &tls.private_key),
            ("client-ca.crt", &tls.client_ca),
            (
                "pg_hba.conf",
                &"local all all trust\nhostssl all all 127.0.0.1/32 cert\nhostssl all all ::1/128 cert\n"
                    .to_owned(),
            ),
        ] {
            let path = cluster_dir.join(name);
            std::fs::write(&path, text)?;
            std::fs::set_permissions(
                &path,
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            )?;
            cluster.hand_to_postgres(&path)?;
        }
        cluster.launch(
            "-c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key -c ssl_ca_file=client-ca.crt",
        )?;
        Ok(cluster)
    }

    /// A cluster initialised (not started) with a random superuser password.
    fn initialized() -> anyhow::Result<Self> {
        let cluster = Self::prepare(random_password()?)?;
        let password_file = cluster.data.path().join("pwfile");
        std::fs::write(&password_file, &cluster.password)?;
        cluster.hand_to_postgres(&password_file)?;
        let cluster_dir = cluster.cluster_dir();
        cluster.run(
            "initdb",
            &[
                "-D",
                path_str(&cluster_dir)?,
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                &format!("--pwfile={}", path_str(&password_file)?),
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        )?;
        Ok(cluster)
    }

    /// A hot standby streaming from this cluster (`pg_basebackup -R`), started on its own free
    /// port. It reports its replay position every second, so its lag shows on this cluster's
    /// `pg_stat_replication` promptly.
    pub fn start_standby(&self) -> anyhow::Result<Self> {
        let mut standby = Self::prepare(self.password.clone())?;
        let cluster_dir = standby.cluster_dir();
        standby.run(
            "pg_basebackup",
            &[
                "-D",
                path_str(&cluster_dir)?,
                "--write-recovery-conf",
                "--wal-method=stream",
                "--no-sync",
                "--checkpoint=fast",
                "-h",
                path_str(self.data.path())?,
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ],
        )?;
        standby.launch("-c hot_standby=on -c wal_receiver_status_interval=1s")?;
        Ok(standby)
    }

    /// An empty, not yet started cluster home.
    fn prepare(password: String) -> anyhow::Result<Self> {
        let binaries = find_binaries()?;
        let run_as_postgres = std::fs::metadata("/proc/self")?.uid() == 0;
        let data = tempfile::Builder::new()
            .prefix("fleetshift-pg-")
            .tempdir()?;
        let cluster = Self {
            data,
            binaries,
            port: 0,
            run_as_postgres,
            password,
            options: String::new(),
        };
        cluster.hand_to_postgres(cluster.data.path())?;
        Ok(cluster)
    }

    /// Makes `path` the `postgres` OS user's when the server runs as that user.
    fn hand_to_postgres(&self, path: &Path) -> anyhow::Result<()> {
        if self.run_as_postgres {
            let (uid, gid) = postgres_ids()?;
            std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
        }
        Ok(())
    }

    fn cluster_dir(&self) -> PathBuf {
        self.data.path().join("cluster")
    }

    /// Starts the server on a free loopback port (retrying when another process takes it
    /// first), with durability off and `extra_options` for `postgres`.
    fn launch(&mut self, extra_options: &str) -> anyhow::Result<()> {
        let log = self.data.path().join("server.log");
        let socket = path_str(self.data.path())?.to_owned();
        let (port, options) = ports::with_free_port(|port| {
            let options = format!(
                "-p {port} -k {socket} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c synchronous_commit=off -c max_connections=50 {extra_options}"
            );
            self.start_with(&options)?;
            Ok((port, options))
        })
        .with_context(|| format!("PostgreSQL did not start; see {}", log.display()))?;
        self.port = port;
        self.options = options;
        Ok(())
    }

    fn start_with(&self, options: &str) -> anyhow::Result<()> {
        let log = self.data.path().join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                path_str(&self.cluster_dir())?,
                "-w",
                "-l",
                path_str(&log)?,
                "-o",
                options,
                "start",
            ],
        )
    }

    /// Restarts the server on the same port, shutting it down as `how` says: every session
    /// ends, as in a real restart.
    pub fn restart(&self, how: Shutdown) -> anyhow::Result<()> {
        self.stop(how)?;
        self.start_again()
    }

    /// Stops the server (see [`LocalPostgres::start_again`]).
    pub fn stop(&self, how: Shutdown) -> anyhow::Result<()> {
        let cluster_dir = self.cluster_dir();
        self.run(
            "pg_ctl",
            &[
                "-D",
                path_str(&cluster_dir)?,
                "-w",
                "-m",
                how.mode(),
                "stop",
            ],
        )
    }

    /// Starts a stopped server again, on the same port with the same settings.
    pub fn start_again(&self) -> anyhow::Result<()> {
        self.start_with(&self.options)
    }

    fn run(&self, program: &str, arguments: &[&str]) -> anyhow::Result<()> {
        let binary = self.binaries.join(program);
        let mut command = if self.run_as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&binary);
            command
        } else {
            Command::new(&binary)
        };
        let output = command
            .args(arguments)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", binary.display()))?;
        if !output.status.success() {
            bail!(
                "{program} failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// URL of `database` as the superuser, over TCP with a password.
    pub fn admin_url(&self, database: &str) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        )
    }

    /// URL of `database` over the Unix socket (trust authentication, the cheapest connect).
    pub fn socket_url(&self, database: &str) -> String {
        format!(
            "postgresql:///{database}?host={}&port={}&user=postgres",
            self.data.path().display(),
            self.port
        )
    }

    pub async fn admin_pool(&self, database: &str) -> anyhow::Result<PgPool> {
        Ok(PgPoolOptions::new()
            .max_connections(4)
            .connect(&self.admin_url(database))
            .await?)
    }

    /// Creates a database and returns its admin URL.
    pub async fn create_database(&self, name: &str) -> anyhow::Result<String> {
        let pool = self.admin_pool("postgres").await?;
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&pool)
            .await?;
        pool.close().await;
        Ok(self.admin_url(name))
    }

    /// The directory holding the server's binaries (pg_dump, psql, …).
    pub fn binaries(&self) -> &Path {
        &self.binaries
    }

    /// The server's log, for diagnosing a failed test.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        let cluster_dir = self.cluster_dir();
        if let Some(dir) = cluster_dir.to_str()
            && let Err(error) = self.run("pg_ctl", &["-D", dir, "-m", "immediate", "stop"])
        {
            tracing::warn!(%error, "stopping a local PostgreSQL cluster failed");
        }
    }
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str().context("non-UTF-8 temporary path")
}

fn postgres_ids() -> anyhow::Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    let line = passwd
        .lines()
        .find(|line| line.starts_with("postgres:"))
        .context("running as root needs a `postgres` OS user (install postgresql)")?;
    let fields: Vec<&str> = line.split(':').collect();
    Ok((fields[2].parse()?, fields[3].parse()?))
}

/// `FLEETSHIFT_PG_BINDIR`, else the newest `/usr/lib/postgresql/<major>/bin`.
fn find_binaries() -> anyhow::Result<PathBuf> {
    if let Ok(directory) = std::env::var("FLEETSHIFT_PG_BINDIR") {
        return Ok(PathBuf::from(directory));
    }
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL server binaries not found under /usr/lib/postgresql; install postgresql or set FLEETSHIFT_PG_BINDIR")?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .collect();
    candidates.sort();
    candidates
        .pop()
        .map(|(_, bin)| bin)
        .context("no PostgreSQL with initdb under /usr/lib/postgresql")
}

/// 24 hex characters from the system's random source.
fn random_password() -> anyhow::Result<String> {
    let mut bytes = [0_u8; 12];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut source| source.read_exact(&mut bytes))
        .context("reading /dev/urandom for a cluster password")?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}
