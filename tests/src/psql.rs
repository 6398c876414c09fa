//! The baseline the benchmarks measure fleetshift against: `psql` running migration scripts.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::bail;
use fleetshift_common::source::Revision;

/// One `psql` process per revision (`--single-transaction` for the transactional ones), as a
/// shell loop over the files would run them; returns the wall time.
pub fn apply_per_file(
    binaries: &Path,
    url: &str,
    revisions: &[Revision],
) -> anyhow::Result<Duration> {
    let psql = binaries.join("psql");
    let started = Instant::now();
    for revision in revisions {
        let mut command = Command::new(&psql);
        command
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f"])
            .arg(&revision.up.path);
        if revision.transactional {
            command.arg("--single-transaction");
        }
        let output = command.output()?;
        if !output.status.success() {
            bail!(
                "psql failed on {}: {}",
                revision.label(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
    Ok(started.elapsed())
}

/// Every file through one `psql` process, statements in autocommit: no per-revision
/// atomicity at all, the floor of sending the SQL; returns the wall time.
pub fn apply_in_one_session(
    binaries: &Path,
    url: &str,
    revisions: &[Revision],
) -> anyhow::Result<Duration> {
    let mut command = Command::new(binaries.join("psql"));
    command.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url]);
    for revision in revisions {
        command.arg("-f").arg(&revision.up.path);
    }
    timed(&mut command)
}

/// Every file through one `psql` process, each transactional revision in its own transaction
/// (`BEGIN`, the file, `COMMIT`): the same atomicity per revision as fleetshift, with nothing
/// recorded; returns the wall time.
pub fn apply_in_one_session_with_transactions(
    binaries: &Path,
    url: &str,
    revisions: &[Revision],
) -> anyhow::Result<Duration> {
    let mut script = String::new();
    for revision in revisions {
        let include = format!("\\i '{}'\n", revision.up.path.display());
        if revision.transactional {
            script.push_str("BEGIN;\n");
            script.push_str(&include);
            script.push_str("COMMIT;\n");
        } else {
            script.push_str(&include);
        }
    }
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), script)?;
    let mut command = Command::new(binaries.join("psql"));
    command
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f"])
        .arg(file.path());
    timed(&mut command)
}

/// Runs `psql` as `command` says; the wall time, or its error output.
fn timed(command: &mut Command) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let output = command.output()?;
    let elapsed = started.elapsed();
    if !output.status.success() {
        bail!("psql failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(elapsed)
}
