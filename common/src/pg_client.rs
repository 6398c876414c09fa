//! Running PostgreSQL's client programs (`pg_dump`, `pg_restore`, `psql`) against a shard.
//!
//! The shard's credentials never go into a program's arguments or environment: the connection
//! goes as a libpq keyword/value string without the password, and the password goes into a
//! passfile readable by this process's user only (mode 0600, in a private directory) that is
//! removed when the [`ClientCredentials`] is dropped. The URL's TLS settings (`sslmode` and its
//! files, see [`crate::database_tls`]) go as libpq's `PGSSL…` variables, so the programs
//! connect as the agent does and no key path shows in their arguments.

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use tokio::process::Command;

use crate::secrets::DatabaseUrl;

/// How a client program connects to one shard.
#[derive(Debug)]
pub struct ClientCredentials {
    /// `host=… port=… user=… dbname=…` and the URL's other parameters; never the password
    /// or the TLS settings.
    conninfo: String,
    passfile: Option<Passfile>,
    /// The URL's TLS settings as libpq's environment variables.
    tls: Vec<(&'static str, String)>,
}

/// A passfile in a private temporary directory; dropping the directory removes both.
#[derive(Debug)]
struct Passfile {
    _directory: tempfile::TempDir,
    path: PathBuf,
}

impl ClientCredentials {
    /// Splits `url` into a password-free connection string and a passfile.
    pub fn from_url(url: &DatabaseUrl) -> Result<Self, String> {
        let parsed = url::Url::parse(url.expose())
            .map_err(|error| format!("the database URL {url} cannot be parsed: {error}"))?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(format!(
                "{url} is not a PostgreSQL URL; pg_dump backs up PostgreSQL shards only"
            ));
        }
        let decode = |text: &str| {
            percent_encoding::percent_decode_str(text)
                .decode_utf8()
                .map(std::borrow::Cow::into_owned)
                .map_err(|_| format!("{url} has a percent-escape that is not UTF-8"))
        };
        let mut conninfo = String::new();
        let mut add = |key: &str, value: &str| {
            let _ = write!(conninfo, "{}{key}={}", separator(&conninfo), quoted(value));
        };
        if let Some(host) = parsed.host_str().filter(|host| !host.is_empty()) {
            add("host", host.trim_start_matches('[').trim_end_matches(']'));
        }
        if let Some(port) = parsed.port() {
            add("port", &port.to_string());
        }
        if !parsed.username().is_empty() {
            add("user", &decode(parsed.username())?);
        }
        let database = parsed.path().trim_start_matches('/');
        if !database.is_empty() {
            add("dbname", &decode(database)?);
        }
        let mut password = parsed.password().map(decode).transpose()?;
        let mut tls = Vec::new();
        for (key, value) in parsed.query_pairs() {
            if key == "password" {
                password = Some(value.into_owned());
            } else if let Some(variable) = tls_variable(&key) {
                tls.push((variable, value.into_owned()));
            } else {
                add(&key, &value);
            }
        }
        let passfile = password
            .filter(|password| !password.is_empty())
            .map(|password| Passfile::write(&password))
            .transpose()
            .map_err(|error| format!("cannot write a passfile for {url}: {error}"))?;
        Ok(Self {
            conninfo,
            passfile,
            tls,
        })
    }

    /// The connection string for `--dbname`.
    pub fn conninfo(&self) -> &str {
        &self.conninfo
    }

    /// The connection string for `--dbname`, to database `name` on the same server.
    pub fn conninfo_for(&self, name: &str) -> String {
        // libpq takes the last value of a repeated keyword.
        format!(
            "{}{}dbname={}",
            self.conninfo,
            separator(&self.conninfo),
            quoted(name)
        )
    }

    /// The passfile for `PGPASSFILE`, when the URL carries a password.
    pub fn passfile(&self) -> Option<&Path> {
        self.passfile
            .as_ref()
            .map(|passfile| passfile.path.as_path())
    }
}

impl Passfile {
    fn write(password: &str) -> std::io::Result<Self> {
        let directory = tempfile::Builder::new()
            .prefix("fleetshift-passfile-")
            .tempdir()?;
        let path = directory.path().join("pgpass");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        // Only this program reads it, so every host, port, database and user matches.
        writeln!(file, "*:*:*:*:{}", escaped(password))?;
        file.sync_all()?;
        Ok(Self {
            _directory: directory,
            path,
        })
    }
}

/// A client program with nothing of this process's environment but `PATH`, and the passfile
/// when it connects with a password; killed if its handle is dropped.
pub fn client_command(program: &Path, credentials: Option<&ClientCredentials>) -> Command {
    let mut command = Command::new(program);
    command.env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    if let Some(credentials) = credentials {
        if let Some(passfile) = credentials.passfile() {
            command.env("PGPASSFILE", passfile);
        }
        command.envs(credentials.tls.iter().map(|(name, value)| (*name, value)));
    }
    command
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Runs `command` (of `program`, described as `what`) to its end; its standard output, or
/// what went wrong. `setting` names where the program's path is configured.
pub async fn run_to_end(
    mut command: Command,
    program: &Path,
    what: &str,
    setting: &str,
) -> Result<Vec<u8>, String> {
    let output = command
        .output()
        .await
        .map_err(|error| cannot_run(program, &error, setting))?;
    if output.status.success() {
        Ok(output.stdout)
    } else {
        Err(failure_text(
            what,
            output.status,
            String::from_utf8_lossy(&output.stderr).trim(),
        ))
    }
}

/// Why `program` could not start, and what to do about it.
pub fn cannot_run(program: &Path, error: &std::io::Error, setting: &str) -> String {
    format!(
        "cannot run {}: {error}; install the PostgreSQL client programs or set {setting}",
        program.display()
    )
}

/// How a client program ended, with the end of what it wrote to stderr.
pub fn failure_text(program: &str, status: ExitStatus, stderr: &str) -> String {
    let how = match (status.code(), status.signal()) {
        (_, Some(signal)) => format!("{program} was killed by signal {signal}"),
        (Some(code), None) => format!("{program} exited with status {code}"),
        (None, None) => format!("{program} ended abnormally"),
    };
    if stderr.is_empty() {
        how
    } else {
        format!("{how}: {stderr}")
    }
}

/// libpq's environment variable for a TLS parameter of [`crate::database_tls`].
fn tls_variable(parameter: &str) -> Option<&'static str> {
    match parameter {
        "sslmode" => Some("PGSSLMODE"),
        "sslrootcert" => Some("PGSSLROOTCERT"),
        "sslcert" => Some("PGSSLCERT"),
        "sslkey" => Some("PGSSLKEY"),
        _ => None,
    }
}

fn separator(conninfo: &str) -> &'static str {
    if conninfo.is_empty() { "" } else { " " }
}

/// A libpq keyword value: single-quoted, with `\` and `'` escaped.
fn quoted(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A passfile field: `\` and `:` escaped.
fn escaped(value: &str) -> String {
    value.replace('\\', "\\\\").replace(':', "\\:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_goes_to_a_private_passfile_and_nowhere_else() {
        let url = DatabaseUrl::new(
            "postgres://app%40eu:s3cr%3At'@db.example:6432/orders?sslmode=require",
        );
        let credentials = ClientCredentials::from_url(&url).expect("valid");
        assert_eq!(
            credentials.conninfo(),
            "host='db.example' port='6432' user='app@eu' dbname='orders'"
        );
        let command = client_command(Path::new("pg_dump"), Some(&credentials));
        let environment: Vec<_> = command
            .as_std()
            .get_envs()
            .filter(|(name, _)| name.to_string_lossy().starts_with("PGSSL"))
            .map(|(name, value)| (name.to_owned(), value.map(ToOwned::to_owned)))
            .collect();
        assert_eq!(
            environment,
            [("PGSSLMODE".into(), Some("require".into()))],
            "TLS settings go to libpq's variables"
        );
        assert!(!credentials.conninfo().contains("s3cr"));
        let passfile = credentials.passfile().expect("a passfile").to_path_buf();
        assert_eq!(
            std::fs::read_to_string(&passfile).expect("read"),
            "*:*:*:*:s3cr\\:t'\n"
        );
        let mode = std::fs::metadata(&passfile)
            .expect("metadata")
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        drop(credentials);
        assert!(!passfile.exists(), "the passfile is removed");
    }

    #[test]
    fn a_url_without_a_password_needs_no_passfile_and_others_are_refused() {
        let credentials =
            ClientCredentials::from_url(&DatabaseUrl::new("postgresql://app@localhost/db"))
                .expect("valid");
        assert!(credentials.passfile().is_none());
        let error = ClientCredentials::from_url(&DatabaseUrl::new("sqlite:/tmp/x.db"))
            .expect_err("not PostgreSQL");
        assert!(error.contains("PostgreSQL"), "{error}");
    }
}
