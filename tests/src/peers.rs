//! The tools fleet operators run today, one database at a time, for the benchmarks to measure
//! fleetshift against on the same history and server: `sqlx migrate run` (sqlx-cli from
//! crates.io) and `dbmate up` (the `dbmate` npm package ships its binary). Both apply each
//! migration in its own transaction and record it in their own table. `scripts/bench-peers`
//! installs them into `.tools/peers/`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fleetshift_common::source::Revision;

/// A peer migration tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Sqlx,
    Dbmate,
}

impl Peer {
    pub const ALL: [Peer; 2] = [Peer::Sqlx, Peer::Dbmate];

    pub fn name(self) -> &'static str {
        match self {
            Peer::Sqlx => "sqlx migrate run",
            Peer::Dbmate => "dbmate up",
        }
    }

    /// The installed binary, or how to install it.
    pub fn binary(self) -> anyhow::Result<PathBuf> {
        let peers = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/peers");
        let path = match self {
            Peer::Sqlx => peers.join("bin/sqlx"),
            Peer::Dbmate => peers.join("node_modules/.bin/dbmate"),
        };
        if !path.exists() {
            bail!(
                "{} is not installed at {}: run scripts/bench-peers",
                self.name(),
                path.display()
            );
        }
        Ok(path)
    }

    /// Writes `revisions` (their up scripts, unchanged) into `directory` in this tool's
    /// layout, numbered in order; a revision run outside a transaction is marked as the tool
    /// wants.
    pub fn write_layout(self, revisions: &[Revision], directory: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(directory)?;
        for (index, revision) in revisions.iter().enumerate() {
            let name = format!("{:05}_{}.sql", index + 1, slug(&revision.name));
            let mut text = String::new();
            match (self, revision.transactional) {
                (Peer::Sqlx, true) => {}
                (Peer::Sqlx, false) => text.push_str("-- no-transaction\n"),
                (Peer::Dbmate, true) => text.push_str("-- migrate:up\n"),
                (Peer::Dbmate, false) => text.push_str("-- migrate:up transaction:false\n"),
            }
            text.push_str(&revision.up.sql);
            if self == Peer::Dbmate {
                let _ = write!(text, "\n\n-- migrate:down\n");
            }
            std::fs::write(directory.join(&name), text)
                .with_context(|| format!("writing {name}"))?;
        }
        Ok(())
    }

    /// Applies every migration in `directory` to the database at `url`; the wall time.
    pub fn apply(self, binary: &Path, directory: &Path, url: &str) -> anyhow::Result<Duration> {
        let mut command = Command::new(binary);
        match self {
            Peer::Sqlx => {
                command
                    .args(["migrate", "run", "--source"])
                    .arg(directory)
                    .args(["--database-url", url]);
            }
            Peer::Dbmate => {
                command
                    .args(["--url", &with_sslmode_disabled(url), "--migrations-dir"])
                    .arg(directory)
                    // Its default table, `schema_migrations`, is one crates.io's history drops.
                    .args(["--migrations-table", "dbmate_migrations"])
                    .args(["--no-dump-schema", "up"]);
            }
        }
        let started = Instant::now();
        let output = command.output()?;
        let elapsed = started.elapsed();
        if !output.status.success() {
            bail!(
                "{} failed: {}{}",
                self.name(),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(elapsed)
    }
}

/// dbmate asks for TLS unless the URL says otherwise; the throwaway server has none.
fn with_sslmode_disabled(url: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}sslmode=disable")
}

/// A file-name part from a revision's name: letters, digits and `_`.
fn slug(name: &str) -> String {
    let slug: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if slug.is_empty() {
        "migration".to_owned()
    } else {
        slug
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_file_names() {
        assert_eq!(slug("add users.email (v2)"), "add_users_email__v2_");
        assert_eq!(slug(""), "migration");
        assert_eq!(
            with_sslmode_disabled("postgres://a@h/db"),
            "postgres://a@h/db?sslmode=disable"
        );
        assert_eq!(
            with_sslmode_disabled("postgres://a@h/db?x=1"),
            "postgres://a@h/db?x=1&sslmode=disable"
        );
    }
}
