//! Jumps of a coordinator replica's wall clock, as an NTP step makes them, without touching
//! the host's: with clock jumps in the campaign each replica runs under libfaketime
//! (`LD_PRELOAD`), which reads the replica's offset from a file of its own on every read of
//! the wall clock. Monotonic time is left alone, as a step leaves it, so timers, leases and
//! timeouts keep real time while every timestamp the replica writes jumps.
//!
//! libfaketime is Debian's `libfaketime` (found under `/usr/lib/*/faketime/`, or named by
//! `FLEETSHIFT_LIBFAKETIME`).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The variable naming libfaketime's library when it is not where Debian puts it.
const LIBRARY_VARIABLE: &str = "FLEETSHIFT_LIBFAKETIME";

/// One replica's wall clock.
#[derive(Debug)]
pub struct ReplicaClock {
    /// libfaketime's multi-threaded library.
    library: PathBuf,
    /// Where the replica's offset is written.
    offset_file: PathBuf,
}

impl ReplicaClock {
    /// A clock at real time whose offset lives in `offset_file`.
    pub fn new(offset_file: &Path) -> anyhow::Result<Self> {
        let clock = Self {
            library: library()?,
            offset_file: offset_file.to_owned(),
        };
        clock.set(0)?;
        Ok(clock)
    }

    /// `program` with `arguments` run on this clock.
    pub fn wrap(&self, program: &str, arguments: &[String]) -> (String, Vec<String>) {
        let mut wrapped = vec![
            format!("LD_PRELOAD={}", self.library.display()),
            format!("FAKETIME_TIMESTAMP_FILE={}", self.offset_file.display()),
            // Read the file at every call, so a jump takes effect at once.
            "FAKETIME_NO_CACHE=1".to_owned(),
            "FAKETIME_DONT_FAKE_MONOTONIC=1".to_owned(),
            program.to_owned(),
        ];
        wrapped.extend_from_slice(arguments);
        ("env".to_owned(), wrapped)
    }

    /// Steps the wall clock `seconds` from real time (back when negative).
    pub fn jump(&self, seconds: i64) -> anyhow::Result<()> {
        self.set(seconds)
    }

    /// Back to real time.
    pub fn reset(&self) -> anyhow::Result<()> {
        self.set(0)
    }

    fn set(&self, seconds: i64) -> anyhow::Result<()> {
        // Written whole then renamed: a read mid-write would see no offset.
        let partial = self.offset_file.with_extension("partial");
        std::fs::write(&partial, format!("{seconds:+}\n"))
            .with_context(|| format!("writing {}", partial.display()))?;
        std::fs::rename(&partial, &self.offset_file)
            .with_context(|| format!("writing {}", self.offset_file.display()))
    }
}

/// libfaketime's multi-threaded library.
fn library() -> anyhow::Result<PathBuf> {
    if let Some(named) = std::env::var_os(LIBRARY_VARIABLE) {
        return Ok(PathBuf::from(named));
    }
    let found = std::fs::read_dir("/usr/lib")
        .context("searching /usr/lib for libfaketime")?
        .flatten()
        .map(|entry| entry.path().join("faketime/libfaketimeMT.so.1"))
        .find(|library| library.exists());
    match found {
        Some(library) => Ok(library),
        None => bail!(
            "clock jumps need libfaketime (apt-get install libfaketime), or {LIBRARY_VARIABLE} naming its libfaketimeMT.so.1"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_is_written_signed_and_a_reset_returns_to_real_time() {
        let directory = tempfile::tempdir().expect("directory");
        let file = directory.path().join("clock-c1");
        let clock = ReplicaClock {
            library: PathBuf::from("/lib/libfaketimeMT.so.1"),
            offset_file: file.clone(),
        };
        clock.jump(-90).expect("jump");
        assert_eq!(std::fs::read_to_string(&file).expect("read"), "-90\n");
        clock.jump(300).expect("jump");
        assert_eq!(std::fs::read_to_string(&file).expect("read"), "+300\n");
        clock.reset().expect("reset");
        assert_eq!(std::fs::read_to_string(&file).expect("read"), "+0\n");
        let (program, arguments) = clock.wrap("/bin/fleetshift", &["serve".to_owned()]);
        assert_eq!(program, "env");
        assert_eq!(
            arguments.last().map(String::as_str),
            Some("serve"),
            "{arguments:?}"
        );
        assert!(arguments.contains(&"FAKETIME_DONT_FAKE_MONOTONIC=1".to_owned()));
    }
}
