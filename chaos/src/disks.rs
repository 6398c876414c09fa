//! Each agent's backup directory on a small disk of its own (a tmpfs), which a fault fills to
//! the last byte and frees when it heals: the agent's backups before the first DDL then fail
//! for want of space, as they do on a host whose backup volume filled up.
//!
//! Mounting needs `CAP_SYS_ADMIN` (root). A disk is unmounted when dropped.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// How big each backup disk is: room for a few backups of the campaign's shards.
const SIZE: &str = "256m";

/// What a fault writes to fill a disk, and removes to free it.
const FILLER: &str = "chaos-filler";

#[derive(Debug)]
pub struct BackupDisk {
    /// Where it is mounted: the agent's `[backups] directory`.
    pub directory: PathBuf,
}

impl BackupDisk {
    /// A fresh disk mounted at `directory` (created).
    pub fn mount(directory: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(directory)
            .with_context(|| format!("creating {}", directory.display()))?;
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={SIZE},mode=0700")])
            .arg("fleetshift-chaos-backups")
            .arg(directory))?;
        Ok(Self {
            directory: directory.to_owned(),
        })
    }

    /// Writes until the disk has no byte left.
    pub fn fill(&self) -> anyhow::Result<()> {
        let path = self.directory.join(FILLER);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let block = vec![0_u8; 1 << 20];
        loop {
            match file.write(&block) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(error)
                    if error.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()) =>
                {
                    return Ok(());
                }
                Err(error) => {
                    return Err(error).with_context(|| format!("filling {}", path.display()));
                }
            }
        }
    }

    /// Removes what [`BackupDisk::fill`] wrote.
    pub fn free(&self) -> anyhow::Result<()> {
        let path = self.directory.join(FILLER);
        match std::fs::remove_file(&path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                Err(error).with_context(|| format!("removing {}", path.display()))
            }
            _ => Ok(()),
        }
    }

    /// Files a backup left half-written, which a failed backup must remove.
    pub fn leftovers(&self) -> anyhow::Result<Vec<PathBuf>> {
        partial_files(&self.directory)
    }
}

/// The `*.partial` files in each shard's directory under `directory`.
fn partial_files(directory: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for shard in read_dir(directory)? {
        if shard.is_dir() {
            found.extend(
                read_dir(&shard)?
                    .into_iter()
                    .filter(|path| path.extension().is_some_and(|ext| ext == "partial")),
            );
        }
    }
    Ok(found)
}

impl Drop for BackupDisk {
    fn drop(&mut self) {
        // Lazily: an agent still stopping may hold a file open.
        let _ = run(Command::new("umount").arg("-l").arg(&self.directory));
    }
}

fn read_dir(directory: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::read_dir(directory)
        .with_context(|| format!("listing {}", directory.display()))?
        .map(|entry| Ok(entry?.path()))
        .collect()
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_half_written_files_in_shard_directories_are_leftovers() {
        let directory = tempfile::tempdir().expect("directory");
        let shard = directory.path().join("host-0-db0");
        std::fs::create_dir(&shard).expect("shard directory");
        for name in ["b1.dump", "b1.json", "b2.dump.partial"] {
            std::fs::write(shard.join(name), b"x").expect("file");
        }
        std::fs::write(directory.path().join(FILLER), b"x").expect("filler");
        let found = partial_files(directory.path()).expect("listed");
        assert_eq!(found, vec![shard.join("b2.dump.partial")]);
    }
}
