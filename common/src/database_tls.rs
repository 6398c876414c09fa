//! TLS to a PostgreSQL shard, as libpq takes it: `sslmode` (`disable` … `verify-full`),
//! `sslrootcert`, `sslcert` and `sslkey`, given as configuration keys or as the database URL's
//! own parameters. Both end up in the URL, so the agent's connections (sqlx) and the client
//! programs it runs (`pg_dump`, `pg_restore`, `psql`) use the same settings. The files are
//! checked before anything connects: they must exist, a certificate goes with its key, and the
//! key must not be readable by others (libpq's rule). No message names the key's path.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The modes libpq knows.
const MODES: [&str; 6] = [
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

/// TLS settings given beside a URL (a shard's configuration keys); relative paths are taken
/// from the configuration file's directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    pub sslmode: Option<String>,
    pub sslrootcert: Option<PathBuf>,
    pub sslcert: Option<PathBuf>,
    pub sslkey: Option<PathBuf>,
}

impl TlsSettings {
    fn pairs(&self, base: &Path) -> Vec<(&'static str, String)> {
        let path = |path: &Option<PathBuf>| {
            path.as_ref()
                .map(|path| base.join(path).to_string_lossy().into_owned())
        };
        [
            ("sslmode", self.sslmode.clone()),
            ("sslrootcert", path(&self.sslrootcert)),
            ("sslcert", path(&self.sslcert)),
            ("sslkey", path(&self.sslkey)),
        ]
        .into_iter()
        .filter_map(|(key, value)| value.map(|value| (key, value)))
        .collect()
    }
}

/// `url` with `settings` added as parameters, then checked (see [`check`]). A setting the URL
/// already carries with another value is refused: which one wins would be a guess.
pub fn apply(url: &str, settings: &TlsSettings, base: &Path) -> Result<String, String> {
    let pairs = settings.pairs(base);
    if pairs.is_empty() {
        check(url)?;
        return Ok(url.to_owned());
    }
    let mut parsed = url::Url::parse(url)
        .map_err(|error| format!("the database URL cannot be parsed: {error}"))?;
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        return Err(format!(
            "{} is set, but TLS settings apply to PostgreSQL URLs only",
            pairs[0].0
        ));
    }
    let existing: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
    for (key, value) in &pairs {
        if let Some((_, theirs)) = existing.iter().find(|(name, _)| name == key)
            && theirs != value
        {
            return Err(format!(
                "{key} is set both in the database URL and in the configuration, differently; set it in one place"
            ));
        }
    }
    {
        let mut query = parsed.query_pairs_mut();
        query.clear();
        for (key, value) in existing
            .iter()
            .filter(|(key, _)| !pairs.iter().any(|(ours, _)| ours == key))
        {
            query.append_pair(key, value);
        }
        for (key, value) in &pairs {
            query.append_pair(key, value);
        }
    }
    let merged = parsed.to_string();
    check(&merged)?;
    Ok(merged)
}

/// Checks the TLS parameters `url` carries: a known `sslmode`; `sslrootcert`, `sslcert` and
/// `sslkey` files that exist; a certificate and a key together; a key no other user can read
/// (0600 or less when it is ours, 0640 or less when root owns it, as libpq requires).
pub fn check(url: &str) -> Result<(), String> {
    let Ok(parsed) = url::Url::parse(url) else {
        // Not a URL this module reads (a libpq keyword string, a SQLite path): the driver says.
        return Ok(());
    };
    let value = |key: &str| {
        parsed
            .query_pairs()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.into_owned())
    };
    if let Some(mode) = value("sslmode")
        && !MODES.contains(&mode.as_str())
    {
        return Err(format!(
            "sslmode {mode:?} is not one of {}",
            MODES.join(", ")
        ));
    }
    if let Some(root) = value("sslrootcert") {
        readable(Path::new(&root), "sslrootcert")?;
    }
    match (value("sslcert"), value("sslkey")) {
        (Some(certificate), Some(key)) => {
            readable(Path::new(&certificate), "sslcert")?;
            private(Path::new(&key))?;
        }
        (Some(_), None) => {
            return Err(
                "sslcert is set without sslkey: a client certificate needs its key".to_owned(),
            );
        }
        (None, Some(_)) => {
            return Err(
                "sslkey is set without sslcert: a key needs its client certificate".to_owned(),
            );
        }
        (None, None) => {}
    }
    Ok(())
}

/// What a failed connection says about TLS, when it is about TLS: what went wrong, in the
/// settings' words, and which one to check. A certificate problem is no lost connection:
/// waiting for the server would not mend it.
pub fn refusal(error: &sqlx::Error) -> Option<String> {
    let text = error.to_string();
    let reason = if let Some(at) = text.find("invalid peer certificate") {
        let detail = &text[at..];
        if detail.contains("UnknownIssuer") {
            "the server's certificate is not signed by a CA in sslrootcert (unknown issuer); check sslrootcert".to_owned()
        } else if let Some(name) = detail.find("certificate not valid for name") {
            format!(
                "the server's certificate does not name the host connected to ({}); connect by a name it carries, or use sslmode=verify-ca, which does not check the name",
                &detail[name + "certificate ".len()..]
            )
        } else if detail.contains("Expired") || detail.contains("NotValidYet") {
            format!("the server's certificate is outside its validity ({detail}); renew it")
        } else {
            format!("the server's certificate was refused ({detail}); check sslrootcert")
        }
    } else if let sqlx::Error::Database(refused) = error {
        let message = refused.message();
        if message.contains("requires a valid client certificate") {
            "the server takes only client certificates: set sslcert and sslkey (a certificate whose common name is the database user, from a CA the server trusts)".to_owned()
        } else if message.contains("certificate authentication failed") {
            format!(
                "the server refused the client certificate ({message}); its common name must be the database user: check sslcert"
            )
        } else if message.contains("no encryption") {
            format!(
                "the server takes only TLS connections ({message}); set sslmode to require, verify-ca or verify-full"
            )
        } else {
            return None;
        }
    } else if matches!(error, sqlx::Error::Tls(_)) {
        format!("the handshake failed ({text}); check sslmode, sslrootcert, sslcert and sslkey")
    } else {
        return None;
    };
    Some(format!("TLS: {reason}"))
}

fn readable(path: &Path, key: &str) -> Result<(), String> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|error| format!("{key} {} cannot be read: {error}", path.display()))
}

/// The key file must be readable, and by nobody else (never naming it).
fn private(key: &Path) -> Result<(), String> {
    let metadata = std::fs::metadata(key)
        .map_err(|error| format!("the sslkey file cannot be read: {error}"))?;
    std::fs::File::open(key).map_err(|error| format!("the sslkey file cannot be read: {error}"))?;
    let mode = metadata.mode() & 0o777;
    let ours = metadata.uid() == rustix::process::geteuid().as_raw();
    let too_open = if ours {
        mode & 0o077 != 0
    } else {
        metadata.uid() == 0 && mode & 0o037 != 0
    };
    if too_open {
        return Err(format!(
            "the sslkey file has group or world access (mode {mode:04o}); it must be u=rw (0600) or less when owned by the agent's user, u=rw,g=r (0640) or less when owned by root: chmod it"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn file(directory: &Path, name: &str, mode: u32) -> PathBuf {
        let path = directory.join(name);
        std::fs::write(&path, "pem").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    #[test]
    fn settings_become_the_urls_parameters_and_files_are_checked() {
        let directory = tempfile::tempdir().expect("dir");
        let base = directory.path();
        file(base, "ca.pem", 0o644);
        file(base, "client.pem", 0o644);
        let key = file(base, "client.key", 0o600);
        let settings = TlsSettings {
            sslmode: Some("verify-full".to_owned()),
            sslrootcert: Some(PathBuf::from("ca.pem")),
            sslcert: Some(PathBuf::from("client.pem")),
            sslkey: Some(PathBuf::from("client.key")),
        };
        let merged = apply(
            "postgres://app@db.internal:5432/orders?application_name=x&sslmode=verify-full",
            &settings,
            base,
        )
        .expect("valid");
        let parsed = url::Url::parse(&merged).expect("url");
        let pairs: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
        let at = |name: &str| base.join(name).to_string_lossy().into_owned();
        assert_eq!(
            pairs,
            [
                ("application_name".to_owned(), "x".to_owned()),
                ("sslmode".to_owned(), "verify-full".to_owned()),
                ("sslrootcert".to_owned(), at("ca.pem")),
                ("sslcert".to_owned(), at("client.pem")),
                ("sslkey".to_owned(), at("client.key")),
            ]
        );

        let conflicting =
            apply("postgres://h/d?sslmode=require", &settings, base).expect_err("two modes");
        assert!(conflicting.contains("sslmode is set both"), "{conflicting}");

        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let open = apply("postgres://h/d", &settings, base).expect_err("world-readable key");
        assert!(open.contains("group or world access (mode 0644)"), "{open}");
        assert!(
            !open.contains("client.key"),
            "the key's path is never shown: {open}"
        );
    }

    #[test]
    fn a_bad_mode_a_lone_certificate_and_a_missing_file_are_refused() {
        let directory = tempfile::tempdir().expect("dir");
        let base = directory.path();
        file(base, "client.pem", 0o644);
        let refused = |url: &str| check(url).expect_err(url);
        assert!(refused("postgres://h/d?sslmode=verify_full").contains("not one of disable"));
        let lone = format!(
            "postgres://h/d?sslcert={}",
            base.join("client.pem").display()
        );
        assert!(refused(&lone).contains("without sslkey"));
        assert!(
            refused("postgres://h/d?sslrootcert=/nonexistent/ca.pem").contains("cannot be read")
        );
        let missing_key = format!(
            "postgres://h/d?sslcert={}&sslkey={}",
            base.join("client.pem").display(),
            base.join("gone.key").display()
        );
        let error = refused(&missing_key);
        assert!(
            error.contains("the sslkey file cannot be read") && !error.contains("gone.key"),
            "{error}"
        );
        assert_eq!(check("sqlite:/tmp/x.db"), Ok(()));
        let on_sqlite = apply(
            "sqlite:/tmp/x.db",
            &TlsSettings {
                sslmode: Some("require".to_owned()),
                ..TlsSettings::default()
            },
            base,
        );
        assert!(
            on_sqlite
                .expect_err("not PostgreSQL")
                .contains("PostgreSQL URLs only")
        );
    }
}
